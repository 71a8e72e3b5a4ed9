import { type FailureStage, PREPARE_ERRORS, type PreparedRun } from '../shared/contract';
import { isRecord, nonEmptyString, parseJson } from '../shared/run-info';
import { isoTime } from '../shared/training-summary';
import { checkCause, type LoraFailure, promoteCause, registerCause } from './lora-stages';
import { smokeCause } from './smoke-stage';

/**
 * A failed run's Cause, per stage: what went wrong, in words, from the caught error and the state
 * the run had reached. The shared path's stages are in lora-stages.ts and smoke-stage.ts.
 */

/** The Fail state's Cause is read in the console and the notification; its beginning says why. */
export const MAX_CAUSE_LENGTH = 4000;

/** What a caught error's Cause holds, in the three forms Step Functions gives it. */
export type CaughtCause =
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

export interface FailureContext {
  readonly errorName: string;
  readonly cause: CaughtCause;
  readonly run: PreparedRun | undefined;
  readonly state: Record<string, unknown>;
  readonly now: Date;
}

/** The Cause of a failure at `stage`, capped at MAX_CAUSE_LENGTH. */
export function failureCause(stage: FailureStage, context: FailureContext): string {
  return capCause(CAUSE_OF_STAGE[stage](context));
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

function capCause(cause: string): string {
  return cause.length <= MAX_CAUSE_LENGTH ? cause : `${cause.slice(0, MAX_CAUSE_LENGTH - 1)}…`;
}

/** A sentence from a reason that may or may not end in a full stop. */
function sentence(text: string): string {
  const trimmed = text.trim();
  return /[.!?]$/.test(trimmed) ? trimmed : `${trimmed}.`;
}

function causeText(cause: CaughtCause): string | undefined {
  if (cause.kind === 'lambda' || cause.kind === 'text') return cause.message;
  if (cause.kind === 'training-job') return nonEmptyString(cause.job.FailureReason);
  return undefined;
}

function loraFailure(context: FailureContext): LoraFailure {
  return { errorName: context.errorName, reason: causeText(context.cause), run: context.run, state: context.state };
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
  if (context.errorName.startsWith('SageMaker.') || !isRecord(context.state.endpoint)) return deployCallCause(context, endpoint, name, ours);
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

/** A SageMaker call of the deployment failed: the endpoint itself may be fine, or still coming up. */
function deployCallCause(context: FailureContext, endpoint: Record<string, unknown>, name: string, ours: string | undefined): string {
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
