import type { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { z } from 'zod';
import type { LoraCheckEvent, LoraCheckResult, SharedCheckEvent } from '../shared/contract';
import { LORA_NAME, loraRef } from '../shared/lora-name';
import { isRecord } from '../shared/run-info';
import { askEndpoint, BUSY_STATUSES, containerAnswer, containerStatus, errorFields, type EndpointAnswer, isWarming } from './endpoint-answer';
import { loraCheckFailed, sharedEndpointBusy, sharedEndpointUnavailable, sharedEndpointWarming } from './errors';
import { judgeSmoke, type SmokeStore, smokePrompt, smokeRequest } from './smoke';

/**
 * Try LoRA on the shared endpoint, before the new version is made current: the smoke test's two
 * requests to the shared endpoint's inference component, the first naming the new version (the
 * server must fetch it from S3, verify it and generate with it: the check), the second no LoRA.
 * Their images must differ (smoke.ts).
 */

export { BUSY_STATUSES } from './endpoint-answer';

const common = {
  endpointName: z.string().min(1),
  modelType: z.enum(['sd15', 'sdxl', 'flux1']),
  // The run's base model: a FLUX.1 Hub id names the variant, whose steps and guidance the smoke test uses.
  baseModel: z.string().min(1).optional(),
  trainingJobName: z.string().min(1),
  samples: z.unknown().optional(),
};
const eventSchema = z.discriminatedUnion('mode', [
  z.object({
    mode: z.literal('shared'),
    ...common,
    inferenceComponentName: z.string().min(1),
    lora: z.object({ name: z.string().regex(LORA_NAME), version: z.number().int().min(1) }),
  }),
  z.object({ mode: z.literal('dedicated'), ...common }),
]);

export function parseCheckEvent(event: unknown): LoraCheckEvent {
  const result = eventSchema.safeParse(event);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `${issue.path.join('.') || '(event)'}: ${issue.message}`);
    // A definition bug, not the endpoint's answer: not a LoraCheckFailed, so the message is not mistaken for one.
    throw new Error(
      `The LoRA check's event is invalid (${problems.join('; ')}); expected {mode: "shared", endpointName, inferenceComponentName, lora: {name, version}, modelType, baseModel?, trainingJobName, samples} ` +
        'or {mode: "dedicated", endpointName, modelType, baseModel?, trainingJobName, samples}.',
    );
  }
  return result.data as LoraCheckEvent;
}

/**
 * The shared server's answers about the LoRA itself (containers/inference/README.md, "Shared
 * mode"): its file refused (400: another family, a bad header, a SHA-256 mismatch), or the version
 * retired or failed meanwhile (410). Only these reject the version. A 404 is not among them: the
 * version was registered a moment before, so a server that cannot find it or read its file (S3
 * answers a role or key mistake like a missing object) is the deployment's fault, not the LoRA's.
 */
export const REFUSED_STATUSES: readonly number[] = [400, 410];

/**
 * An InvokeEndpoint error as the state should see it: warming or busy (retried), a refusal of the
 * LoRA (LoraCheckFailed; only for the request that names it), a fault of the deployment
 * (SharedEndpointUnavailable: a 500, an unknown component), or as it is (throttling and SageMaker's
 * faults, retried briefly).
 */
export function classify(error: unknown, event: SharedCheckEvent, namesLora = true): unknown {
  const name = error instanceof Error ? error.name : '';
  const message = error instanceof Error ? error.message : String(error);
  const target = `inference component ${event.inferenceComponentName} of endpoint ${event.endpointName}`;
  const ref = loraRef(event.lora.name, event.lora.version);
  if (isWarming(error)) return sharedEndpointWarming(`The ${target} has no copy ready to serve (${name}: ${message}); it is scaling out from zero.`);
  const generating = namesLora ? `Generating with LoRA ${ref}` : `Generating without a LoRA (the smoke test's comparison for ${ref})`;
  if (name === 'ModelError') {
    const fields = errorFields(error);
    const status = containerStatus(fields);
    const what = `${generating} on the ${target} failed: ${containerAnswer(fields)}.`;
    if (namesLora && status !== undefined && REFUSED_STATUSES.includes(status)) return loraCheckFailed(what);
    if (status !== undefined && BUSY_STATUSES.includes(status)) return sharedEndpointBusy(what);
    return sharedEndpointUnavailable(what);
  }
  // SageMaker refused the request before the server saw it (a missing component, say): the deployment's fault.
  if (name === 'ValidationError') return sharedEndpointUnavailable(`SageMaker refused the check request for LoRA ${ref} to the ${target} (ValidationError): ${message}`);
  return error;
}

/** The answer's `loras` must name exactly `expected` (or none for the request without a LoRA); anything else is a server fault, not the LoRA's. */
function usedLoras(answer: EndpointAnswer, event: SharedCheckEvent, expected: string | undefined): { sha256?: string } {
  const ref = loraRef(event.lora.name, event.lora.version);
  const { body } = answer;
  if (!Array.isArray(body.loras)) {
    throw sharedEndpointUnavailable(`The shared endpoint answered the check of ${ref} with 200 but no "loras" list (${answer.text.slice(0, 200)}); is it running the shared server (SERVING_MODE=shared)?`);
  }
  const used = body.loras.filter(isRecord).map((l) => `${String(l.name)}@${String(l.version)}`);
  const wanted = expected === undefined ? [] : [expected];
  if (body.loras.length !== wanted.length || used.some((u, i) => u !== wanted[i])) {
    const usedText = used.length > 0 ? used.join(', ') : 'no LoRA';
    throw sharedEndpointUnavailable(`The shared endpoint answered the ${expected ? `check of ${ref}` : `request without a LoRA`} with 200 but used ${usedText} instead of ${expected ? `${ref} alone` : 'none'}.`);
  }
  const sha256 = expected === undefined ? undefined : (body.loras[0] as Record<string, unknown>).sha256;
  return typeof sha256 === 'string' ? { sha256 } : {};
}

function ask(runtime: SageMakerRuntimeClient, event: SharedCheckEvent, request: Record<string, unknown>, namesLora: boolean): Promise<EndpointAnswer> {
  return askEndpoint(runtime, event, request, (error) => classify(error, event, namesLora), `The shared endpoint ${event.endpointName}`, sharedEndpointUnavailable);
}

/** The smoke test's two requests to the shared endpoint: the new version named, then no LoRA; otherwise the same. */
export function sharedSmokeRequests(event: SharedCheckEvent): { withLora: Record<string, unknown>; withoutLora: Record<string, unknown> } {
  const request = smokeRequest(event.modelType, smokePrompt(event.samples), event.baseModel);
  return { withLora: { ...request, lora: loraRef(event.lora.name, event.lora.version) }, withoutLora: request };
}

export async function checkLora(raw: unknown, runtime: SageMakerRuntimeClient, storeFor: (trainingJobName: string) => SmokeStore, now: () => number = Date.now): Promise<LoraCheckResult> {
  const event = parseCheckEvent(raw);
  if (event.mode !== 'shared') throw new Error(`checkLora is for shared runs; a ${event.mode} run's endpoint is smoke-tested by smokeTestEndpoint.`);
  const ref = loraRef(event.lora.name, event.lora.version);
  const requests = sharedSmokeRequests(event);
  const started = now();
  // The version first: a refusal of the LoRA is known before a second request is spent.
  const withLora = await ask(runtime, event, requests.withLora, true);
  const used = usedLoras(withLora, event, ref);
  const withoutLora = await ask(runtime, event, requests.withoutLora, false);
  usedLoras(withoutLora, event, undefined);
  const milliseconds = now() - started;
  const smoke = await judgeSmoke(withoutLora.image, withLora.image, storeFor(event.trainingJobName), {
    what: `LoRA ${ref} on the shared endpoint ${event.endpointName}`,
    request: requests.withoutLora,
    fault: sharedEndpointUnavailable,
    milliseconds,
  });
  return { endpointName: event.endpointName, inferenceComponentName: event.inferenceComponentName, lora: ref, ...used, milliseconds, smoke };
}
