import { DATASET_TOML } from './dataset';
import type { DatasetConfig, Table } from './dataset-config';
import type { PreflightProblem } from './preflight';

/**
 * The dataset.toml augmentations the training container refuses next to a caching hyperparameter
 * (containers/training/lora_trainer/main.py check_inputs, after the dataset checks): kohya encodes
 * cached images or captions once, so an augmentation that changes them per step cannot apply.
 * cache_latents is on by default, so `color_aug = true` alone would fail the paid job.
 */

/** main.py _CAPTION_AUGMENTATIONS and _IMAGE_AUGMENTATIONS. */
const CACHED: ReadonlyArray<{ readonly setting: 'cacheLatents' | 'cacheTextEncoderOutputs'; readonly keys: readonly string[]; readonly why: string }> = [
  { setting: 'cacheTextEncoderOutputs', keys: ['shuffle_caption', 'caption_dropout_rate', 'caption_tag_dropout_rate', 'token_warmup_step'], why: 'captions are encoded once, so they cannot change per step' },
  { setting: 'cacheLatents', keys: ['color_aug', 'random_crop'], why: 'images are encoded once, so they cannot change per step' },
];

const HYPERPARAMETER = { cacheLatents: 'cache_latents', cacheTextEncoderOutputs: 'cache_text_encoder_outputs' } as const;

export interface CacheSettings {
  readonly cacheLatents: boolean;
  readonly cacheTextEncoderOutputs: boolean;
}

/** The container's refusal (it stops at the first), or none. */
export function cacheProblems(config: DatasetConfig, cache: CacheSettings): PreflightProblem[] {
  const tables: Table[] = [config.general, ...config.datasets.flatMap((dataset) => [dataset.table, ...dataset.subsets.map((subset) => subset.table)])];
  for (const { setting, keys, why } of CACHED) {
    if (!cache[setting]) continue;
    const used = keys.filter((key) => tables.some((table) => pythonTruthy(table[key]))).sort();
    if (used.length === 0) continue;
    const name = HYPERPARAMETER[setting];
    const message = `${name} cannot be combined with ${used.join(', ')} in ${DATASET_TOML} (${why}); remove one or the other (the hyperparameter ${name}=false)`;
    return [{ kind: 'cache-combination', files: [DATASET_TOML], message }];
  }
  return [];
}

/** Python's truth of a TOML value (the container tests `table.get(key)`): 0, '' and [] are false. */
function pythonTruthy(value: unknown): boolean {
  if (Array.isArray(value)) return value.length > 0;
  return Boolean(value);
}
