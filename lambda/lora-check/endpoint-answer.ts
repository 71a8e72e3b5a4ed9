import { InvokeEndpointCommand, type SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { isRecord, nonEmptyString, parseJson } from '../shared/run-info';

/**
 * One JSON request to an endpoint (and inference component) and what the server answers: its
 * `images` (base64, the first is used) and, from the shared server, the `loras` it used. SageMaker's
 * errors for the request are classified by the caller (check.ts, dedicated.ts), with the helpers below.
 */

export interface EndpointTarget {
  readonly endpointName: string;
  readonly inferenceComponentName?: string;
}

export interface EndpointAnswer {
  /** The parsed JSON body. */
  readonly body: Record<string, unknown>;
  /** The first image's bytes. */
  readonly image: Uint8Array;
  /** The raw text (its beginning quoted in errors). */
  readonly text: string;
}

/**
 * The request's answer. A SageMaker error is thrown as `classify` reads it (each mode its own);
 * `fault` makes the error for a 200 that is not the server's answer, `what` naming the endpoint.
 */
export async function askEndpoint(
  runtime: SageMakerRuntimeClient,
  target: EndpointTarget,
  request: Record<string, unknown>,
  classify: (error: unknown) => unknown,
  what: string,
  fault: (message: string) => Error,
): Promise<EndpointAnswer> {
  let response;
  try {
    response = await runtime.send(
      new InvokeEndpointCommand({
        EndpointName: target.endpointName,
        ...(target.inferenceComponentName !== undefined ? { InferenceComponentName: target.inferenceComponentName } : {}),
        ContentType: 'application/json',
        Accept: 'application/json',
        Body: Buffer.from(JSON.stringify(request)),
      }),
    );
  } catch (error) {
    throw classify(error);
  }
  return readAnswer(response.Body, what, fault);
}

/** The answer's JSON body and first image; `fault` makes the error for an answer that is not the server's. */
function readAnswer(raw: Uint8Array | undefined, what: string, fault: (message: string) => Error): EndpointAnswer {
  const text = raw === undefined ? '' : Buffer.from(raw).toString('utf8');
  const body = parseJson(text);
  const first = isRecord(body) && Array.isArray(body.images) ? nonEmptyString(body.images[0]) : undefined;
  if (!isRecord(body) || first === undefined) {
    throw fault(`${what} answered 200 without an image in "images" (${text.slice(0, 200) || 'an empty body'}); is it running this pipeline's inference server?`);
  }
  return { body, image: Buffer.from(first, 'base64'), text };
}

export function errorFields(error: unknown): Record<string, unknown> {
  return isRecord(error) ? error : {};
}

/** The container's status in a ModelError, when SageMaker gives it. */
export function containerStatus(fields: Record<string, unknown>): number | undefined {
  return typeof fields.OriginalStatusCode === 'number' ? fields.OriginalStatusCode : undefined;
}

/** What the container said in a ModelError: its status and its JSON `error` (the server's format), else the raw text. */
export function containerAnswer(fields: Record<string, unknown>): string {
  const status = containerStatus(fields) ?? 'unknown';
  const original = nonEmptyString(fields.OriginalMessage);
  const parsed = parseJson(original);
  const message = isRecord(parsed) && nonEmptyString(parsed.error) ? `${String(parsed.error)}${parsed.field ? ` (field ${String(parsed.field)})` : ''}` : original;
  const logs = nonEmptyString(fields.LogStreamArn);
  return `the server answered ${status}: ${message ?? 'no message'}${logs ? ` (logs: ${logs})` : ''}`;
}

/** SageMaker's answer while an endpoint or inference component has no copy (scaled to zero, or scaling out). */
export const NO_CAPACITY = /no capacity/i;

/** The registry, S3 or the GPU busy (503), or a download too slow for the request (504); 429 should a proxy send it: try again later. */
export const BUSY_STATUSES: readonly number[] = [429, 503, 504];

/** Whether SageMaker says the endpoint cannot serve yet (no copy, model not ready). */
export function isWarming(error: unknown): boolean {
  const name = error instanceof Error ? error.name : '';
  const message = error instanceof Error ? error.message : String(error);
  return (name === 'ValidationError' && NO_CAPACITY.test(message)) || name === 'ModelNotReadyException';
}
