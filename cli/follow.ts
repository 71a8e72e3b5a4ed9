import type { RunStatus } from '../lambda/status/status';
import type { CliContext } from './command';
import { errorLine, json } from './format';
import { findRun, latestRunOf, type RunTarget, type StatusSource } from './run-target';
import { FINAL_PHASES, followLine, runView } from './run-view';
import { runStatus } from './status-client';
import { trainingProgress, type TrainingProgress } from './training-progress';

/**
 * Follows one run until it ends: a line each time its phase, state or training progress changes,
 * then the whole status. `status --watch` and `upload` (which follows the run its upload starts) use it.
 */

/** The exit code when the user stops following (Ctrl-C): the run itself goes on. */
export const INTERRUPTED = 130;

export interface FollowOptions {
  /** Seconds between two questions to the status function (default 20). */
  readonly intervalSeconds?: number;
  /**
   * For a dataset: follow only a run that started at or after this time (ms since the epoch),
   * waiting for it to appear; `upload` passes the time it began, so an older run is never taken for it.
   */
  readonly startedAfterMs?: number;
  /** How long to wait for that run to appear before giving up (default 300 s: S3 events and Prepare's start). */
  readonly appearTimeoutSeconds?: number;
  /** Print the final status as JSON rather than text. */
  readonly json?: boolean;
  /** Waits `ms`, or less when `signal` aborts; tests pass one that advances a fake clock. */
  readonly sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

/** setTimeout, cut short by the signal. */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/** The status function and workflow, from the stack's outputs. */
export async function statusSource(ctx: CliContext): Promise<StatusSource> {
  const outputs = await ctx.outputs('StatusFunctionName');
  return {
    lambda: ctx.clients.lambda,
    functionName: outputs.get('StatusFunctionName'),
    stateMachineArn: async () => (await ctx.outputs('StateMachineArn')).get('StateMachineArn'),
  };
}

/** The training job's latest metrics while it trains; a failed read is told, not fatal. */
export async function progressOf(ctx: CliContext, run: RunStatus): Promise<{ progress?: TrainingProgress; error?: string }> {
  const job = run.training;
  if (job === undefined || job.status === 'NotStarted' || job.status === 'Unknown' || run.startedAt === undefined) return {};
  try {
    const stop = run.stoppedAt !== undefined ? Date.parse(run.stoppedAt) : ctx.io.now();
    return { progress: await trainingProgress(ctx.clients.cloudwatch, job.jobName, Date.parse(run.startedAt), stop) };
  } catch (error) {
    return { error: errorLine(error) };
  }
}

/** Waits for the dataset's run that started after `since`; undefined when it did not appear in time (or on Ctrl-C). */
async function awaitNewRun(ctx: CliContext, source: StatusSource, dataset: string, since: number, options: FollowOptions): Promise<RunStatus | undefined> {
  const sleep = options.sleep ?? abortableSleep;
  const deadline = ctx.io.now() + (options.appearTimeoutSeconds ?? 300) * 1000;
  ctx.io.err(`Waiting for the run of ${dataset} to start…\n`);
  for (;;) {
    const run = await latestRunOf(source, dataset);
    if (run?.startedAt !== undefined && Date.parse(run.startedAt) >= since) return run;
    if (ctx.io.now() >= deadline || ctx.signal.aborted) return undefined;
    await sleep(Math.min((options.intervalSeconds ?? 20) * 1000, 10_000), ctx.signal);
  }
}

/** Follows the run meant by `target` until it ends: 0 when in service, 1 when it failed or was aborted, 130 on Ctrl-C. */
export async function followRun(ctx: CliContext, target: RunTarget, options: FollowOptions = {}): Promise<number> {
  const source = await statusSource(ctx);
  const sleep = options.sleep ?? abortableSleep;
  let run =
    target.dataset !== undefined && options.startedAfterMs !== undefined
      ? await awaitNewRun(ctx, source, target.dataset, options.startedAfterMs, options)
      : await findRun(source, target);
  if (run === undefined) {
    if (ctx.signal.aborted) return INTERRUPTED;
    ctx.io.err(`No run of ${target.dataset} started within ${options.appearTimeoutSeconds ?? 300} s. Check the upload's trigger file, then: lora-pipeline runs\n`);
    return 1;
  }
  ctx.io.err(`Following ${run.run ?? run.executionName} (execution ${run.executionName}); Ctrl-C stops following, not the run.\n`);
  let shown = '';
  for (;;) {
    const { progress } = run.phase === 'TRAINING' ? await progressOf(ctx, run) : {};
    const line = followLine(run, ctx.io.now(), progress);
    // The elapsed time always moves; print when anything else did.
    const changed = line.replace(/^\[[^\]]*\]\s*/, '');
    if (changed !== shown) ctx.io.err(`${line}\n`);
    shown = changed;
    const exit = FINAL_PHASES[run.phase];
    if (exit !== undefined) {
      const finalProgress = await progressOf(ctx, run);
      ctx.io.out(`${options.json ? json({ ...run, trainingProgress: finalProgress.progress }) : runView(run, ctx.io.now(), finalProgress.progress, finalProgress.error)}\n`);
      return exit;
    }
    await sleep((options.intervalSeconds ?? 20) * 1000, ctx.signal);
    if (ctx.signal.aborted) {
      ctx.io.err(`Stopped following. The run goes on: lora-pipeline status ${run.executionName}\n`);
      return INTERRUPTED;
    }
    run = await runStatus(source.lambda, source.functionName, run.executionArn);
  }
}
