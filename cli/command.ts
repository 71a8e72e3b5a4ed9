import type { ParsedArgs, FlagSpecs } from './args';
import type { Clients } from './clients';
import type { StackOutputs, OutputKey } from './stack-outputs';

export type { Clients } from './clients';
export type { ParsedArgs, FlagSpecs } from './args';
export type { StackOutputs, OutputKey } from './stack-outputs';

/**
 * The frame every `lora-pipeline` command runs in. Commands talk to the terminal only through `Io`
 * and to AWS only through `Clients`, so tests run them with a captured terminal and fake or moto clients.
 */

/** Exit codes, the same for every command. */
export const EXIT = {
  ok: 0,
  /** The thing failed: a run failed, validation refused the folder, the smoke test failed. */
  failed: 1,
  /** The command line is wrong (unknown flag, missing argument). */
  usage: 2,
  /** AWS or configuration: stack not found, output missing, no credentials, access denied. */
  aws: 3,
} as const;

/** A terminal. `out` and `err` write the text exactly as given: add '\n' yourself. */
export interface Io {
  /** Results (stdout): what a script pipes on. */
  readonly out: (text: string) => void;
  /** Progress, prompts and errors (stderr). */
  readonly err: (text: string) => void;
  /** Whether `err` is a terminal: redraw one progress line there; elsewhere print whole lines. */
  readonly isTty: boolean;
  /** Width of the terminal `err` writes to (80 when unknown); no progress line is longer. */
  readonly columns: number;
  /** Milliseconds since the epoch (Date.now in the CLI, a fake clock in tests). */
  readonly now: () => number;
  /** Asks a question and returns the answer line ('' at end of input). */
  readonly ask: (question: string) => Promise<string>;
}

export interface CliContext {
  readonly io: Io;
  readonly env: NodeJS.ProcessEnv;
  readonly clients: Clients;
  /**
   * The stack's outputs, each from its flag or env var, else from CloudFormation. Name the outputs the
   * command needs: when flags or env give all of them, no CloudFormation call is made.
   */
  readonly outputs: (...needed: OutputKey[]) => Promise<StackOutputs>;
  /** Aborted on Ctrl-C: long operations stop early and leave nothing half-done behind. */
  readonly signal: AbortSignal;
}

export interface Command {
  readonly name: string;
  /** One line, for the command list of `lora-pipeline --help`. */
  readonly summary: string;
  /** The synopsis and a few sentences, e.g. "lora-pipeline upload <folder> [--name <name>]\n\nUploads …". */
  readonly usage: string;
  /** The command's own flags; the global ones (--region, --stack, outputs, --debug, --help) are added by main. */
  readonly flags: FlagSpecs;
  /** Returns the exit code (EXIT); throws UsageError or ConfigurationError for those. */
  run(args: ParsedArgs, ctx: CliContext): Promise<number>;
}

/** A mistake on the command line; main prints it with the command's usage and exits 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly exitCode = EXIT.usage;
}

/** AWS or configuration trouble the user fixes outside the command line's syntax; exit 3. */
export class ConfigurationError extends Error {
  override readonly name = 'ConfigurationError';
  readonly exitCode = EXIT.aws;
}
