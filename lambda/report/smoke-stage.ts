import { LORA_ERRORS, type PreparedRun, type RunCleanup } from '../shared/contract';
import { loraRef } from '../shared/lora-name';
import { isRecord, nonEmptyString } from '../shared/run-info';
import { registeredVersion } from './lora-stages';

/**
 * A failed smoke test: the LoRA made no difference, or the endpoint could not answer it. A shared
 * run's version is marked failed (the previous one stays current); a dedicated run's endpoint goes
 * with its model and config when this run created it, and is updated back to the config it served
 * before when this run updated it.
 */

export interface SmokeFailure {
  readonly errorName: string;
  readonly reason: string | undefined;
  readonly run: PreparedRun | undefined;
  readonly state: Record<string, unknown>;
}

function sentence(text: string): string {
  const trimmed = text.trim();
  return /[.!?]$/.test(trimmed) ? trimmed : `${trimmed}.`;
}

/** Whether this run created the dedicated endpoint (rather than updating the dataset's). */
function createdEndpoint(state: Record<string, unknown>): boolean {
  return isRecord(state.deployment) && state.deployment.endpointExisted === false;
}

function what(failure: SmokeFailure): string {
  if (failure.errorName === LORA_ERRORS.smokeTestFailed && failure.reason !== undefined) return sentence(failure.reason);
  return `The smoke test could not be completed (${failure.errorName})${failure.reason !== undefined ? `: ${sentence(failure.reason)}` : '.'}`;
}

export function smokeCause(failure: SmokeFailure): string {
  const { run, state } = failure;
  if (run?.serving.mode === 'shared') {
    const version = registeredVersion(state);
    const ref = version ? loraRef(version.name, version.version) : 'The new version';
    return `${what(failure)} ${ref} will be marked failed by the clean-up that follows this report and was not made current; the name's current version is unchanged.`;
  }
  const endpoint = run?.serving.endpointName ?? 'of this run';
  if (createdEndpoint(state)) {
    return `${what(failure)} Endpoint ${endpoint}, which this run created, is deleted by the clean-up that follows this report, with its model and endpoint config.`;
  }
  const previous = previousConfig(state);
  const { modelName, endpointConfigName } = run?.serving.mode === 'dedicated' ? run.serving : { modelName: 'of this run', endpointConfigName: 'of this run' };
  if (previous === undefined) return `${what(failure)} Endpoint ${endpoint} was updated to this run and still serves it (the config it served before is not known).`;
  // DeleteEndpointConfig: "You must not delete an EndpointConfig ... while the UpdateEndpoint ... operations are being performed on the endpoint."
  return (
    `${what(failure)} Endpoint ${endpoint} was updated to this run; the clean-up that follows this report rolls it back to endpoint config ${previous}, the one it served before ` +
    `(it serves this run until that update completes). This run's model ${modelName} and endpoint config ${endpointConfigName} are kept while the endpoint moves off them; ` +
    `once it is InService on ${previous}, delete them: aws sagemaker delete-endpoint-config --endpoint-config-name ${endpointConfigName} && aws sagemaker delete-model --model-name ${modelName} ` +
    `(npx lora-pipeline cleanup ${run?.dataset.name ?? '<dataset>'} removes them once a later run serves the dataset). ` +
    `Should the roll-back fail, the notification says so; to go back by hand: aws sagemaker update-endpoint --endpoint-name ${endpoint} --endpoint-config-name ${previous}.`
  );
}

/** The config the dataset's endpoint served before this run updated it ("Find endpoint" keeps it). */
function previousConfig(state: Record<string, unknown>): string | undefined {
  const updated = isRecord(state.deployment) && state.deployment.endpointExisted === true;
  return updated && isRecord(state.existing) ? nonEmptyString(state.existing.endpointConfigName) : undefined;
}

/**
 * What a failed smoke test leaves to clean up: the version to mark failed (shared), what this run
 * created for its new endpoint (dedicated), or the endpoint it updated, to update back (dedicated).
 */
export function smokeCleanup(run: PreparedRun | undefined, state: Record<string, unknown>): RunCleanup | undefined {
  if (run?.serving.mode === 'shared') {
    const version = registeredVersion(state);
    return version !== undefined ? { loraVersion: version } : undefined;
  }
  if (run?.serving.mode !== 'dedicated') return undefined;
  if (createdEndpoint(state)) return { modelName: run.serving.modelName, endpointConfigName: run.serving.endpointConfigName, endpointName: run.serving.endpointName };
  const previous = previousConfig(state);
  return previous !== undefined ? { rollBack: { EndpointName: run.serving.endpointName, EndpointConfigName: previous } } : undefined;
}
