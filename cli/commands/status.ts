import { awsCall } from '../aws-errors';
import { type CliContext, type Command, ConfigurationError, EXIT, type ParsedArgs, UsageError } from '../command';
import { followRun, progressOf, statusSource } from '../follow';
import { json } from '../format';
import { findRun, RunNotFound } from '../run-target';
import { runView } from '../run-view';
import { StatusFunctionError } from '../status-client';

const USAGE = `lora-pipeline status [<dataset> | <run>] [--json] [--watch [--interval <seconds>]]

Where a run is, asked of the deployed status function: its phase and current state, the time it
has taken, the training job's progress from its metrics (step, epoch, loss), its LoRA version and
whether that version is current, its endpoint, and the links the status function gives (samples,
contact sheet, smoke-test images, training logs).

<dataset> shows the dataset's latest run; <run> may be an execution name or ARN, or a run name
(as the training job is named). Without either, the latest run of all.

Exit status: 0 when the status was read (whatever the run's outcome); with --watch, 0 once the run
is in service and 1 if it failed or was aborted. 3 on an AWS or configuration error.`;

async function showOnce(args: ParsedArgs, ctx: CliContext, target: { run?: string }): Promise<number> {
  const source = await statusSource(ctx);
  const run = await awsCall('Asking the status function', () => findRun(source, target));
  const { progress, error } = await progressOf(ctx, run);
  ctx.io.out(`${args.boolean('json') ? json({ ...run, trainingProgress: progress }) : runView(run, ctx.io.now(), progress, error)}\n`);
  return EXIT.ok;
}

export const command: Command = {
  name: 'status',
  summary: 'where a run is: phase, state, elapsed time, training progress, LoRA version, links',
  usage: USAGE,
  flags: {
    json: { type: 'boolean', description: 'print the status function\'s answer (plus "trainingProgress") as JSON' },
    watch: { type: 'boolean', short: 'w', description: 'follow the run until it ends' },
    interval: { type: 'string', value: '<seconds>', description: 'with --watch: seconds between two checks (5-300, default 20)' },
  },
  async run(args, ctx) {
    if (args.positionals.length > 1) throw new UsageError(`status takes one dataset or run, not ${args.positionals.length}: ${args.positionals.join(' ')}`);
    const interval = args.integer('interval', 5, 300);
    if (interval !== undefined && !args.boolean('watch')) throw new UsageError('--interval applies only with --watch');
    const target = args.positionals[0] !== undefined ? { run: args.positionals[0] } : {};
    try {
      if (args.boolean('watch')) return await awsCall('Following the run', () => followRun(ctx, target, { json: args.boolean('json'), intervalSeconds: interval }));
      return await showOnce(args, ctx, target);
    } catch (error) {
      if (error instanceof RunNotFound) {
        ctx.io.err(`${error.message}\n`);
        return EXIT.failed;
      }
      if (error instanceof StatusFunctionError) throw new ConfigurationError(`The status function failed: ${error.errorType}: ${error.message}`);
      throw error;
    }
  },
};
