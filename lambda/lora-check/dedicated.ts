import type { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import type { DedicatedSmokeEvent, SmokeResult } from '../shared/contract';
import { askEndpoint, BUSY_STATUSES, containerAnswer, containerStatus, errorFields, type EndpointAnswer, isWarming } from './endpoint-answer';
import { endpointBusy, smokeTestFailed } from './errors';
import { parseCheckEvent } from './check';
import { judgeSmoke, type SmokeStore, smokePrompt, smokeRequest } from './smoke';

/**
 * The smoke test of a dedicated run's endpoint, once it is in service on the run's config: its one
 * fused LoRA at the deployment's LORA_SCALE (no `lora_scale` in the request), then at `lora_scale`
 * 0, which the server re-fuses to the base weights (diffusers_pipeline.py, apply_lora_scale).
 */

/** Without the LoRA: the dedicated server's scale 0 (validation.py accepts 0 to 2). */
export const WITHOUT_LORA = { lora_scale: 0 } as const;

/** Busy or not ready yet: EndpointBusy, retried; any other answer of the endpoint fails the smoke test; the rest as it is (throttling). */
export function classifyDedicated(error: unknown, endpointName: string, which: string): unknown {
  const name = error instanceof Error ? error.name : '';
  const message = error instanceof Error ? error.message : String(error);
  if (isWarming(error)) return endpointBusy(`Endpoint ${endpointName} was not ready for the smoke test (${name}: ${message}).`);
  if (name === 'ModelError') {
    const fields = errorFields(error);
    const status = containerStatus(fields);
    const what = `Endpoint ${endpointName} failed the smoke test's request ${which}: ${containerAnswer(fields)}.`;
    return status !== undefined && BUSY_STATUSES.includes(status) ? endpointBusy(what) : smokeTestFailed(what);
  }
  if (name === 'ValidationError') return smokeTestFailed(`SageMaker refused the smoke test's request ${which} to endpoint ${endpointName} (ValidationError): ${message}`);
  return error;
}

function ask(runtime: SageMakerRuntimeClient, event: DedicatedSmokeEvent, request: Record<string, unknown>, which: string): Promise<EndpointAnswer> {
  return askEndpoint(runtime, event, request, (error) => classifyDedicated(error, event.endpointName, which), `Endpoint ${event.endpointName}`, smokeTestFailed);
}

/** The smoke test's two requests to a dedicated endpoint: its LoRA at the deployment's scale, then at 0; otherwise the same. */
export function dedicatedSmokeRequests(event: DedicatedSmokeEvent): { withLora: Record<string, unknown>; withoutLora: Record<string, unknown> } {
  const request = smokeRequest(event.modelType, smokePrompt(event.samples), event.baseModel);
  return { withLora: request, withoutLora: { ...request, ...WITHOUT_LORA } };
}

export async function smokeTestEndpoint(raw: unknown, runtime: SageMakerRuntimeClient, storeFor: (trainingJobName: string) => SmokeStore, now: () => number = Date.now): Promise<SmokeResult> {
  const event = parseCheckEvent(raw);
  if (event.mode !== 'dedicated') throw new Error(`smokeTestEndpoint is for dedicated runs; a ${event.mode} run is checked by checkLora.`);
  const requests = dedicatedSmokeRequests(event);
  const started = now();
  const withLora = await ask(runtime, event, requests.withLora, 'with the LoRA');
  const withoutLora = await ask(runtime, event, requests.withoutLora, 'without the LoRA (lora_scale 0)');
  return judgeSmoke(withoutLora.image, withLora.image, storeFor(event.trainingJobName), {
    what: `endpoint ${event.endpointName} (its LoRA at the deployment's scale, then at lora_scale 0)`,
    request: requests.withLora,
    fault: smokeTestFailed,
    milliseconds: now() - started,
  });
}
