import { LORA_ERRORS, PREPARE_ERRORS, type FailureStage, type PreparedRun, type ReportEvent, type ReportResult, type RunCleanup, type RunSummary } from '../shared/contract';
import { datasetCheck, datasetCheckLines } from '../shared/dataset-check';
import { loraRef } from '../shared/lora-name';
import { datasetFolder, isRecord, nonEmptyString, parseJson, preparedRun } from '../shared/run-info';
import { isoTime, summarizeTraining, trainingLogsUrl } from '../shared/training-summary';
import type { ArtifactLink } from '../shared/artifact-links';
import { artifactLines, linkLines, MAX_MESSAGE_BYTES, samplesSummary, smokeSummary } from './artifacts';
import { checkCause, checkError, loraCleanup, promoteCause, registerCause } from './lora-stages';
import { servingOf } from './serving-summary';
import { smokeCause, smokeCleanup } from './smoke-stage';

/**
 * The last step of every run: its end as a notification, and as the execution's output (success)
 * or the Fail state's Error and Cause (failure). It runs on the failure path too, so it must never
 * throw: whatever the caught error looks like, it answers with the best reason it can find.
 */

/** SNS refuses a Subject of 100 characters or more ("less than 100 characters long"). */
export const MAX_SUBJECT_LENGTH = 99;
/** The Fail state's Cause is read in the console and the notification; its beginning says why. */
export const MAX_CAUSE_LENGTH = 4000;

export interface ReportOptions {
  /** When the report is made: the endpoint timeout says how long was waited. */
  readonly now: Date;
  /** The region the workflow runs in, for the training logs link when the job's ARN is unknown. */
  readonly region?: string;
  /** Presigned links to the run's samples and smoke images, for the success notification. */
  readonly links?: readonly ArtifactLink[];
  /** How long the links are valid. */
  readonly linkSeconds?: number;
}

const STAGE_ACTIVITY: Record<FailureStage, string> = {
  prepare: 'preparing the run',
  training: 'training',
  model: 'creating the model',
  endpoint: 'deploying the endpoint',
  'endpoint-timeout': 'waiting for the endpoint',
  register: 'registering the LoRA',
  check: 'trying the LoRA on the shared endpoint',
  promote: 'making the LoRA current',
  smoke: 'smoke-testing the LoRA on its endpoint',
};

const STAGE_ERROR: Record<Exclude<FailureStage, 'prepare'>, string> = {
  training: 'TrainingFailed',
  model: 'DeploymentFailed',
  endpoint: 'EndpointFailed',
  'endpoint-timeout': 'EndpointTimeout',
  register: 'RegistrationFailed',
  check: 'LoraCheckFailed',
  promote: 'PromotionFailed',
  smoke: LORA_ERRORS.smokeTestFailed,
};

/**
 * A subject SNS accepts: printable ASCII on one line. Accents are dropped rather than the letter,
 * other characters become `?`, and a subject too long is cut with `...`.
 */
export function snsSubject(subject: string): string {
  const ascii = subject
    .normalize('NFKD')
    .replace(/\p{M}/gu, '')
    .replace(/\s+/g, ' ')
    .replace(/[^\x20-\x7e]/g, '?')
    .trim();
  const text = ascii.length > 0 ? ascii : 'LoRA run';
  return text.length <= MAX_SUBJECT_LENGTH ? text : `${text.slice(0, MAX_SUBJECT_LENGTH - 3).trimEnd()}...`;
}

function capCause(cause: string): string {
  return cause.length <= MAX_CAUSE_LENGTH ? cause : `${cause.slice(0, MAX_CAUSE_LENGTH - 1)}…`;
}

/** A sentence from a reason that may or may not end in a full stop. */
function sentence(text: string): string {
  const trimmed = text.trim();
  return /[.!?]$/.test(trimmed) ? trimmed : `${trimmed}.`;
}

/** What a caught error's Cause holds, in the three forms Step Functions gives it. */
type CaughtCause =
  | { readonly kind: 'none' }
  | { readonly kind: 'lambda'; readonly message: string }
  | { readonly kind: 'training-job'; readonly job: Record<string, unknown> }
  | { readonly kind: 'text'; readonly message: string };

export function readCause(cause: unknown): CaughtCause {
  const text = nonEmptyString(cause);
  if (text === undefined) return { kind: 'none' };
  const parsed = parseJson(text);
  if (isRecord(parsed)) {
    // A Lambda function's error: {"errorType", "errorMessage", "trace"}.
    const errorMessage = nonEmptyString(parsed.errorMessage);
    if (errorMessage !== undefined) return { kind: 'lambda', message: errorMessage };
    // A `.sync` training job that failed or was stopped: its DescribeTrainingJob result.
    if (nonEmptyString(parsed.TrainingJobStatus) !== undefined) return { kind: 'training-job', job: parsed };
  }
  return { kind: 'text', message: text.trim() };
}

function causeText(cause: CaughtCause): string | undefined {
  if (cause.kind === 'lambda' || cause.kind === 'text') return cause.message;
  if (cause.kind === 'training-job') return nonEmptyString(cause.job.FailureReason);
  return undefined;
}

interface FailureContext {
  readonly errorName: string;
  readonly cause: CaughtCause;
  readonly run: PreparedRun | undefined;
  readonly state: Record<string, unknown>;
  readonly now: Date;
}

/** "(InvalidDataset): …" — the caught error's name and reason, for causes that quote them. */
function because(context: FailureContext): string {
  const reason = causeText(context.cause);
  return reason === undefined ? ` with ${context.errorName}.` : ` (${context.errorName}): ${sentence(reason)}`;
}

function prepareCause(context: FailureContext): string {
  const reason = causeText(context.cause);
  if (reason !== undefined && context.errorName === PREPARE_ERRORS.invalidInput) return `The run's input (its execution input or train.json) is invalid: ${sentence(reason)}`;
  if (reason !== undefined && context.errorName === PREPARE_ERRORS.invalidDataset) return `The dataset is invalid: ${sentence(reason)}`;
  return `Preparing the run failed${because(context)}`;
}

const STOP_REASONS: Record<string, string> = {
  MaxRuntimeExceeded: 'it reached its maximum runtime (training.maxRuntimeSeconds)',
  MaxWaitTimeExceeded: 'it reached its maximum wait for spot capacity and training (training.maxWaitSeconds)',
  Stopped: 'it was stopped by request',
};

function trainingCause(context: FailureContext): string {
  const jobName = context.run?.training.jobName;
  if (context.cause.kind === 'training-job') {
    const job = context.cause.job;
    const name = nonEmptyString(job.TrainingJobName) ?? jobName ?? 'of this run';
    const reason = nonEmptyString(job.FailureReason);
    if (job.TrainingJobStatus === 'Stopped') {
      const secondary = nonEmptyString(job.SecondaryStatus);
      const why = secondary !== undefined ? (STOP_REASONS[secondary] ?? `its status is ${secondary}`) : undefined;
      const stopped = `The training job ${name} was stopped before it finished${why !== undefined ? `: ${why}` : ''}.`;
      return reason !== undefined ? `${stopped} ${sentence(reason)}` : stopped;
    }
    return `The training job ${name} failed: ${sentence(reason ?? `its status is ${String(job.TrainingJobStatus)}`)}`;
  }
  return `The training job ${jobName ?? 'of this run'} could not run${because(context)}`;
}

function modelCause(context: FailureContext): string {
  const run = context.run?.run;
  return `Creating the model and endpoint configuration${run !== undefined ? ` of run ${run}` : ''} failed${because(context)}`;
}

function endpointCause(context: FailureContext): string {
  const endpoint = isRecord(context.state.endpoint) ? context.state.endpoint : {};
  const name = nonEmptyString(endpoint.EndpointName) ?? context.run?.serving.endpointName ?? 'of this run';
  const ours = context.run?.serving.mode === 'dedicated' ? context.run.serving.endpointConfigName : undefined;
  // The SageMaker integrations name their errors `SageMaker.*`: a call failed, not the endpoint.
  if (context.errorName.startsWith('SageMaker.') || !isRecord(context.state.endpoint)) {
    const deployment = isRecord(context.state.deployment) ? context.state.deployment : undefined;
    const leftAlone = "The endpoint was left as it is and may still come up on this run's model: check the run with the status function.";
    if (deployment !== undefined) {
      const what = deployment.endpointExisted === false ? 'creation' : 'update';
      return `SageMaker accepted the ${what} of endpoint ${name}, but following it failed${because(context)} ${leftAlone}`;
    }
    if (ours !== undefined && endpoint.EndpointConfigName === ours) {
      return `Deploying endpoint ${name} answered with an error${because(context)} Yet the endpoint is on this run's configuration (status ${String(endpoint.EndpointStatus)}). ${leftAlone}`;
    }
    return `Deploying endpoint ${name} failed${because(context)}`;
  }
  const reason = nonEmptyString(endpoint.FailureReason);
  const config = nonEmptyString(endpoint.EndpointConfigName);
  if (endpoint.EndpointStatus === 'InService' && config !== undefined && ours !== undefined && config !== ours) {
    // SageMaker rolls a failed UpdateEndpoint back: the endpoint is in service on its old config.
    const rolledBack = `Updating endpoint ${name} to run ${context.run?.run ?? ours} failed and was rolled back; it still serves the previous model (endpoint config ${config}).`;
    return reason !== undefined ? `${rolledBack} ${sentence(reason)}` : rolledBack;
  }
  const status = nonEmptyString(endpoint.EndpointStatus) ?? 'unknown';
  return `Endpoint ${name} failed (status ${status}): ${sentence(reason ?? causeText(context.cause) ?? 'SageMaker gave no reason')}`;
}

function minutesSince(start: unknown, now: Date): number | undefined {
  const iso = isoTime(start);
  if (iso === undefined) return undefined;
  const minutes = Math.round((now.getTime() - new Date(iso).getTime()) / 60000);
  return minutes >= 0 ? minutes : undefined;
}

function timeoutCause(context: FailureContext): string {
  const endpoint = isRecord(context.state.endpoint) ? context.state.endpoint : {};
  const training = isRecord(context.state.training) ? context.state.training : {};
  const name = nonEmptyString(endpoint.EndpointName) ?? context.run?.serving.endpointName ?? 'of this run';
  const status = nonEmptyString(endpoint.EndpointStatus);
  // Deployment starts when training ends (creating the model and its config takes seconds).
  const minutes = minutesSince(training.TrainingEndTime, context.now) ?? minutesSince(endpoint.LastModifiedTime, context.now);
  const waited = minutes !== undefined ? ` after about ${minutes} minutes of deployment` : '';
  return (
    `Endpoint ${name} was not in service${waited}${status !== undefined ? ` (status ${status})` : ''}. ` +
    'The workflow stopped waiting, but the endpoint was left alone and may still come up: check the run with the status function.'
  );
}

function failureError(stage: FailureStage, errorName: string): string {
  // A LoRA file the training wrote wrong is the user's to look at, like a refused input.
  if (stage === 'register' && errorName === LORA_ERRORS.loraFileInvalid) return errorName;
  if (stage === 'check') return checkError(errorName);
  if (stage !== 'prepare') return STAGE_ERROR[stage];
  const kept: string[] = Object.values(PREPARE_ERRORS);
  return kept.includes(errorName) ? errorName : 'PreparationFailed';
}

const CAUSE_OF_STAGE: Record<FailureStage, (context: FailureContext) => string> = {
  prepare: prepareCause,
  training: trainingCause,
  model: modelCause,
  endpoint: endpointCause,
  'endpoint-timeout': timeoutCause,
  register: (context) => registerCause(loraFailure(context)),
  check: (context) => checkCause(loraFailure(context)),
  promote: (context) => promoteCause(loraFailure(context)),
  smoke: (context) => smokeCause(loraFailure(context)),
};

function loraFailure(context: FailureContext): Parameters<typeof registerCause>[0] {
  return { errorName: context.errorName, reason: causeText(context.cause), run: context.run, state: context.state };
}

function isStage(value: unknown): value is FailureStage {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(STAGE_ACTIVITY, value);
}

function executionOf(event: Record<string, unknown>): { name: string; startTime: string } {
  const execution = isRecord(event.execution) ? event.execution : {};
  return { name: nonEmptyString(execution.name) ?? 'unknown', startTime: nonEmptyString(execution.startTime) ?? 'unknown' };
}

function reportFailure(event: Record<string, unknown>, options: ReportOptions): ReportResult {
  const execution = executionOf(event);
  // An unknown stage can only come from a definition bug; 'prepare' keeps the caught error's name.
  const stage: FailureStage = isStage(event.stage) ? event.stage : 'prepare';
  const caught = isRecord(event.error) ? event.error : {};
  const errorName = nonEmptyString(caught.Error) ?? 'UnknownError';
  const state = isRecord(event.state) ? event.state : {};
  const run = preparedRun(state.run);
  const request = isRecord(state.request) ? state.request : {};
  const dataset = run?.dataset.name ?? datasetFolder(request.dataset);
  const causeValue = readCause(caught.Cause);

  const error = failureError(stage, errorName);
  const cause = capCause(CAUSE_OF_STAGE[stage]({ errorName, cause: causeValue, run, state, now: options.now }));

  let logsUrl: string | undefined;
  if (stage === 'training') {
    const job = causeValue.kind === 'training-job' ? summarizeTraining(causeValue.job) : undefined;
    const jobName = job?.jobName ?? run?.training.jobName;
    logsUrl = job?.logsUrl ?? (jobName !== undefined && options.region !== undefined ? trainingLogsUrl(options.region, jobName) : undefined);
  }

  const cleanup = cleanupOf(stage, errorName, run, state);

  const who = run !== undefined ? `run ${run.run}` : dataset !== undefined ? `dataset "${dataset}"` : `execution ${execution.name}`;
  const subject = snsSubject(`LoRA ${who} failed: ${error}`);
  const lines = [
    `The LoRA ${who} failed while ${STAGE_ACTIVITY[stage]}.`,
    '',
    `Error: ${error}`,
    `Cause: ${cause}`,
    '',
    `Execution: ${execution.name} (started ${execution.startTime})`,
    `Dataset: ${dataset ?? 'unknown'}`,
    `Run: ${run?.run ?? 'not prepared'}`,
    `Stage: ${stage}`,
    `Caught error: ${errorName}`,
  ];
  if (logsUrl !== undefined) lines.push(`Training logs: ${logsUrl}`);
  // Files Prepare found the training would skip: after the fact, still the likely answer to "why is it off?".
  lines.push(...withBlank(datasetCheckLines(datasetCheck(run))));
  if (cleanup?.loraVersion !== undefined) {
    lines.push(`To be marked failed in the registry by the clean-up: ${loraRef(cleanup.loraVersion.name, cleanup.loraVersion.version)}`);
  } else if (cleanup?.rollBack !== undefined) {
    lines.push(`To be rolled back by the clean-up: endpoint ${cleanup.rollBack.EndpointName}, to endpoint config ${cleanup.rollBack.EndpointConfigName}`);
  } else if (cleanup !== undefined) {
    const names = [cleanup.modelName, cleanup.endpointConfigName, cleanup.endpointName].filter((name) => name !== undefined);
    lines.push(`Cleaned up: ${names.join(', ')}`);
  }
  const details = { execution, dataset, run: run?.run, stage, error, cause, caughtError: errorName, logsUrl, cleanup };
  lines.push('', JSON.stringify(details, null, 2));
  return { subject, message: lines.join('\n'), error, cause, ...(cleanup !== undefined ? { cleanup } : {}) };
}

/** A section of lines after a blank one, or nothing. */
const withBlank = (lines: string[]): string[] => (lines.length > 0 ? ['', ...lines] : []);

/** The smoke test's answer: a dedicated run's `smoke`, or the one in a shared run's `check`. */
function smokeOf(event: Record<string, unknown>): unknown {
  return isRecord(event.smoke) ? event.smoke : isRecord(event.check) ? event.check.smoke : undefined;
}

/** The message, with the links section when it fits under SNS's limit; else without it, saying where to get them. */
function withLinks(head: string[], tail: string[], options: ReportOptions): string {
  const links = linkLines(options.links ?? [], options.linkSeconds ?? 3600);
  const full = [...head, ...(links.length > 0 ? ['', ...links] : []), ...tail].join('\n');
  if (links.length === 0 || Buffer.byteLength(full, 'utf8') <= MAX_MESSAGE_BYTES) return full;
  return [...head, '', 'Links to the samples and smoke images: ask the status function (they did not fit in this message).', ...tail].join('\n');
}

function reportSuccess(event: Record<string, unknown>, options: ReportOptions): ReportResult {
  const execution = executionOf(event);
  const run = preparedRun(event.run);
  const training = summarizeTraining(event.training);
  const runName = run?.run ?? training.jobName ?? execution.name;
  const serving = servingOf(event, run);
  const summary: RunSummary = {
    run: runName,
    dataset: run?.dataset.name ?? 'unknown',
    trainingJobName: training.jobName ?? run?.training.jobName ?? runName,
    modelArtifact: training.modelArtifact ?? 'unknown',
    endpointName: serving.endpointName,
    trainingSeconds: training.trainingSeconds,
    billableSeconds: training.billableSeconds,
    spotSavingsPercent: training.spotSavingsPercent,
    ...serving.summary,
  };
  // SageMaker puts output.tar.gz (/opt/ml/output/data, where the samples are) beside model.tar.gz.
  const outputArchive = /^s3:\/\/[^/]+\/.*\/model\.tar\.gz$/.test(summary.modelArtifact) ? summary.modelArtifact.replace(/model\.tar\.gz$/, 'output.tar.gz') : undefined;
  const samples = samplesSummary(event.samples, outputArchive);
  const smoke = smokeSummary(smokeOf(event));
  const withArtifacts: RunSummary = { ...summary, ...(samples !== undefined ? { samples } : {}), ...(smoke !== undefined ? { smoke } : {}) };
  const savings = summary.spotSavingsPercent > 0 ? `, ${summary.spotSavingsPercent}% saved by managed spot` : '';
  const artifacts = artifactLines(samples, smoke);
  const head = [
    ...serving.lines,
    '',
    `Dataset: ${summary.dataset}`,
    `Execution: ${execution.name} (started ${execution.startTime})`,
    `Training job: ${summary.trainingJobName} (${summary.trainingSeconds} s of training, ${summary.billableSeconds} s billed${savings})`,
    `Model artifact: ${summary.modelArtifact}`,
    ...(artifacts.length > 0 ? ['', ...artifacts] : []),
    ...withBlank(datasetCheckLines(datasetCheck(run))),
  ];
  const tail = ['', 'Generate an image:', `  ${summary.invokeCommand}`, '', JSON.stringify(withArtifacts, null, 2)];
  return { subject: snsSubject(serving.subject), message: withLinks(head, tail, options), summary: withArtifacts };
}

export function report(event: ReportEvent, options: ReportOptions): ReportResult {
  const received: unknown = event;
  const record = isRecord(received) ? received : {};
  return record.outcome === 'succeeded' ? reportSuccess(record, options) : reportFailure(record, options);
}

/** Endpoint states in which the run's model and config serve nothing, so they may go. */
const ENDPOINT_GONE_WRONG = ['Failed', 'OutOfService', 'Deleting'];

/**
 * What a failed deployment created, to delete: only what is known to serve nothing. The model and
 * config go when the deployment was refused (no `deployment` recorded), or when the endpoint
 * failed, went out of service, or is back in service on another config (a rolled-back update);
 * the endpoint too when this run created it and it failed. An endpoint still being created or
 * updated (a describe call failed, or polling timed out) may still come up on them: nothing goes.
 */
function cleanupOf(stage: FailureStage, errorName: string, run: PreparedRun | undefined, state: Record<string, unknown>): RunCleanup | undefined {
  // A shared run whose LoRA the server refused: its version is marked failed (never for a fault of the endpoint or registry).
  if (stage === 'check') return loraCleanup(errorName, state);
  if (stage === 'smoke') return smokeCleanup(run, state);
  if ((stage !== 'endpoint' && stage !== 'model') || run === undefined || run.serving.mode !== 'dedicated') return undefined;
  const resources = { modelName: run.serving.modelName, endpointConfigName: run.serving.endpointConfigName };
  const deployment = isRecord(state.deployment) ? state.deployment : undefined;
  const endpoint = isRecord(state.endpoint) ? state.endpoint : {};
  if (stage === 'model') return resources;
  // A create or update that answered with an error may still have taken effect: an endpoint on
  // this run's config keeps it.
  if (deployment === undefined) return endpoint.EndpointConfigName === run.serving.endpointConfigName ? undefined : resources;
  const status = endpoint.EndpointStatus;
  const rolledBack = status === 'InService' && endpoint.EndpointConfigName !== run.serving.endpointConfigName;
  if (!(rolledBack || ENDPOINT_GONE_WRONG.includes(String(status)))) return undefined;
  const created = deployment.endpointExisted === false && (status === 'Failed' || status === 'OutOfService');
  return created ? { ...resources, endpointName: run.serving.endpointName } : resources;
}
