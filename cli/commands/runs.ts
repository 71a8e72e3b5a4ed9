import type { RunStatus } from '../../lambda/status/status';
import { awsCall } from '../aws-errors';
import { type Command, ConfigurationError, EXIT, UsageError } from '../command';
import { statusSource } from '../follow';
import { duration, elapsedSeconds, json, shortTime, table } from '../format';
import { phaseText } from '../run-view';
import { StatusFunctionError, latestRuns } from '../status-client';

const USAGE = `lora-pipeline runs [<dataset>] [--json]

The latest runs, newest first, as the deployed status function reports them: when each started,
its dataset, run name, phase (and the state it is in while running), how long it has taken, its
LoRA version (shared runs) or endpoint (dedicated runs), and the error of a failed run.
With <dataset>, only that dataset's runs. --json prints the status function's answer.`;

function served(run: RunStatus): string {
  if (run.lora?.ref !== undefined) return `${run.lora.ref}${run.lora.isCurrent === true ? ' (current)' : ''}`;
  if (run.servingMode === 'dedicated' && run.endpoint !== undefined) return `endpoint ${run.endpoint.name}`;
  return run.lora?.name ?? '-';
}

function row(run: RunStatus, nowMs: number): string[] {
  const elapsed = elapsedSeconds(run.startedAt, run.stoppedAt, nowMs);
  return [
    shortTime(run.startedAt),
    run.dataset ?? '-',
    run.run ?? run.executionName,
    phaseText(run),
    elapsed !== undefined ? duration(elapsed) : '-',
    served(run),
    run.error ?? '',
  ];
}

export const command: Command = {
  name: 'runs',
  summary: 'the latest runs: started, dataset, phase, elapsed time, LoRA version, error',
  usage: USAGE,
  flags: { json: { type: 'boolean', description: "print the status function's answer as JSON" } },
  async run(args, ctx) {
    if (args.positionals.length > 1) throw new UsageError(`runs takes at most one dataset, not ${args.positionals.length}: ${args.positionals.join(' ')}`);
    const source = await statusSource(ctx);
    const dataset = args.positionals[0];
    const list = await awsCall('Asking the status function', () => latestRuns(source.lambda, source.functionName, dataset)).catch((error: unknown) => {
      if (error instanceof StatusFunctionError) throw new ConfigurationError(`The status function refused the question: ${error.errorType}: ${error.message}`);
      throw error;
    });
    if (args.boolean('json')) {
      ctx.io.out(`${json(list)}\n`);
      return EXIT.ok;
    }
    if (list.runs.length === 0) {
      ctx.io.err(`No runs${dataset !== undefined ? ` of ${dataset}` : ''} among the ${list.searchedExecutions} newest executions.\n`);
      return EXIT.ok;
    }
    const now = ctx.io.now();
    ctx.io.out(`${table(['STARTED', 'DATASET', 'RUN', 'PHASE', 'ELAPSED', 'LORA / ENDPOINT', 'ERROR'], list.runs.map((run) => row(run, now)))}\n`);
    return EXIT.ok;
  },
};
