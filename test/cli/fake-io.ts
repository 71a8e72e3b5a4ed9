import type { Io } from '../../cli/command';
import { main } from '../../cli/main';

/** A captured terminal for the frame's tests (validate, upload, progress, main): every write kept in order. */
export interface FakeIo extends Io {
  /** Every write to stdout, in order. */
  readonly outWrites: string[];
  /** Every write to stderr, in order. */
  readonly errWrites: string[];
  readonly stdout: () => string;
  readonly stderr: () => string;
  /** The fake clock (ms); tests move it. */
  readonly clock: { now: number };
}

export function fakeIo(options: { isTty?: boolean; columns?: number; answers?: string[] } = {}): FakeIo {
  const outWrites: string[] = [];
  const errWrites: string[] = [];
  const clock = { now: Date.parse('2026-01-01T00:00:00Z') };
  const answers = [...(options.answers ?? [])];
  return {
    out: (text) => void outWrites.push(text),
    err: (text) => void errWrites.push(text),
    isTty: options.isTty ?? false,
    columns: options.columns ?? 100,
    now: () => clock.now,
    ask: async () => answers.shift() ?? '',
    outWrites,
    errWrites,
    stdout: () => outWrites.join(''),
    stderr: () => errWrites.join(''),
    clock,
  };
}

/** Runs `lora-pipeline <argv>` in process through cli/main.ts, with no AWS settings but those given. */
export async function cli(argv: string[], env: NodeJS.ProcessEnv = {}, options: { io?: FakeIo; signal?: AbortSignal; clientOverrides?: Record<string, unknown> } = {}) {
  const io = options.io ?? fakeIo();
  const code = await main(argv, { io, env, ...(options.signal ? { signal: options.signal } : {}), ...(options.clientOverrides ? { clientOverrides: options.clientOverrides } : {}) });
  return { code, io, out: io.stdout(), err: io.stderr() };
}
