import type { ModelType } from '../shared/models';
import type { Table } from './dataset-config';

/**
 * One [[datasets]] table's bucketing settings as the container resolves them (dataset_check.py
 * bucket_settings, buckets.py), the refusals it makes of them, and whether an image is too small
 * for a bucket: only that is needed before training, not kohya's whole bucket plan.
 */

export interface BucketSettings {
  readonly resolution: readonly [number, number];
  readonly enableBucket: boolean;
  readonly bucketNoUpscale: boolean;
  readonly minBucketReso: number;
  readonly maxBucketReso: number;
  readonly bucketResoSteps: number;
}

/**
 * kohya asserts bucket_reso_steps is a multiple of this (assert_extra_args: train_network.py 64, sdxl_train_network.py 32;
 * flux_train_network.py runs train_network.py's check (64) before its own (32), so FLUX.1 needs 64).
 */
const BUCKET_RESO_MULTIPLE: Readonly<Record<ModelType, number>> = { sd15: 64, sdxl: 32, flux1: 64 };

/** A value as kohya resolves it: the first table that sets it, else the default. */
export function setting(key: string, tables: readonly Table[], fallback: unknown): unknown {
  for (const table of tables) if (table[key] !== undefined && table[key] !== null) return table[key];
  return fallback;
}

export function bucketSettings(dataset: Table, general: Table, resolution: number): BucketSettings {
  const tables = [dataset, general];
  const size = setting('resolution', tables, resolution);
  const sides = Array.isArray(size) ? [Number(size[0]), Number(size[size.length - 1])] : [Number(size), Number(size)];
  return {
    resolution: [sides[0], sides[1]],
    enableBucket: Boolean(setting('enable_bucket', tables, false)),
    bucketNoUpscale: Boolean(setting('bucket_no_upscale', tables, false)),
    minBucketReso: Number(setting('min_bucket_reso', tables, 256)),
    maxBucketReso: Number(setting('max_bucket_reso', tables, 1024)),
    bucketResoSteps: Number(setting('bucket_reso_steps', tables, 64)),
  };
}

/** _refuse_bucket_steps and _refuse_bucket_range: the settings kohya refuses, or that divide by zero. */
export function bucketProblems(settings: BucketSettings, where: string, modelType: ModelType): string[] {
  if (!settings.enableBucket) return [];
  const steps = settings.bucketResoSteps;
  const multiple = BUCKET_RESO_MULTIPLE[modelType];
  if (steps % multiple !== 0) {
    return [`${where} has bucket_reso_steps = ${steps}, which kohya refuses for ${modelType}: it must be a multiple of ${multiple} (64 for sd15 and flux1, 32 for sdxl)`];
  }
  const low = settings.minBucketReso - (settings.minBucketReso % steps);
  const high = settings.maxBucketReso + (((-settings.maxBucketReso % steps) + steps) % steps);
  const [shorter, longer] = [Math.min(...settings.resolution), Math.max(...settings.resolution)];
  if (low < steps && !settings.bucketNoUpscale) {
    return [`${where} has min_bucket_reso = ${settings.minBucketReso}, below one bucket step (${steps}): kohya's smallest bucket would be 0 px. Raise it to at least ${steps}, or set bucket_no_upscale = true`];
  }
  if (shorter < low) return [`${where} has min_bucket_reso = ${settings.minBucketReso}, larger than the resolution's shorter side (${shorter}), which kohya refuses. Lower it`];
  if (longer > high) return [`${where} has max_bucket_reso = ${settings.maxBucketReso}, smaller than the resolution's longer side (${longer}), which kohya refuses. Raise it`];
  return [];
}

/** Python's int(value + 0.5) cut down to the step. */
function roundToSteps(value: number, steps: number): number {
  const rounded = Math.trunc(value + 0.5);
  return rounded - (rounded % steps);
}

/**
 * too_small_for_bucket: with bucket_no_upscale an image smaller than a bucket step gets a bucket of
 * 0 px (kohya then divides by it); a division by zero on the way counts the same. Without buckets,
 * or with upscaling, every image fits a bucket.
 */
export function tooSmallForBucket(settings: BucketSettings, width: number, height: number): boolean {
  if (!settings.enableBucket || !settings.bucketNoUpscale) return false;
  const steps = settings.bucketResoSteps;
  const maxArea = settings.resolution[0] * settings.resolution[1];
  let [w, h] = [width, height];
  if (w * h > maxArea) {
    const aspect = w / h;
    const shrunkWidth = Math.sqrt(maxArea * aspect);
    const byWidth = roundToSteps(shrunkWidth, steps);
    const byWidthHeight = roundToSteps(byWidth / aspect, steps);
    const byHeight = roundToSteps(maxArea / shrunkWidth, steps);
    if (byWidthHeight === 0 || byHeight === 0) return true; // ZeroDivisionError in kohya's arithmetic too
    const byWidthError = Math.abs(byWidth / byWidthHeight - aspect);
    const byHeightError = Math.abs(roundToSteps(byHeight * aspect, steps) / byHeight - aspect);
    [w, h] = byWidthError < byHeightError ? [byWidth, Math.trunc(byWidth / aspect + 0.5)] : [Math.trunc(byHeight * aspect + 0.5), byHeight];
  }
  return w - (w % steps) === 0 || h - (h % steps) === 0;
}
