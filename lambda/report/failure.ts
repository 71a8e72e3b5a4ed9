import { type FailureStage, LORA_ERRORS, PREPARE_ERRORS, type PreparedRun, type ReportResult } from '../shared/contract';
import { datasetCheck, datasetCheckLines } from '../shared/dataset-check';
import { datasetFolder, isRecord, nonEmptyString, preparedRun } from '../shared/run-info';
import { summarizeTraining, trainingLogsUrl } from '../shared/training-summary';
import { cleanupLines, cleanupOf } from './cleanup';
import { type CaughtCause, failureCause, readCause } from './failure-causes';
import { checkError } from './lora-stages';
import { executionOf, snsSubject, withBlank } from './notification';

/**
 * A failed run's report: the Fail state's Error (named by stage), its Cause (failure-causes.ts),
 * what the clean-up undoes (cleanup.ts), and the notification saying all of it.
 */

export interface FailureOptions {
  /** When the report is made: the endpoint timeout says how long was waited. */
  readonly now: Date;
  /** The region the workflow runs in, for the training logs link when the job's ARN is unknown. */
  readonly region?: string;
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

function failureError(stage: FailureStage, errorName: string): string {
  // A LoRA file the training wrote wrong is the user's to look at, like a refused input.
  if (stage === 'register' && errorName === LORA_ERRORS.loraFileInvalid) return errorName;
  if (stage === 'check') return checkError(errorName);
  if (stage !== 'prepare') return STAGE_ERROR[stage];
  const kept: string[] = Object.values(PREPARE_ERRORS);
  return kept.includes(errorName) ? errorName : 'PreparationFailed';
}

function isStage(value: unknown): value is FailureStage {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(STAGE_ACTIVITY, value);
}

/** What the Report event of a failed run says, read defensively: Report must never throw. */
interface Failure {
  readonly execution: { name: string; startTime: string };
  readonly stage: FailureStage;
  readonly errorName: string;
  readonly caught: CaughtCause;
  readonly state: Record<string, unknown>;
  readonly run: PreparedRun | undefined;
  readonly dataset: string | undefined;
}

function readFailure(event: Record<string, unknown>): Failure {
  // An unknown stage can only come from a definition bug; 'prepare' keeps the caught error's name.
  const stage: FailureStage = isStage(event.stage) ? event.stage : 'prepare';
  const caught = isRecord(event.error) ? event.error : {};
  const state = isRecord(event.state) ? event.state : {};
  const run = preparedRun(state.run);
  const request = isRecord(state.request) ? state.request : {};
  return {
    execution: executionOf(event),
    stage,
    errorName: nonEmptyString(caught.Error) ?? 'UnknownError',
    caught: readCause(caught.Cause),
    state,
    run,
    dataset: run?.dataset.name ?? datasetFolder(request.dataset),
  };
}

/** A failed training's logs: the job's own link, else one built from its name and the region. */
function trainingLogs(failure: Failure, region: string | undefined): string | undefined {
  if (failure.stage !== 'training') return undefined;
  const job = failure.caught.kind === 'training-job' ? summarizeTraining(failure.caught.job) : undefined;
  const jobName = job?.jobName ?? failure.run?.training.jobName;
  return job?.logsUrl ?? (jobName !== undefined && region !== undefined ? trainingLogsUrl(region, jobName) : undefined);
}

export function reportFailure(event: Record<string, unknown>, options: FailureOptions): ReportResult {
  const failure = readFailure(event);
  const { execution, stage, errorName, run, dataset } = failure;
  const error = failureError(stage, errorName);
  const cause = failureCause(stage, { errorName, cause: failure.caught, run, state: failure.state, now: options.now });
  const logsUrl = trainingLogs(failure, options.region);
  const cleanup = cleanupOf(stage, errorName, run, failure.state);

  const who = run !== undefined ? `run ${run.run}` : dataset !== undefined ? `dataset "${dataset}"` : `execution ${execution.name}`;
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
    ...(logsUrl !== undefined ? [`Training logs: ${logsUrl}`] : []),
    // Files Prepare found the training would skip: after the fact, still the likely answer to "why is it off?".
    ...withBlank(datasetCheckLines(datasetCheck(run))),
    ...cleanupLines(cleanup),
  ];
  const details = { execution, dataset, run: run?.run, stage, error, cause, caughtError: errorName, logsUrl, cleanup };
  lines.push('', JSON.stringify(details, null, 2));
  return { subject: snsSubject(`LoRA ${who} failed: ${error}`), message: lines.join('\n'), error, cause, ...(cleanup !== undefined ? { cleanup } : {}) };
}
