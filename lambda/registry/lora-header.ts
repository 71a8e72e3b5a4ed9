import type { RegisteredLora } from '../shared/contract';
import { MODEL_TYPES, type ModelType } from '../shared/models';
import type { SafetensorsHeader } from '../shared/safetensors';

/**
 * What a kohya-ss LoRA's safetensors header says: the model family it was trained for, the
 * components it adapts and its rank. The key layouts are kohya-ss sd-scripts' (networks/lora.py),
 * as the server reads them (containers/inference/lora_server/lora_file.py):
 * - SD 1.5: text encoder `lora_te_…`; U-Net in diffusers block names (`down_blocks`, `mid_block`, `up_blocks`).
 * - SDXL: text encoders `lora_te1_…`, `lora_te2_…`; U-Net in SGM block names (`input_blocks`, `middle_block`, `output_blocks`).
 * - FLUX.1 (networks/lora_flux.py): transformer `lora_unet_double_blocks_…`, `lora_unet_single_blocks_…`. Its text
 *   encoders' `lora_te1_…` (CLIP-L), `lora_te3_…` (T5-XXL) and, with its in_dims option, the input layers'
 *   (`lora_unet_img_in`, `…_txt_in`, `…_time_in_…`, `…_vector_in_…`, `…_guidance_in_…`) are told as FLUX.1's,
 *   then refused as the server refuses them (lora_file.py `_check_flux_modules`).
 * Every module has `.lora_down.weight` ([rank, in_features]) and `.lora_up.weight`, usually `.alpha`.
 */

export type LoraComponent = RegisteredLora['components'][number];

export interface LoraFacts {
  readonly modelType: ModelType;
  readonly components: LoraComponent[];
  /** The largest lora_down rank: it bounds the adapter's size (kohya's conv modules may use a smaller one). */
  readonly rank: number;
}

const SUFFIXES = ['.lora_down.weight', '.lora_up.weight', '.alpha'];

/**
 * Module prefixes, each with the component it adapts and the families whose layout has it. kohya's
 * FLUX network (networks/lora_flux.py) names CLIP-L `lora_te1_` as SDXL's first encoder is named,
 * so that prefix alone does not tell the family: the LoRA's other modules do.
 */
const PREFIXES: ReadonlyArray<{ prefix: string; component: LoraComponent; families: readonly ModelType[] }> = [
  { prefix: 'lora_te1_', component: 'text_encoder', families: ['sdxl', 'flux1'] },
  { prefix: 'lora_te2_', component: 'text_encoder_2', families: ['sdxl'] },
  { prefix: 'lora_te3_', component: 'text_encoder_2', families: ['flux1'] },
  { prefix: 'lora_te_', component: 'text_encoder', families: ['sd15'] },
  { prefix: 'lora_unet_input_blocks_', component: 'unet', families: ['sdxl'] },
  { prefix: 'lora_unet_middle_block_', component: 'unet', families: ['sdxl'] },
  { prefix: 'lora_unet_output_blocks_', component: 'unet', families: ['sdxl'] },
  { prefix: 'lora_unet_down_blocks_', component: 'unet', families: ['sd15'] },
  { prefix: 'lora_unet_mid_block_', component: 'unet', families: ['sd15'] },
  { prefix: 'lora_unet_up_blocks_', component: 'unet', families: ['sd15'] },
  // FLUX.1's transformer: its double-stream and single-stream blocks (kohya keeps the "unet" prefix for ComfyUI).
  { prefix: 'lora_unet_double_blocks_', component: 'transformer', families: ['flux1'] },
  { prefix: 'lora_unet_single_blocks_', component: 'transformer', families: ['flux1'] },
  // Its input layers, which lora_flux.py adapts with its in_dims option (refused below, as the server refuses them).
  { prefix: 'lora_unet_img_in', component: 'transformer', families: ['flux1'] },
  { prefix: 'lora_unet_txt_in', component: 'transformer', families: ['flux1'] },
  { prefix: 'lora_unet_time_in_', component: 'transformer', families: ['flux1'] },
  { prefix: 'lora_unet_vector_in_', component: 'transformer', families: ['flux1'] },
  { prefix: 'lora_unet_guidance_in_', component: 'transformer', families: ['flux1'] },
];

/**
 * FLUX.1 modules the server refuses, so the registry refuses them too rather than register a LoRA the
 * shared endpoint answers 400 for. Text encoders (CLIP-L, T5-XXL): this pipeline trains FLUX.1's
 * transformer only (its text-encoder outputs are cached) and diffusers 0.40 loads no T5 LoRA. in_dims
 * input layers: diffusers 0.40's kohya conversion names them outside the transformer and drops them silently.
 */
const FLUX_REFUSED: ReadonlyArray<{ prefixes: readonly string[]; what: string; remedy: string }> = [
  {
    prefixes: ['lora_te1_', 'lora_te3_'],
    what: 'text-encoder modules',
    remedy: 'FLUX.1 LoRAs are served for the transformer only, as this pipeline trains them (network_train_unet_only): retrain without the text encoders',
  },
  {
    prefixes: ['lora_unet_img_in', 'lora_unet_txt_in', 'lora_unet_time_in_', 'lora_unet_vector_in_', 'lora_unet_guidance_in_'],
    what: "kohya's in_dims modules on the input layers",
    remedy: 'diffusers 0.40 drops them without a word when it loads the LoRA: retrain without the in_dims network argument',
  },
];

const LABEL: Record<ModelType, string> = { sd15: 'SD 1.5', sdxl: 'SDXL', flux1: 'FLUX.1' };
const ARTICLE: Record<ModelType, string> = { sd15: 'an', sdxl: 'an', flux1: 'a' };
const COMPONENT_ORDER: LoraComponent[] = ['unet', 'transformer', 'text_encoder', 'text_encoder_2'];

/** The family every module's layout allows (`expected` when it is one of several), or why there is none. */
function familyOf(layouts: ReadonlyArray<{ families: readonly ModelType[] }>, expected: ModelType): ModelType {
  const common = MODEL_TYPES.filter((type) => layouts.every((layout) => layout.families.includes(type)));
  if (common.length === 0) {
    // Named by the layouts only one family has (a shared text-encoder prefix says nothing).
    const seen = MODEL_TYPES.filter((type) => layouts.some((layout) => layout.families.length === 1 && layout.families[0] === type)).map((type) => LABEL[type]);
    throw new Error(`it mixes ${seen.join(' and ')} module names: it is not the LoRA of one model`);
  }
  // Only text-encoder modules that several families name alike: the run's family, if it is one of them.
  return common.includes(expected) ? expected : common[0];
}

/** Facts of the LoRA, or the reason it is not a kohya-ss LoRA of `expected` (thrown as a plain Error for the caller to name). */
export function inspectLora(header: SafetensorsHeader, expected: ModelType): LoraFacts {
  const names = [...header.tensors.keys()];
  if (names.length === 0) throw new Error('it holds no tensors');
  const foreign = names.filter((name) => !name.startsWith('lora_') || !SUFFIXES.some((suffix) => name.endsWith(suffix)));
  if (foreign.length > 0) {
    throw new Error(`it is not a kohya-ss LoRA: ${foreign.length} of ${names.length} tensors are not LoRA weights (first: ${foreign[0]})`);
  }
  const downs = names.filter((name) => name.endsWith('.lora_down.weight'));
  if (downs.length === 0) throw new Error('it has no lora_down weights');

  const layouts = downs.map((name) => {
    const layout = PREFIXES.find(({ prefix }) => name.startsWith(prefix));
    if (layout === undefined) throw new Error(`its module ${name} has no SD 1.5, SDXL or FLUX.1 layout`);
    return layout;
  });
  const components = new Set(layouts.map((layout) => layout.component));
  const found = familyOf(layouts, expected);
  if (found !== expected) {
    throw new Error(`it is ${ARTICLE[found]} ${LABEL[found]} LoRA, but the run's modelType is ${expected} (${LABEL[expected]}); the training output does not match the run`);
  }
  if (found === 'flux1') refuseFluxModules(downs);
  const rank = Math.max(...downs.map((name) => header.tensors.get(name)?.shape[0] ?? 0));
  if (!(rank > 0)) throw new Error('its lora_down weights have no rank (an empty first dimension)');
  return { modelType: found, components: COMPONENT_ORDER.filter((c) => components.has(c)), rank };
}

/** A FLUX.1 LoRA of the transformer's blocks only, as the server serves it (lora_file.py `_check_flux_modules`, in its order). */
function refuseFluxModules(downs: readonly string[]): void {
  for (const { prefixes, what, remedy } of FLUX_REFUSED) {
    const refused = downs.filter((name) => prefixes.some((prefix) => name.startsWith(prefix)));
    if (refused.length > 0) {
      const first = [...refused].sort()[0].replace(/\.lora_down\.weight$/, '');
      throw new Error(`it is a FLUX.1 LoRA with ${refused.length} ${what} (first: ${first}); ${remedy}`);
    }
  }
}
