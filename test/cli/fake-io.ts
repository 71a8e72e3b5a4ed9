import type { Io } from '../../cli/command';
import { main } from '../../cli/main';

/** A captured terminal for every CLI test (read-side-support.ts builds on it): every write kept in order. */
export interface FakeIo extends Io {
  /** Every write to stdout, in order. */
  readonly outWrites: string[];
  /** Every write to stderr, in order. */
  readonly errWrites: string[];
  readonly stdout: () => string;
  readonly stderr: () => string;
  /** The fake clock (ms); tests move it. */
  readonly clock: { now: number };
  /** The questions asked, in order. */
  readonly questions: string[];
}

/** `answers` are given in turn ('' once they run out); `clock` is the caller's, to move from outside. */
export function fakeIo(options: { isTty?: boolean; columns?: number; answers?: string[]; clock?: { now: number } } = {}): FakeIo {
  const outWrites: string[] = [];
  const errWrites: string[] = [];
  const questions: string[] = [];
  const clock = options.clock ?? { now: Date.parse('2026-01-01T00:00:00Z') };
  const answers = [...(options.answers ?? [])];
  return {
    out: (text) => void outWrites.push(text),
    err: (text) => void errWrites.push(text),
    isTty: options.isTty ?? false,
    columns: options.columns ?? 100,
    now: () => clock.now,
    ask: async (question) => {
      questions.push(question);
      return answers.shift() ?? '';
    },
    outWrites,
    errWrites,
    stdout: () => outWrites.join(''),
    stderr: () => errWrites.join(''),
    clock,
    questions,
  };
}

/** Runs `lora-pipeline <argv>` in process through cli/main.ts, with no AWS settings but those given. */
export async function cli(argv: string[], env: NodeJS.ProcessEnv = {}, options: { io?: FakeIo; signal?: AbortSignal; clientOverrides?: Record<string, unknown> } = {}) {
  const io = options.io ?? fakeIo();
  const code = await main(argv, { io, env, ...(options.signal ? { signal: options.signal } : {}), ...(options.clientOverrides ? { clientOverrides: options.clientOverrides } : {}) });
  return { code, io, out: io.stdout(), err: io.stderr() };
}
