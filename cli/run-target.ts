import type { LambdaClient } from '@aws-sdk/client-lambda';
import { executionArnPrefix } from '../lambda/status/request';
import type { RunStatus } from '../lambda/status/status';
import { latestRuns, runStatus, StatusFunctionError } from './status-client';

/**
 * Which run `status [dataset|run]` means. The word may be a dataset folder (its latest run), an
 * execution ARN or name, or a run name (`<prefix>-<name>-<stamp>-<hash>`, as the training job and
 * model are named); nothing given means the latest run of all.
 */

export interface RunTarget {
  /** A dataset folder: its latest run. */
  readonly dataset?: string;
  /** What the user typed: a dataset folder, an execution ARN or name, or a run name (tried in that order). */
  readonly run?: string;
}

export interface StatusSource {
  readonly lambda: LambdaClient;
  readonly functionName: string;
  /** The workflow's ARN, to turn an execution name into its ARN. */
  readonly stateMachineArn: () => Promise<string>;
}

/** No run matches: the message says what was looked for. */
export class RunNotFound extends Error {
  override readonly name = 'RunNotFound';
}

/** Step Functions' answer for an execution it does not have, as the status function passes it on. */
function isMissingExecution(error: unknown): boolean {
  return error instanceof StatusFunctionError && /ExecutionDoesNotExist|InvalidRequest/.test(`${error.errorType} ${error.message}`);
}

async function byExecutionName(source: StatusSource, name: string): Promise<RunStatus | undefined> {
  if (!/^[A-Za-z0-9_-]{1,80}$/.test(name)) return undefined;
  try {
    return await runStatus(source.lambda, source.functionName, executionArnPrefix(await source.stateMachineArn()) + name);
  } catch (error) {
    if (isMissingExecution(error)) return undefined;
    throw error;
  }
}

/** The latest run of a dataset; undefined when it has none among the newest executions. */
export async function latestRunOf(source: StatusSource, dataset: string): Promise<RunStatus | undefined> {
  return (await latestRuns(source.lambda, source.functionName, dataset)).runs[0];
}

/** The run the user means; RunNotFound when none is. */
export async function findRun(source: StatusSource, target: RunTarget): Promise<RunStatus> {
  if (target.dataset !== undefined) {
    const run = await latestRunOf(source, target.dataset);
    if (run === undefined) throw new RunNotFound(`No run of the dataset "${target.dataset}" among the latest executions. List them with: lora-pipeline runs`);
    return run;
  }
  const word = target.run;
  if (word === undefined) {
    const latest = (await latestRuns(source.lambda, source.functionName)).runs[0];
    if (latest === undefined) throw new RunNotFound('No run yet: upload a dataset with lora-pipeline upload <folder>.');
    return latest;
  }
  if (word.startsWith('arn:')) return runStatus(source.lambda, source.functionName, word);
  return findWord(source, word);
}

/** A word that is not an ARN: a dataset first (the usual question), then an execution name, then a run name. */
async function findWord(source: StatusSource, word: string): Promise<RunStatus> {
  const ofDataset = await latestRunOfOrNone(source, word);
  if (ofDataset !== undefined) return ofDataset;
  const execution = await byExecutionName(source, word);
  if (execution !== undefined) return execution;
  const named = (await latestRuns(source.lambda, source.functionName)).runs.find((run) => run.run === word);
  if (named !== undefined) return named;
  throw new RunNotFound(
    `"${word}" is neither a dataset with runs, nor an execution of the workflow, nor one of the latest runs. List them with: lora-pipeline runs`,
  );
}

/** A word the status function refuses as a dataset name (a run name may not be a folder name) is simply not one. */
async function latestRunOfOrNone(source: StatusSource, word: string): Promise<RunStatus | undefined> {
  try {
    return await latestRunOf(source, word);
  } catch (error) {
    if (error instanceof StatusFunctionError && error.errorType === 'InvalidRequest') return undefined;
    throw error;
  }
}
