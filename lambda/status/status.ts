import { DescribeEndpointCommand, DescribeTrainingJobCommand, type SageMakerClient } from '@aws-sdk/client-sagemaker';
import {
  DescribeExecutionCommand,
  type DescribeExecutionCommandOutput,
  GetExecutionHistoryCommand,
  ListExecutionsCommand,
  type SFNClient,
} from '@aws-sdk/client-sfn';
import type { S3Client } from '@aws-sdk/client-s3';
import { samplesSummary, smokeSummary } from '../report/artifacts';
import { type ArtifactName, LINK_SECONDS, presign, runArtifacts } from '../shared/artifact-links';
import { PHASE_OF_STATE, type Phase, type PreparedRun, type SamplesSummary, type SmokeSummary, STATES, type StateName } from '../shared/contract';
import { type DatasetCheck, datasetCheck } from '../shared/dataset-check';
import { log } from '../shared/log';
import { loraRef } from '../shared/lora-name';
import { datasetFolder, isRecord, nonEmptyString, parseJson, preparedRun } from '../shared/run-info';
import { closest } from '../shared/suggest';
import { isoTime, summarizeTraining, type TrainingTransition } from '../shared/training-summary';
import { type LoraRegistryState, type RegistryReader, registryState } from './registry-state';

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
 */

export const LATEST_RUNS = 10;
export const SEARCHED_EXECUTIONS = 100;
export const HISTORY_PAGE_SIZE = 200;
export const MAX_HISTORY_PAGES = 10;
/** Concurrent requests when many runs are read, under Step Functions' and SageMaker's burst quotas. */
const CONCURRENCY = 5;

/** A request the function cannot answer; the message says what to send instead. */
export class InvalidRequest extends Error {
  override readonly name = 'InvalidRequest';
}

const USAGE =
  'Send {"executionArn": "<an execution of this workflow>"} for one run, {"dataset": "<folder name or s3://…/ URI>"} ' +
  `for the latest runs of a dataset, or {} for the latest ${LATEST_RUNS} runs.`;

export type StatusRequest = { readonly kind: 'execution'; readonly executionArn: string } | { readonly kind: 'dataset'; readonly dataset: string } | { readonly kind: 'latest' };

export interface TrainingStatus {
  readonly jobName: string;
  /** TrainingJobStatus, or `NotStarted` before the job exists, or `Unknown` when it could not be read. */
  readonly status: string;
  readonly secondaryStatus?: string;
  readonly transitions?: TrainingTransition[];
  readonly trainingSeconds?: number;
  readonly billableSeconds?: number;
  readonly spotSavingsPercent?: number;
  readonly modelArtifact?: string;
  readonly failureReason?: string;
  readonly logsUrl?: string;
  /** Why the job could not be read (status `Unknown`). */
  readonly error?: string;
}

export interface EndpointStatus {
  readonly name: string;
  /** EndpointStatus, or `NotCreated`, or `Unknown` when it could not be read. */
  readonly status: string;
  readonly failureReason?: string;
  readonly endpointConfigName?: string;
  /**
   * The endpoint is shared by a dataset's runs: whether it is on this run's endpoint config. False
   * for a run still training (the endpoint serves an earlier run) or one whose update was rolled back.
   */
  readonly servesThisRun?: boolean;
  /** Shared runs: the inference component a request names. */
  readonly inferenceComponentName?: string;
  readonly error?: string;
}

/**
 * A shared run's LoRA: its registry name, and once registered its version, with the version's
 * registry state now (status, whether it is current).
 */
export interface RunLora extends LoraRegistryState {
  readonly name: string;
  readonly version?: number;
  /** `name@version`, as a request names it. */
  readonly ref?: string;
  /** Once the Make LoRA current state ran: whether the version became the name's current one. */
  readonly madeCurrent?: boolean;
}

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

/** `arn:<partition>:states:<region>:<account>:execution:<state machine>:` for this state machine. */
export function executionArnPrefix(stateMachineArn: string): string {
  const parts = stateMachineArn.split(':');
  if (parts.length !== 7 || parts[0] !== 'arn' || parts[2] !== 'states' || parts[5] !== 'stateMachine') {
    throw new Error(`STATE_MACHINE_ARN is not a state machine ARN: ${stateMachineArn}`);
  }
  return `${parts.slice(0, 5).join(':')}:execution:${parts[6]}:`;
}

export function parseRequest(event: unknown, stateMachineArn: string): StatusRequest {
  if (!isRecord(event)) throw new InvalidRequest(`The request must be a JSON object. ${USAGE}`);
  const accepted = ['executionArn', 'dataset'];
  for (const key of Object.keys(event)) {
    if (accepted.includes(key)) continue;
    const meant = closest(key, accepted);
    throw new InvalidRequest(`Unknown field "${key}"${meant !== undefined ? ` (did you mean "${meant}"?)` : ''}. ${USAGE}`);
  }
  if (event.executionArn !== undefined && event.dataset !== undefined) {
    throw new InvalidRequest(`Give either executionArn or dataset, not both. ${USAGE}`);
  }
  if (event.executionArn !== undefined) {
    const arn = event.executionArn;
    const prefix = executionArnPrefix(stateMachineArn);
    if (typeof arn !== 'string' || !arn.startsWith(prefix) || !/^[^:]+$/.test(arn.slice(prefix.length))) {
      throw new InvalidRequest(
        `executionArn must be an execution of this workflow, ${prefix}<execution name>; got ${JSON.stringify(arn)}. ` +
          'Copy it from the Step Functions console or the run notification.',
      );
    }
    return { kind: 'execution', executionArn: arn };
  }
  if (event.dataset !== undefined) {
    const folder = datasetFolder(event.dataset);
    if (folder === undefined) {
      throw new InvalidRequest(`dataset must be a folder name such as "pokemon" or its s3:// URI; got ${JSON.stringify(event.dataset)}.`);
    }
    return { kind: 'dataset', dataset: folder };
  }
  return { kind: 'latest' };
}

/** Runs `fn` over `items`, at most `limit` at a time, keeping their order. */
async function mapLimited<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  for (let start = 0; start < items.length; start += limit) {
    results.push(...(await Promise.all(items.slice(start, start + limit).map(fn))));
  }
  return results;
}

interface HistoryFindings {
  /** The latest state entered. */
  readonly currentState?: string;
  /** Prepare's latest answer (`.run` of its output), settled or not. */
  readonly prepared?: unknown;
  /** The Register LoRA state's result (`.lora` of its output). */
  readonly registered?: unknown;
  /** The Make LoRA current state's result (`.promotion` of its output). */
  readonly promotion?: unknown;
  /** Publish samples' answer, or the error it recorded (`.samples`). */
  readonly samples?: unknown;
  /** The smoke test's result: `.smoke` of Smoke test the endpoint, or `.check.smoke` of Try LoRA. */
  readonly smoke?: unknown;
}

/** The result a state put at `key` of its output, from its exit event; undefined for an exit with a caught error. */
function stateResult(output: string | undefined, key: string): unknown {
  const parsed = parseJson(output);
  return isRecord(parsed) && !('error' in parsed) ? parsed[key] : undefined;
}

/**
 * Reads the history newest first. The first Prepare exit met is its latest answer: once Prepare
 * has settled the workflow never runs it again, so an unsettled answer there means no settled one
 * exists, and the search can stop.
 */
async function readHistory(context: StatusContext, executionArn: string, needCurrentState: boolean): Promise<HistoryFindings> {
  let currentState: string | undefined;
  let prepared: unknown;
  let registered: unknown;
  let promotion: unknown;
  let samples: unknown;
  let smoke: unknown;
  let preparedFound = false;
  let nextToken: string | undefined;
  for (let page = 0; page < MAX_HISTORY_PAGES; page++) {
    const history = await context.sfn.send(
      new GetExecutionHistoryCommand({ executionArn, reverseOrder: true, maxResults: HISTORY_PAGE_SIZE, nextToken, includeExecutionData: true }),
    );
    for (const event of history.events ?? []) {
      if (currentState === undefined && event.type?.endsWith('StateEntered')) currentState = event.stateEnteredEventDetails?.name;
      // Both states run after Prepare: newest first, they are met before its exit.
      const exited = event.type?.endsWith('StateExited') ? event.stateExitedEventDetails : undefined;
      if (registered === undefined && exited?.name === STATES.registerLora) registered = stateResult(exited.output, 'lora');
      if (promotion === undefined && exited?.name === STATES.makeLoraCurrent) promotion = stateResult(exited.output, 'promotion');
      if (samples === undefined && exited?.name === STATES.publishSamples) samples = stateResult(exited.output, 'samples');
      if (smoke === undefined && exited?.name === STATES.smokeTest) smoke = stateResult(exited.output, 'smoke');
      if (smoke === undefined && exited?.name === STATES.tryLora) smoke = (stateResult(exited.output, 'check') as { smoke?: unknown } | undefined)?.smoke;
      if (!preparedFound && event.type?.endsWith('StateExited') && event.stateExitedEventDetails?.name === STATES.prepare) {
        preparedFound = true;
        const output = parseJson(event.stateExitedEventDetails.output);
        // A Prepare that failed exits with its error caught beside the previous pass's answer:
        // that answer is stale, not where the run is.
        prepared = isRecord(output) && !('error' in output) ? output.run : undefined;
      }
      if (preparedFound && (currentState !== undefined || !needCurrentState)) return { currentState, prepared, registered, promotion, samples, smoke };
    }
    nextToken = history.nextToken;
    if (nextToken === undefined) break;
  }
  return { currentState, prepared, registered, promotion, samples, smoke };
}

function errorText(error: unknown): { name: string; message: string } {
  return error instanceof Error ? { name: error.name, message: error.message } : { name: 'Error', message: String(error) };
}

/** SageMaker answers a Describe of a missing resource with a ValidationException. */
function isNotFound(error: unknown): boolean {
  const { name, message } = errorText(error);
  return name === 'ResourceNotFound' || (name === 'ValidationException' && /not found|could not find|does not exist/i.test(message));
}

async function trainingStatus(context: StatusContext, run: PreparedRun): Promise<TrainingStatus> {
  const jobName = run.training.jobName;
  try {
    const job = summarizeTraining(await context.sagemaker.send(new DescribeTrainingJobCommand({ TrainingJobName: jobName })));
    return {
      jobName,
      status: job.status ?? 'Unknown',
      secondaryStatus: job.secondaryStatus,
      transitions: job.transitions,
      trainingSeconds: job.trainingSeconds,
      billableSeconds: job.billableSeconds,
      spotSavingsPercent: job.spotSavingsPercent,
      modelArtifact: job.modelArtifact,
      failureReason: job.failureReason,
      logsUrl: job.logsUrl,
    };
  } catch (error) {
    if (isNotFound(error)) return { jobName, status: 'NotStarted' };
    // The execution's own status is still worth answering with; say what could not be read.
    const { name, message } = errorText(error);
    log('WARN', 'Training job not readable', { jobName, error: name });
    return { jobName, status: 'Unknown', error: `${name}: ${message}` };
  }
}

async function endpointStatus(context: StatusContext, run: PreparedRun): Promise<EndpointStatus> {
  const name = run.serving.endpointName;
  try {
    const endpoint = await context.sagemaker.send(new DescribeEndpointCommand({ EndpointName: name }));
    // The shared endpoint serves every version; whether it serves this one is the LoRA's status.
    const mine =
      run.serving.mode === 'dedicated'
        ? { servesThisRun: endpoint.EndpointConfigName === run.serving.endpointConfigName }
        : { inferenceComponentName: run.serving.inferenceComponentName };
    return {
      name,
      status: endpoint.EndpointStatus ?? 'Unknown',
      failureReason: endpoint.FailureReason,
      endpointConfigName: endpoint.EndpointConfigName,
      ...mine,
    };
  } catch (error) {
    if (isNotFound(error)) return { name, status: 'NotCreated' };
    const { name: errorName, message } = errorText(error);
    log('WARN', 'Endpoint not readable', { endpointName: name, error: errorName });
    return { name, status: 'Unknown', error: `${errorName}: ${message}` };
  }
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

/** A shared run's LoRA name, with its version once registered and whether it was made current. */
function loraStatus(run: PreparedRun, history: HistoryFindings): RunLora | undefined {
  if (run.serving.mode !== 'shared') return undefined;
  const registered = isRecord(history.registered) ? history.registered : {};
  const name = nonEmptyString(registered.name) ?? run.lora?.name;
  if (name === undefined) return undefined;
  const version = typeof registered.version === 'number' ? registered.version : undefined;
  const promotion = isRecord(history.promotion) ? history.promotion : undefined;
  return {
    name,
    ...(version !== undefined ? { version, ref: loraRef(name, version) } : {}),
    ...(promotion !== undefined && typeof promotion.current === 'boolean' ? { madeCurrent: promotion.current } : {}),
  };
}

/** The LoRA with its version's registry state now, once the history names a version. */
async function withRegistryState(context: StatusContext, lora: RunLora | undefined): Promise<RunLora | undefined> {
  if (lora?.version === undefined) return lora;
  return { ...lora, ...(await registryState(context.registry, lora.name, lora.version)) };
}

/** Fresh links to what the history names; none when signing fails (the rest of the answer stands). */
async function artifactLinks(context: StatusContext, history: HistoryFindings): Promise<Pick<RunStatus, 'links' | 'linksExpireAt'>> {
  const artifacts = runArtifacts(history.samples, history.smoke);
  if (context.s3 === undefined || artifacts.length === 0) return {};
  try {
    const links = await presign(context.s3, artifacts);
    const expires = new Date((context.now ?? Date.now)() + LINK_SECONDS * 1000).toISOString();
    return { links: Object.fromEntries(links.map((link) => [link.name, link.url])), linksExpireAt: expires };
  } catch (error) {
    log('WARN', 'Links not signed', { error: errorText(error).name });
    return {};
  }
}

function inputDataset(description: DescribeExecutionCommandOutput): string | undefined {
  const input = parseJson(description.input);
  return isRecord(input) ? datasetFolder(input.dataset) : undefined;
}

async function runStatus(context: StatusContext, description: DescribeExecutionCommandOutput): Promise<RunStatus> {
  const executionArn = description.executionArn ?? '';
  const running = description.status === 'RUNNING' || description.status === 'PENDING_REDRIVE';
  const history = await readHistory(context, executionArn, running);
  const run = preparedRun(history.prepared);
  const unsettled = isRecord(history.prepared) && history.prepared.settled === false ? history.prepared : undefined;
  const [training, endpoint, lora] =
    run !== undefined ? await Promise.all([trainingStatus(context, run), endpointStatus(context, run), withRegistryState(context, loraStatus(run, history))]) : [];
  const currentState = running ? history.currentState : undefined;
  const samples = samplesSummary(history.samples, undefined);
  const smoke = smokeSummary(history.smoke);
  const checked = datasetCheck(run);
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

export async function status(event: unknown, context: StatusContext): Promise<RunStatus | RunList> {
  const request = parseRequest(event, context.stateMachineArn);
  if (request.kind === 'execution') return runStatus(context, await describe(context, request.executionArn));
  return latestRuns(context, request.kind === 'dataset' ? request.dataset : undefined);
}
