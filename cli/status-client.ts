import { InvokeCommand, type LambdaClient } from '@aws-sdk/client-lambda';
import type { RunList, RunStatus } from '../lambda/status/status';

/**
 * Asks the deployed status function (the stack's StatusFunctionName) where runs are: the CLI reads
 * what the function reads, with the function's permissions, rather than repeating its logic.
 */

/** What the function is asked: one execution, a dataset's latest runs, or the latest runs. */
export type StatusQuery = { readonly executionArn: string } | { readonly dataset: string } | Record<string, never>;

/** The function answered with an error (its name and message as Lambda reports them). */
export class StatusFunctionError extends Error {
  override readonly name = 'StatusFunctionError';
  constructor(
    readonly errorType: string,
    message: string,
  ) {
    super(message);
  }
}

function decode(payload: Uint8Array | undefined): unknown {
  const text = payload !== undefined ? Buffer.from(payload).toString('utf8') : '';
  try {
    return text === '' ? undefined : JSON.parse(text);
  } catch {
    throw new Error(`The status function answered with something that is not JSON: ${text.slice(0, 200)}`);
  }
}

async function invoke(lambda: LambdaClient, functionName: string, query: StatusQuery): Promise<unknown> {
  const answer = await lambda.send(new InvokeCommand({ FunctionName: functionName, Payload: Buffer.from(JSON.stringify(query)) }));
  const body = decode(answer.Payload);
  if (answer.FunctionError !== undefined) {
    // Lambda's error payload: {errorType, errorMessage, trace}.
    const error = (body ?? {}) as { errorType?: unknown; errorMessage?: unknown };
    const type = typeof error.errorType === 'string' ? error.errorType : answer.FunctionError;
    throw new StatusFunctionError(type, typeof error.errorMessage === 'string' ? error.errorMessage : JSON.stringify(body));
  }
  return body;
}

function isRunList(value: unknown): value is RunList {
  return typeof value === 'object' && value !== null && Array.isArray((value as RunList).runs);
}

function isRunStatus(value: unknown): value is RunStatus {
  return typeof value === 'object' && value !== null && typeof (value as RunStatus).executionArn === 'string' && typeof (value as RunStatus).phase === 'string';
}

/** One execution's status. */
export async function runStatus(lambda: LambdaClient, functionName: string, executionArn: string): Promise<RunStatus> {
  const body = await invoke(lambda, functionName, { executionArn });
  if (!isRunStatus(body)) throw new Error(`The status function ${functionName} did not answer with a run's status: ${JSON.stringify(body).slice(0, 200)}`);
  return body;
}

/** The latest runs, of one dataset when given: newest first. */
export async function latestRuns(lambda: LambdaClient, functionName: string, dataset?: string): Promise<RunList> {
  const body = await invoke(lambda, functionName, dataset === undefined ? {} : { dataset });
  if (!isRunList(body)) throw new Error(`The status function ${functionName} did not answer with a list of runs: ${JSON.stringify(body).slice(0, 200)}`);
  return body;
}
