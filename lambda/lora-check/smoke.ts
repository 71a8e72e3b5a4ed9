import type { SmokeResult } from '../shared/contract';
import { type FluxVariant, fluxVariantOfHubId } from '../shared/flux-files';
import type { ModelType } from '../shared/models';
import { isRecord, nonEmptyString } from '../shared/run-info';
import { smokeTestFailed } from './errors';
import { imageDifference, loraHadEffect, MIN_MEAN_ABSOLUTE_DIFFERENCE, sideBySide } from './image-difference';
import { decodePng, encodePng, type RawImage } from './png';

/**
 * The smoke test: the same request twice, without the LoRA and with it, as lossless PNGs; both
 * images and a side-by-side are stored, then judged. Identical images (within the threshold of
 * image-difference.ts) mean the LoRA had no effect: SmokeTestFailed.
 */

/** A fixed seed: the two images differ only by the LoRA. */
export const SMOKE_SEED = 1234;

/** What a smoke request sets besides the prompt and seed. */
export interface SmokeSettings {
  readonly side: number;
  readonly steps: number;
  /** Sent only where it means something: FLUX.1-dev's distilled guidance. */
  readonly guidanceScale?: number;
}

/**
 * Each family's usual side and steps, in a few GPU seconds. FLUX.1-schnell: its distilled 4 steps at 1024 px;
 * dev: its reference 28 steps and guidance 3.5, at 768 px for a margin within SageMaker's 60 s invocation
 * limit (unmeasured on an L40S). An S3 FLUX.1, whose variant is unknown here, gets dev's steps and side.
 */
const SMOKE_SETTINGS = {
  sd15: { side: 512, steps: 20 },
  sdxl: { side: 1024, steps: 20 },
  flux1: { side: 768, steps: 28 },
} as const satisfies Record<ModelType, SmokeSettings>;
const FLUX_SMOKE: Readonly<Record<FluxVariant, SmokeSettings>> = {
  schnell: { side: 1024, steps: 4 },
  dev: { side: 768, steps: 28, guidanceScale: 3.5 },
};

/** The smoke settings of a model type on a base model (a Hub id names the FLUX.1 variant). */
export function smokeSettings(modelType: ModelType, baseModel?: string): SmokeSettings {
  const variant = modelType === 'flux1' && baseModel !== undefined ? fluxVariantOfHubId(baseModel) : undefined;
  return variant !== undefined ? FLUX_SMOKE[variant] : SMOKE_SETTINGS[modelType];
}

/** Used when the training rendered no samples; otherwise the first sample prompt is (it is the dataset's). */
export const DEFAULT_SMOKE_PROMPT = 'a detailed photograph';
/** The server's limit on a prompt (containers/inference/lora_server/validation.py, MAX_PROMPT_CHARS). */
const MAX_PROMPT_CHARS = 2000;

export const SMOKE_FILES = { withoutLora: 'without-lora.png', withLora: 'with-lora.png', sideBySide: 'side-by-side.png' } as const;
export type SmokeFile = (typeof SMOKE_FILES)[keyof typeof SMOKE_FILES];

/** Where the three images go: `put` stores one and answers its key. */
export interface SmokeStore {
  readonly bucket: string;
  put(file: SmokeFile, png: Uint8Array): Promise<string>;
}

/** The first sample prompt Publish samples found (its answer may also be null or an error), else the default. */
export function smokePrompt(samples: unknown): string {
  const prompt = isRecord(samples) ? nonEmptyString(samples.prompt) : undefined;
  return prompt !== undefined && prompt.length <= MAX_PROMPT_CHARS ? prompt : DEFAULT_SMOKE_PROMPT;
}

/** The request both images are made with; the caller adds what names (or scales) the LoRA. PNG: lossless, so only the model changes pixels. */
export function smokeRequest(modelType: ModelType, prompt: string, baseModel?: string): Record<string, unknown> {
  const { side, steps, guidanceScale } = smokeSettings(modelType, baseModel);
  const guidance = guidanceScale !== undefined ? { guidance_scale: guidanceScale } : {};
  return { prompt, num_inference_steps: steps, ...guidance, width: side, height: side, seed: SMOKE_SEED, output_format: 'png' };
}

export interface SmokeContext {
  /** e.g. "LoRA pokemon@3 on the shared endpoint lora-shared-sd15", for the Cause. */
  readonly what: string;
  readonly request: Record<string, unknown>;
  /** The error for an answer that is not a readable PNG: the endpoint's fault. */
  readonly fault: (message: string) => Error;
  readonly milliseconds: number;
}

function decoded(png: Uint8Array, which: string, context: SmokeContext): RawImage {
  try {
    return decodePng(png);
  } catch (error) {
    throw context.fault(`The smoke test's image ${which} from ${context.what} is not a readable 8-bit PNG: ${(error as Error).message}.`);
  }
}

const round = (value: number, digits: number) => Number(value.toFixed(digits));

/** Stores both images and the side-by-side (even when the test fails: they show why), then judges them. */
export async function judgeSmoke(withoutLora: Uint8Array, withLora: Uint8Array, store: SmokeStore, context: SmokeContext): Promise<SmokeResult> {
  const without = decoded(withoutLora, 'without the LoRA', context);
  const withIt = decoded(withLora, 'with the LoRA', context);
  if (without.width !== withIt.width || without.height !== withIt.height) {
    throw context.fault(`The smoke test's two images from ${context.what} differ in size (${without.width} × ${without.height} and ${withIt.width} × ${withIt.height}) for the same request.`);
  }
  const keys = {
    withoutLora: await store.put(SMOKE_FILES.withoutLora, withoutLora),
    withLora: await store.put(SMOKE_FILES.withLora, withLora),
    sideBySide: await store.put(SMOKE_FILES.sideBySide, encodePng(sideBySide(without, withIt))),
  };
  const difference = imageDifference(without, withIt);
  const steps = Number(context.request.num_inference_steps);
  const result: SmokeResult = {
    bucket: store.bucket,
    ...keys,
    prompt: String(context.request.prompt),
    seed: SMOKE_SEED,
    width: without.width,
    height: without.height,
    steps,
    meanAbsoluteDifference: round(difference.meanAbsoluteDifference, 3),
    changedPixelShare: round(difference.changedPixelShare, 4),
    minMeanAbsoluteDifference: MIN_MEAN_ABSOLUTE_DIFFERENCE,
    milliseconds: context.milliseconds,
  };
  if (!loraHadEffect(difference)) {
    const folder = `s3://${store.bucket}/${keys.sideBySide.slice(0, keys.sideBySide.lastIndexOf('/') + 1)}`;
    throw smokeTestFailed(
      `The LoRA had no effect: ${context.what} gave the same image without and with it (same prompt, seed ${SMOKE_SEED}, ${steps} steps): ` +
        `a mean difference of ${result.meanAbsoluteDifference} levels in 255 (the threshold is ${MIN_MEAN_ABSOLUTE_DIFFERENCE}), ` +
        `${round(result.changedPixelShare * 100, 2)} % of pixels changed. The images are in ${folder}. ` +
        'A kohya LoRA whose module names match no layer of the base model loads and does nothing: check that it was trained on this base model.',
    );
  }
  return result;
}
