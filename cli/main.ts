import * as readline from 'node:readline';
import { describeFlags, type FlagSpecs, parseArgs, type ParsedArgs } from './args';
import { isAwsError } from './aws-errors';
import { createClients } from './clients';
import { type CliContext, type Command, ConfigurationError, EXIT, type Io, UsageError } from './command';
import { command as cleanup } from './commands/cleanup';
import { command as generate } from './commands/generate';
import { command as loras } from './commands/loras';
import { command as runs } from './commands/runs';
import { command as status } from './commands/status';
import { command as upload } from './commands/upload';
import { command as validate } from './commands/validate';
import { DEFAULT_STACK_NAME, NO_REGION, OUTPUT_FLAGS, OUTPUT_KEYS, OUTPUTS, outputReader, type OutputKey, STACK_ENV, stackNameOf } from './stack-outputs';

/** `npx lora-pipeline <command>`: parses the command line, runs the command, turns errors into exit codes. */

export const COMMANDS: readonly Command[] = [validate, upload, status, runs, loras, generate, cleanup];

export const GLOBAL_FLAGS: FlagSpecs = {
  help: { type: 'boolean', short: 'h', description: 'show this help' },
  region: { type: 'string', value: '<region>', description: "AWS region (default: AWS_REGION, else the profile's)" },
  profile: { type: 'string', value: '<name>', description: 'AWS profile (default: AWS_PROFILE)' },
  stack: { type: 'string', value: '<name>', description: `the pipeline's CloudFormation stack (env ${STACK_ENV}; default ${DEFAULT_STACK_NAME})` },
  debug: { type: 'boolean', description: 'print the stack trace of an error' },
};

const ALL_GLOBAL: FlagSpecs = { ...GLOBAL_FLAGS, ...OUTPUT_FLAGS };
const STACK_OUTPUT_FLAGS_HINT = "and one per stack output (listed by 'lora-pipeline --help')";

const EXIT_CODES = 'Exit codes: 0 ok; 1 failed (folder refused, run failed, smoke test failed); 2 usage error; 3 AWS or configuration error; 130 interrupted.';

export function globalHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'lora-pipeline: train Stable Diffusion LoRAs with the deployed SageMaker LoRA pipeline, and use them.',
    '',
    'Usage: lora-pipeline <command> [options]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Global options:',
    describeFlags(GLOBAL_FLAGS),
    '',
    'Stack outputs: read from the stack with CloudFormation DescribeStacks, or given with these flags or their',
    'env vars (a flag or env var wins; with all a command needs given, no CloudFormation call is made):',
    describeFlags(OUTPUT_FLAGS),
    '',
    EXIT_CODES,
    "Run 'lora-pipeline <command> --help' for a command's options.",
    '',
  ].join('\n');
}

export function commandHelp(command: Command): string {
  return [
    `lora-pipeline ${command.name}: ${command.summary}`,
    '',
    `Usage: ${command.usage}`,
    '',
    'Options:',
    describeFlags(command.flags),
    '',
    'Global options:',
    describeFlags(GLOBAL_FLAGS),
    "  The stack's outputs can also be given directly: see lora-pipeline --help.",
    '',
    EXIT_CODES,
    '',
  ].join('\n');
}

/** The command word and where it is: the first argument that is neither a flag nor a global flag's value. */
function commandWord(argv: readonly string[]): number {
  for (let index = 0; index < argv.length; index += 1) {
    const token = argv[index];
    if (token === '--') return -1;
    if (!token.startsWith('-')) return index;
    const name = token.replace(/^--/, '');
    if (!token.includes('=') && ALL_GLOBAL[name]?.type === 'string') index += 1;
  }
  return -1;
}

function findCommand(word: string): Command {
  const found = COMMANDS.find((c) => c.name === word);
  if (found) return found;
  throw new UsageError(`unknown command "${word}": the commands are ${COMMANDS.map((c) => c.name).join(', ')}`);
}

/** A command's flags with the global ones; a command may not redefine a global flag. */
export function flagsOf(command: Command): FlagSpecs {
  const clash = Object.keys(command.flags).filter((name) => Object.hasOwn(ALL_GLOBAL, name));
  if (clash.length > 0) throw new Error(`command ${command.name} redefines the global flag(s) ${clash.join(', ')}`);
  return { ...ALL_GLOBAL, ...command.flags };
}

export interface MainOptions {
  readonly io: Io;
  readonly env: NodeJS.ProcessEnv;
  /** Aborted on Ctrl-C. */
  readonly signal?: AbortSignal;
  /** Extra SDK client settings (tests: credentials, retries). */
  readonly clientOverrides?: Record<string, unknown>;
}

function context(args: ParsedArgs, options: MainOptions): CliContext {
  const clients = createClients({ region: args.string('region'), profile: args.string('profile'), env: options.env, overrides: options.clientOverrides });
  const flags: Partial<Record<OutputKey, string>> = {};
  for (const key of OUTPUT_KEYS) {
    const value = args.string(OUTPUTS[key]);
    if (value !== undefined) flags[key] = value;
  }
  const outputs = outputReader({
    stackName: stackNameOf(args.string('stack'), options.env),
    flags,
    env: options.env,
    cloudformation: () => clients.cloudformation,
    ...(clients.region ? { region: clients.region } : {}),
  });
  return { io: options.io, env: options.env, clients, outputs, signal: options.signal ?? new AbortController().signal };
}

/** What went wrong, as the user sees it, and the exit code. */
function report(error: unknown, io: Io, prefix: string, debug: boolean): number {
  const { name, message, stack } = error instanceof Error ? error : new Error(String(error));
  let code: number = EXIT.failed;
  let text = `${name}: ${message}`;
  if (error instanceof UsageError) {
    code = EXIT.usage;
    text = `${message}\nRun '${prefix} --help' for the usage.`;
  } else if (error instanceof ConfigurationError) {
    code = EXIT.aws;
    text = message;
  } else if (isAwsError(error)) {
    code = EXIT.aws;
    text = `AWS refused a call: ${name}: ${message}`;
  } else if (/^Region is missing$/.test(message)) {
    // The SDK's own words when neither --region, AWS_REGION nor the profile gives one.
    code = EXIT.aws;
    text = NO_REGION;
  }
  io.err(`${prefix}: ${text}\n`);
  if (debug && stack) io.err(`${stack}\n`);
  return code;
}

/** Runs one command line; returns the exit code. Never throws. */
export async function main(argv: readonly string[], options: MainOptions): Promise<number> {
  const { io } = options;
  const debug = argv.includes('--debug');
  let prefix = 'lora-pipeline';
  try {
    const at = commandWord(argv);
    if (at < 0) {
      const args = parseArgs(argv, ALL_GLOBAL, { names: Object.keys(GLOBAL_FLAGS), more: STACK_OUTPUT_FLAGS_HINT });
      if (args.positionals.length > 0) throw new UsageError(`give the command before "--": lora-pipeline <command> …`);
      if (!args.boolean('help')) {
        io.err(globalHelp());
        return EXIT.usage;
      }
      io.out(globalHelp());
      return EXIT.ok;
    }
    const word = argv[at];
    const rest = [...argv.slice(0, at), ...argv.slice(at + 1)];
    if (word === 'help') {
      const target = rest.find((token) => !token.startsWith('-'));
      io.out(target === undefined ? globalHelp() : commandHelp(findCommand(target)));
      return EXIT.ok;
    }
    const command = findCommand(word);
    prefix = `lora-pipeline ${command.name}`;
    // An unknown flag's error lists the command's own flags and the usual global ones, not every stack output's.
    const args = parseArgs(rest, flagsOf(command), { names: [...Object.keys(command.flags), ...Object.keys(GLOBAL_FLAGS)], more: STACK_OUTPUT_FLAGS_HINT });
    if (args.boolean('help')) {
      io.out(commandHelp(command));
      return EXIT.ok;
    }
    return await command.run(args, context(args, options));
  } catch (error) {
    return report(error, io, prefix, debug);
  }
}

/** The process's terminal. Progress and prompts go to stderr, so stdout stays for results. */
export function processIo(): Io {
  return {
    out: (text) => void process.stdout.write(text),
    err: (text) => void process.stderr.write(text),
    isTty: Boolean(process.stderr.isTTY),
    columns: process.stderr.columns || 80,
    now: () => Date.now(),
    ask: (question) =>
      new Promise((resolve) => {
        const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: Boolean(process.stdin.isTTY) });
        let answered = false;
        rl.question(question, (answer) => {
          answered = true;
          rl.close();
          resolve(answer);
        });
        rl.once('close', () => {
          if (!answered) resolve('');
        });
      }),
  };
}

/**
 * The CLI process: the first Ctrl-C aborts the command's signal (an upload then stops without
 * writing its trigger), a second one exits at once.
 */
export async function runCli(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  const controller = new AbortController();
  const onInterrupt = () => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort();
  };
  process.on('SIGINT', onInterrupt);
  const code = await main(argv, { io: processIo(), env: process.env, signal: controller.signal });
  process.removeListener('SIGINT', onInterrupt);
  process.exitCode = code;
}

if (require.main === module) void runCli();
