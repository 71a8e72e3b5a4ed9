import { InvokeEndpointCommand, type SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { z } from 'zod';
import type { LoraCheckEvent, LoraCheckResult } from '../shared/contract';
import { LORA_NAME, loraRef } from '../shared/lora-name';
import type { ModelType } from '../shared/models';
import { isRecord, nonEmptyString, parseJson } from '../shared/run-info';
import { loraCheckFailed, sharedEndpointBusy, sharedEndpointUnavailable, sharedEndpointWarming } from './errors';

/**
 * One request to the shared endpoint's inference component with the new version, before it is
 * made current: the server must fetch it from S3, verify it and generate with it. The request is
 * the cheapest the server accepts: the family's smallest side, 2 steps, one JPEG, a fixed seed.
 */

/** The server's smallest side per family (containers/inference/lora_server/validation.py, SIDES). */
export const SMALLEST_SIDE: Readonly<Record<ModelType, number>> = { sd15: 256, sdxl: 512 };
export const CHECK_STEPS = 2;
export const CHECK_SEED = 0;
const CHECK_PROMPT = 'a test image';

const eventSchema = z.object({
  endpointName: z.string().min(1),
  inferenceComponentName: z.string().min(1),
  lora: z.object({ name: z.string().regex(LORA_NAME), version: z.number().int().min(1) }),
  modelType: z.enum(['sd15', 'sdxl']),
});

export function parseCheckEvent(event: unknown): LoraCheckEvent {
  const result = eventSchema.safeParse(event);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `${issue.path.join('.') || '(event)'}: ${issue.message}`);
    // A definition bug, not the endpoint's answer: not a LoraCheckFailed, so the message is not mistaken for one.
    throw new Error(`The LoRA check's event is invalid (${problems.join('; ')}); expected {endpointName, inferenceComponentName, lora: {name, version}, modelType}.`);
  }
  return result.data;
}

export function checkRequest(event: LoraCheckEvent): Record<string, unknown> {
  const side = SMALLEST_SIDE[event.modelType];
  return {
    prompt: CHECK_PROMPT,
    num_inference_steps: CHECK_STEPS,
    width: side,
    height: side,
    seed: CHECK_SEED,
    output_format: 'jpeg',
    lora: loraRef(event.lora.name, event.lora.version),
  };
}

/** SageMaker's answer while the inference component has no copy (scaled to zero, or scaling out). */
const NO_CAPACITY = /no capacity/i;

function errorFields(error: unknown): Record<string, unknown> {
  return isRecord(error) ? error : {};
}

/** The container's status in a ModelError, when SageMaker gives it. */
function containerStatus(fields: Record<string, unknown>): number | undefined {
  return typeof fields.OriginalStatusCode === 'number' ? fields.OriginalStatusCode : undefined;
}

/** What the container said in a ModelError: its status and its JSON `error` (the server's format), else the raw text. */
function containerAnswer(fields: Record<string, unknown>): string {
  const status = containerStatus(fields) ?? 'unknown';
  const original = nonEmptyString(fields.OriginalMessage);
  const parsed = parseJson(original);
  const message = isRecord(parsed) && nonEmptyString(parsed.error) ? `${String(parsed.error)}${parsed.field ? ` (field ${String(parsed.field)})` : ''}` : original;
  const logs = nonEmptyString(fields.LogStreamArn);
  return `the server answered ${status}: ${message ?? 'no message'}${logs ? ` (logs: ${logs})` : ''}`;
}

/**
 * The shared server's answers about the LoRA itself (containers/inference/README.md, "Shared
 * mode"): its file refused (400: another family, a bad header, a SHA-256 mismatch), or the version
 * retired or failed meanwhile (410). Only these reject the version. A 404 is not among them: the
 * version was registered a moment before, so a server that cannot find it or read its file (S3
 * answers a role or key mistake like a missing object) is the deployment's fault, not the LoRA's.
 */
export const REFUSED_STATUSES: readonly number[] = [400, 410];
/** The registry, S3 or the GPU busy (503), or a download too slow for the request (504); 429 should a proxy send it: try again later. */
export const BUSY_STATUSES: readonly number[] = [429, 503, 504];

/**
 * An InvokeEndpoint error as the state should see it: warming or busy (retried), a refusal of the
 * LoRA (LoraCheckFailed), a fault of the deployment (SharedEndpointUnavailable: a 500, an unknown
 * component), or as it is (throttling and SageMaker's faults, retried briefly).
 */
export function classify(error: unknown, event: LoraCheckEvent): unknown {
  const name = error instanceof Error ? error.name : '';
  const message = error instanceof Error ? error.message : String(error);
  const target = `inference component ${event.inferenceComponentName} of endpoint ${event.endpointName}`;
  const ref = loraRef(event.lora.name, event.lora.version);
  if ((name === 'ValidationError' && NO_CAPACITY.test(message)) || name === 'ModelNotReadyException') {
    return sharedEndpointWarming(`The ${target} has no copy ready to serve (${name}: ${message}); it is scaling out from zero.`);
  }
  if (name === 'ModelError') {
    const fields = errorFields(error);
    const status = containerStatus(fields);
    const what = `Generating with LoRA ${ref} on the ${target} failed: ${containerAnswer(fields)}.`;
    if (status !== undefined && REFUSED_STATUSES.includes(status)) return loraCheckFailed(what);
    if (status !== undefined && BUSY_STATUSES.includes(status)) return sharedEndpointBusy(what);
    return sharedEndpointUnavailable(what);
  }
  // SageMaker refused the request before the server saw it (a missing component, say): the deployment's fault.
  if (name === 'ValidationError') return sharedEndpointUnavailable(`SageMaker refused the check request for LoRA ${ref} to the ${target} (ValidationError): ${message}`);
  return error;
}

/** The response's `loras` must name exactly this version: the server used it, and only it; anything else is a server fault, not the LoRA's. */
function usedLoras(body: Uint8Array | undefined, event: LoraCheckEvent): { sha256?: string } {
  const ref = loraRef(event.lora.name, event.lora.version);
  const text = body === undefined ? '' : Buffer.from(body).toString('utf8');
  const parsed = parseJson(text);
  if (!isRecord(parsed) || !Array.isArray(parsed.loras)) {
    throw sharedEndpointUnavailable(`The shared endpoint answered the check of ${ref} with 200 but no "loras" list (${text.slice(0, 200) || 'an empty body'}); is it running the shared server (SERVING_MODE=shared)?`);
  }
  const used = parsed.loras.filter(isRecord).map((l) => `${String(l.name)}@${String(l.version)}`);
  if (parsed.loras.length !== 1 || used[0] !== ref) {
    throw sharedEndpointUnavailable(`The shared endpoint answered the check of ${ref} with 200 but used ${used.length > 0 ? used.join(', ') : 'no LoRA'} instead of ${ref} alone.`);
  }
  const sha256 = (parsed.loras[0] as Record<string, unknown>).sha256;
  return typeof sha256 === 'string' ? { sha256 } : {};
}

export async function checkLora(raw: unknown, runtime: SageMakerRuntimeClient, now: () => number = Date.now): Promise<LoraCheckResult> {
  const event = parseCheckEvent(raw);
  const started = now();
  let response;
  try {
    response = await runtime.send(
      new InvokeEndpointCommand({
        EndpointName: event.endpointName,
        InferenceComponentName: event.inferenceComponentName,
        ContentType: 'application/json',
        Accept: 'application/json',
        Body: Buffer.from(JSON.stringify(checkRequest(event))),
      }),
    );
  } catch (error) {
    throw classify(error, event);
  }
  const used = usedLoras(response.Body, event);
  return {
    endpointName: event.endpointName,
    inferenceComponentName: event.inferenceComponentName,
    lora: loraRef(event.lora.name, event.lora.version),
    ...used,
    milliseconds: now() - started,
  };
}
