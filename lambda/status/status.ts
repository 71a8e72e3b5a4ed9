import type { SageMakerClient } from '@aws-sdk/client-sagemaker';
import { DescribeExecutionCommand, type DescribeExecutionCommandOutput, ListExecutionsCommand, type SFNClient } from '@aws-sdk/client-sfn';
import type { S3Client } from '@aws-sdk/client-s3';
import type { ArtifactName } from '../shared/artifact-links';
import { samplesSummary, smokeSummary } from '../shared/artifact-summaries';
import { PHASE_OF_STATE, type CaptionsSummary, type Phase, type SamplesSummary, type SmokeSummary, type StateName } from '../shared/contract';
import { captionsSummary, type DatasetCheck, datasetCheck } from '../shared/dataset-check';
import { datasetFolder, isRecord, nonEmptyString, parseJson, preparedRun } from '../shared/run-info';
import { isoTime } from '../shared/training-summary';
import { readHistory } from './history';
import { artifactLinks } from './links';
import type { RegistryReader } from './registry-state';
import { LATEST_RUNS, parseRequest } from './request';
import { loraStatus, type RunLora, withRegistryState } from './run-lora';
import { type EndpointStatus, endpointStatus, type TrainingStatus, trainingStatus } from './sagemaker-state';

/**
 * "Where is my run?": one execution, the latest runs of a dataset, or the latest runs. Every
 * answer is read from Step Functions, SageMaker and the LoRA registry at the time of asking; nothing is stored.
 *
 * Calls are bounded, so that a question never costs more than a few seconds of API quota:
 * - one execution: DescribeExecution, at most MAX_HISTORY_PAGES of GetExecutionHistory (newest
 *   first, stopping as soon as the current state and Prepare's answer are found), then
 *   DescribeTrainingJob and DescribeEndpoint once the run is prepared, and for a shared run whose
 *   version is registered two GetItems of the registry (the version item and the name's head item);
 * - `{}`: ListExecutions of the LATEST_RUNS newest executions, and the above for each;
 * - `{dataset}`: ListExecutions of the SEARCHED_EXECUTIONS newest, DescribeExecution of each until
 *   LATEST_RUNS of them name the dataset, and the above for those (their description is reused).
 *
 * The parts: the request (request.ts), the execution history (history.ts), SageMaker's resources
 * (sagemaker-state.ts), the LoRA's registry state (run-lora.ts), links (links.ts).
 */

export const SEARCHED_EXECUTIONS = 100;
/** Concurrent requests when many runs are read, under Step Functions' and SageMaker's burst quotas. */
const CONCURRENCY = 5;

export interface RunStatus {
  readonly executionArn: string;
  readonly executionName: string;
  readonly dataset?: string;
  readonly run?: string;
  readonly phase: Phase;
  /** The execution's status: RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED (or PENDING_REDRIVE). */
  readonly status: string;
  readonly startedAt?: string;
  readonly stoppedAt?: string;
  /** The state a running execution is in. */
  readonly currentState?: string;
  /** Why a run waiting for its upload to settle is waiting (Prepare's reason). */
  readonly waitingFor?: string;
  readonly training?: TrainingStatus;
  /** How the run is served: 'shared' (its LoRA on the shared endpoint) or 'dedicated' (an endpoint of its own). */
  readonly servingMode?: 'shared' | 'dedicated';
  /** Why a run of a shared deployment got a dedicated endpoint. */
  readonly dedicatedBecause?: string;
  readonly lora?: RunLora;
  readonly endpoint?: EndpointStatus;
  /** Files of the dataset the training skips (the first 20, with why), their count, and Prepare's notes; only when there are any. */
  readonly datasetCheck?: DatasetCheck;
  /** The samples the training rendered, once Publish samples ran. */
  readonly samples?: SamplesSummary;
  /** The captions the job generated (caption_missing), as Publish samples wrote them back next to their images. */
  readonly captions?: CaptionsSummary;
  /** The smoke test that passed (a failed one is in `cause`, which names its images' folder). */
  readonly smoke?: SmokeSummary;
  /** Presigned GET links to samples.json, the contact sheet and the smoke images, made at the time of asking. */
  readonly links?: Partial<Record<ArtifactName, string>>;
  /** When the links stop working at the latest (sooner if the function's credentials expire first). */
  readonly linksExpireAt?: string;
  readonly error?: string;
  readonly cause?: string;
}

export interface RunList {
  readonly runs: RunStatus[];
  /** How many of the newest executions were looked at. */
  readonly searchedExecutions: number;
}

export interface StatusContext {
  readonly stateMachineArn: string;
  readonly sfn: SFNClient;
  readonly sagemaker: SageMakerClient;
  /** The LoRA registry, read for the versions shared runs registered. */
  readonly registry: RegistryReader;
  /** Signs the links (locally, no call); without it, no links. */
  readonly s3?: S3Client;
  /** The clock the links' expiry is read from. */
  readonly now?: () => number;
}

export async function status(event: unknown, context: StatusContext): Promise<RunStatus | RunList> {
  const request = parseRequest(event, context.stateMachineArn);
  if (request.kind === 'execution') return runStatus(context, await describe(context, request.executionArn));
  return latestRuns(context, request.kind === 'dataset' ? request.dataset : undefined);
}

/** Runs `fn` over `items`, at most `limit` at a time, keeping their order. */
async function mapLimited<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  for (let start = 0; start < items.length; start += limit) {
    results.push(...(await Promise.all(items.slice(start, start + limit).map(fn))));
  }
  return results;
}

export function phaseOf(status: string | undefined, currentState: string | undefined): Phase {
  switch (status) {
    case 'SUCCEEDED':
      return 'IN_SERVICE';
    case 'FAILED':
    case 'TIMED_OUT':
      return 'FAILED';
    case 'ABORTED':
      return 'ABORTED';
    default:
      // RUNNING, and PENDING_REDRIVE, which runs again from the state that failed.
      return (currentState !== undefined ? PHASE_OF_STATE[currentState as StateName] : undefined) ?? 'VALIDATING';
  }
}

function inputDataset(description: DescribeExecutionCommandOutput): string | undefined {
  const input = parseJson(description.input);
  return isRecord(input) ? datasetFolder(input.dataset) : undefined;
}

async function runStatus(context: StatusContext, description: DescribeExecutionCommandOutput): Promise<RunStatus> {
  const executionArn = description.executionArn ?? '';
  const running = description.status === 'RUNNING' || description.status === 'PENDING_REDRIVE';
  const history = await readHistory(context.sfn, executionArn, running);
  const run = preparedRun(history.prepared);
  const unsettled = isRecord(history.prepared) && history.prepared.settled === false ? history.prepared : undefined;
  const [training, endpoint, lora] =
    run !== undefined
      ? await Promise.all([trainingStatus(context.sagemaker, run), endpointStatus(context.sagemaker, run), withRegistryState(context.registry, loraStatus(run, history))])
      : [];
  const currentState = running ? history.currentState : undefined;
  const samples = samplesSummary(history.samples, undefined);
  const smoke = smokeSummary(history.smoke);
  const checked = datasetCheck(run);
  const captions = captionsSummary(history.samples, run);
  return {
    executionArn,
    executionName: description.name ?? executionArn.split(':').pop() ?? '',
    dataset: run?.dataset.name ?? inputDataset(description),
    run: run?.run,
    phase: phaseOf(description.status, currentState),
    status: description.status ?? 'UNKNOWN',
    startedAt: isoTime(description.startDate),
    stoppedAt: isoTime(description.stopDate),
    currentState,
    waitingFor: running && unsettled !== undefined ? nonEmptyString(unsettled.reason) : undefined,
    training,
    servingMode: run?.serving.mode,
    dedicatedBecause: run?.serving.mode === 'dedicated' ? run.serving.dedicatedBecause : undefined,
    lora,
    endpoint,
    ...(checked !== undefined ? { datasetCheck: checked } : {}),
    ...(samples !== undefined ? { samples } : {}),
    ...(captions !== undefined ? { captions } : {}),
    ...(smoke !== undefined ? { smoke } : {}),
    ...(await artifactLinks(context, history)),
    error: description.error,
    cause: description.cause,
  };
}

async function describe(context: StatusContext, executionArn: string): Promise<DescribeExecutionCommandOutput> {
  return context.sfn.send(new DescribeExecutionCommand({ executionArn }));
}

async function latestRuns(context: StatusContext, dataset: string | undefined): Promise<RunList> {
  const listed = await context.sfn.send(
    new ListExecutionsCommand({ stateMachineArn: context.stateMachineArn, maxResults: dataset === undefined ? LATEST_RUNS : SEARCHED_EXECUTIONS }),
  );
  const arns = (listed.executions ?? []).flatMap((execution) => (execution.executionArn !== undefined ? [execution.executionArn] : []));
  const matches: DescribeExecutionCommandOutput[] = [];
  let searched = 0;
  // Newest first, a batch at a time, so that a dataset run recently costs few Describe calls.
  while (searched < arns.length && matches.length < LATEST_RUNS) {
    const batch = arns.slice(searched, searched + CONCURRENCY);
    searched += batch.length;
    for (const description of await Promise.all(batch.map((arn) => describe(context, arn)))) {
      if (matches.length < LATEST_RUNS && (dataset === undefined || inputDataset(description) === dataset)) matches.push(description);
    }
  }
  const runs = await mapLimited(matches, CONCURRENCY, (description) => runStatus(context, description));
  return { runs, searchedExecutions: searched };
}
