import type { DedicatedServing, FailureStage, PreparedRun, RunCleanup } from '../shared/contract';
import { loraRef } from '../shared/lora-name';
import { isRecord } from '../shared/run-info';
import { loraCleanup } from './lora-stages';
import { smokeCleanup } from './smoke-stage';

/** What a failed run leaves for the clean-up states to undo, and the notification's line saying so. */

/** Endpoint states in which the run's model and config serve nothing, so they may go. */
const ENDPOINT_GONE_WRONG = ['Failed', 'OutOfService', 'Deleting'];

export function cleanupOf(stage: FailureStage, errorName: string, run: PreparedRun | undefined, state: Record<string, unknown>): RunCleanup | undefined {
  // A shared run whose LoRA the server refused: its version is marked failed (never for a fault of the endpoint or registry).
  if (stage === 'check') return loraCleanup(errorName, state);
  if (stage === 'smoke') return smokeCleanup(run, state);
  if ((stage !== 'endpoint' && stage !== 'model') || run === undefined || run.serving.mode !== 'dedicated') return undefined;
  return deploymentCleanup(stage, run.serving, state);
}

/**
 * What a failed deployment created, to delete: only what is known to serve nothing. The model and
 * config go when the deployment was refused (no `deployment` recorded), or when the endpoint
 * failed, went out of service, or is back in service on another config (a rolled-back update);
 * the endpoint too when this run created it and it failed. An endpoint still being created or
 * updated (a describe call failed, or polling timed out) may still come up on them: nothing goes.
 */
function deploymentCleanup(stage: 'endpoint' | 'model', serving: DedicatedServing, state: Record<string, unknown>): RunCleanup | undefined {
  const resources = { modelName: serving.modelName, endpointConfigName: serving.endpointConfigName };
  const deployment = isRecord(state.deployment) ? state.deployment : undefined;
  const endpoint = isRecord(state.endpoint) ? state.endpoint : {};
  if (stage === 'model') return resources;
  // A create or update that answered with an error may still have taken effect: an endpoint on
  // this run's config keeps it.
  if (deployment === undefined) return endpoint.EndpointConfigName === serving.endpointConfigName ? undefined : resources;
  const status = endpoint.EndpointStatus;
  const rolledBack = status === 'InService' && endpoint.EndpointConfigName !== serving.endpointConfigName;
  if (!(rolledBack || ENDPOINT_GONE_WRONG.includes(String(status)))) return undefined;
  const created = deployment.endpointExisted === false && (status === 'Failed' || status === 'OutOfService');
  return created ? { ...resources, endpointName: serving.endpointName } : resources;
}

/** The failure notification's line on what the clean-up does, if anything. */
export function cleanupLines(cleanup: RunCleanup | undefined): string[] {
  if (cleanup?.loraVersion !== undefined) {
    return [`To be marked failed in the registry by the clean-up: ${loraRef(cleanup.loraVersion.name, cleanup.loraVersion.version)}`];
  }
  if (cleanup?.rollBack !== undefined) {
    return [`To be rolled back by the clean-up: endpoint ${cleanup.rollBack.EndpointName}, to endpoint config ${cleanup.rollBack.EndpointConfigName}`];
  }
  if (cleanup === undefined) return [];
  const names = [cleanup.modelName, cleanup.endpointConfigName, cleanup.endpointName].filter((name) => name !== undefined);
  return [`Cleaned up: ${names.join(', ')}`];
}
