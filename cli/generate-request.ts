import { InvokeEndpointCommand, type SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';

/**
 * One image from an endpoint: the request body of the inference server
 * (containers/inference/README.md, "Request" and "Shared mode"), sent with InvokeEndpoint and
 * answered as JSON, so that the seed and the LoRA versions used come back with the image.
 */

export interface GenerateParameters {
  readonly prompt: string;
  readonly negativePrompt?: string;
  readonly seed?: number;
  readonly steps?: number;
  readonly width?: number;
  readonly height?: number;
  readonly guidanceScale?: number;
  /** The LoRA's strength, 0-2. */
  readonly loraScale?: number;
  readonly outputFormat: 'png' | 'jpeg';
}

/** Where the request goes: the shared endpoint's inference component naming a LoRA, or a dedicated endpoint (its LoRA fused). */
export type GenerateTarget =
  | { readonly mode: 'shared'; readonly endpointName: string; readonly inferenceComponentName: string; readonly lora: string }
  | { readonly mode: 'dedicated'; readonly endpointName: string };

export interface GeneratedImage {
  readonly image: Buffer;
  readonly seed?: number;
  /** The versions the shared server used, e.g. [{name: 'pokemon', version: 3, scale: 1}]; absent from a dedicated server. */
  readonly loras?: ReadonlyArray<{ readonly name: string; readonly version: number; readonly scale?: number; readonly sha256?: string }>;
  readonly timings?: Record<string, number>;
}

/** The server refused the request, or failed: its status and its JSON `error` and `field`. */
export class EndpointRefused extends Error {
  override readonly name = 'EndpointRefused';
  constructor(
    readonly status: number | undefined,
    readonly field: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

/** The JSON body: only the fields given, so that the server's defaults apply to the rest. */
export function requestBody(parameters: GenerateParameters, target: GenerateTarget): Record<string, unknown> {
  const body: Record<string, unknown> = { prompt: parameters.prompt, num_images: 1, output_format: parameters.outputFormat };
  const optional: Array<[string, unknown]> = [
    ['negative_prompt', parameters.negativePrompt],
    ['seed', parameters.seed],
    ['num_inference_steps', parameters.steps],
    ['width', parameters.width],
    ['height', parameters.height],
    ['guidance_scale', parameters.guidanceScale],
    ['lora_scale', parameters.loraScale],
  ];
  for (const [key, value] of optional) if (value !== undefined) body[key] = value;
  if (target.mode === 'shared') body.lora = target.lora;
  return body;
}

/** A ModelError's container answer, `{"error", "field"}`, else its raw text. */
function refusal(error: Error & { OriginalStatusCode?: number; OriginalMessage?: string }): EndpointRefused {
  const status = error.OriginalStatusCode;
  const text = error.OriginalMessage ?? error.message;
  try {
    const parsed = JSON.parse(text) as { error?: unknown; field?: unknown };
    if (typeof parsed.error === 'string') return new EndpointRefused(status, typeof parsed.field === 'string' ? parsed.field : undefined, parsed.error);
  } catch {
    // Not the server's JSON (a proxy's page, a crash): shown as it is.
  }
  return new EndpointRefused(status, undefined, text);
}

function parseAnswer(body: Uint8Array | undefined): GeneratedImage {
  const text = body !== undefined ? Buffer.from(body).toString('utf8') : '';
  let answer: { images?: unknown; seed?: unknown; loras?: unknown; timings?: unknown };
  try {
    answer = JSON.parse(text) as typeof answer;
  } catch {
    throw new EndpointRefused(200, undefined, `The endpoint answered with something that is not the inference server's JSON: ${text.slice(0, 200)}`);
  }
  const first = Array.isArray(answer.images) ? answer.images[0] : undefined;
  if (typeof first !== 'string') throw new EndpointRefused(200, undefined, 'The endpoint answered without an image (no "images" in its JSON).');
  return {
    image: Buffer.from(first, 'base64'),
    ...(typeof answer.seed === 'number' ? { seed: answer.seed } : {}),
    ...(Array.isArray(answer.loras) ? { loras: answer.loras as GeneratedImage['loras'] } : {}),
    ...(typeof answer.timings === 'object' && answer.timings !== null ? { timings: answer.timings as Record<string, number> } : {}),
  };
}

export async function generate(runtime: SageMakerRuntimeClient, target: GenerateTarget, parameters: GenerateParameters): Promise<GeneratedImage> {
  try {
    const answer = await runtime.send(
      new InvokeEndpointCommand({
        EndpointName: target.endpointName,
        ...(target.mode === 'shared' ? { InferenceComponentName: target.inferenceComponentName } : {}),
        ContentType: 'application/json',
        Accept: 'application/json',
        Body: Buffer.from(JSON.stringify(requestBody(parameters, target))),
      }),
    );
    return parseAnswer(answer.Body);
  } catch (error) {
    if (error instanceof Error && error.name === 'ModelError') throw refusal(error);
    throw error;
  }
}
