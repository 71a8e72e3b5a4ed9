import type { RegisteredLora } from '../shared/contract';
import type { ModelType } from '../shared/models';
import type { SafetensorsHeader } from '../shared/safetensors';

/**
 * What a kohya-ss LoRA's safetensors header says: the model family it was trained for, the
 * components it adapts and its rank. The key layouts are kohya-ss sd-scripts' (networks/lora.py),
 * as the server reads them (containers/inference/lora_server/lora_file.py):
 * - SD 1.5: text encoder `lora_te_…`; U-Net in diffusers block names (`down_blocks`, `mid_block`, `up_blocks`).
 * - SDXL: text encoders `lora_te1_…`, `lora_te2_…`; U-Net in SGM block names (`input_blocks`, `middle_block`, `output_blocks`).
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

/** Module prefixes, each with the component it adapts and the family its layout belongs to. */
const PREFIXES: ReadonlyArray<{ prefix: string; component: LoraComponent; family: ModelType }> = [
  { prefix: 'lora_te1_', component: 'text_encoder', family: 'sdxl' },
  { prefix: 'lora_te2_', component: 'text_encoder_2', family: 'sdxl' },
  { prefix: 'lora_te_', component: 'text_encoder', family: 'sd15' },
  { prefix: 'lora_unet_input_blocks_', component: 'unet', family: 'sdxl' },
  { prefix: 'lora_unet_middle_block_', component: 'unet', family: 'sdxl' },
  { prefix: 'lora_unet_output_blocks_', component: 'unet', family: 'sdxl' },
  { prefix: 'lora_unet_down_blocks_', component: 'unet', family: 'sd15' },
  { prefix: 'lora_unet_mid_block_', component: 'unet', family: 'sd15' },
  { prefix: 'lora_unet_up_blocks_', component: 'unet', family: 'sd15' },
];

const LABEL: Record<ModelType, string> = { sd15: 'SD 1.5', sdxl: 'SDXL' };
const COMPONENT_ORDER: LoraComponent[] = ['unet', 'text_encoder', 'text_encoder_2'];

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

  const families = new Set<ModelType>();
  const components = new Set<LoraComponent>();
  for (const name of downs) {
    const layout = PREFIXES.find(({ prefix }) => name.startsWith(prefix));
    if (layout === undefined) throw new Error(`its module ${name} has neither an SD 1.5 nor an SDXL layout`);
    families.add(layout.family);
    components.add(layout.component);
  }
  if (families.size > 1) throw new Error('it mixes SD 1.5 and SDXL module names: it is not the LoRA of one model');
  const [found] = families;
  if (found !== expected) {
    throw new Error(`it is an ${LABEL[found]} LoRA, but the run's modelType is ${expected} (${LABEL[expected]}); the training output does not match the run`);
  }
  const rank = Math.max(...downs.map((name) => header.tensors.get(name)?.shape[0] ?? 0));
  if (!(rank > 0)) throw new Error('its lora_down weights have no rank (an empty first dimension)');
  return { modelType: found, components: COMPONENT_ORDER.filter((c) => components.has(c)), rank };
}
