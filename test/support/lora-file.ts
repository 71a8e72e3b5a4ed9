/**
 * A minimal kohya-ss LoRA file, as sd-scripts saves one (safetensors: an 8-byte little-endian header
 * length, the JSON header, then the tensors' bytes): one U-Net and one text-encoder module of the
 * family's layout, fp16 zeros. Small enough to upload per test; real enough for the registry's
 * header checks (family, components, rank).
 */

/** One module of each component, in each family's key layout and input width. */
const MODULES = {
  sd15: [
    ['lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q', 320],
    ['lora_te_text_model_encoder_layers_0_self_attn_q_proj', 768],
  ],
  sdxl: [
    ['lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q', 640],
    ['lora_te1_text_model_encoder_layers_0_self_attn_q_proj', 768],
    ['lora_te2_text_model_encoder_layers_0_self_attn_q_proj', 1280],
  ],
} as const;

const FP16_BYTES = 2;

export function kohyaLoraFile(modelType: keyof typeof MODULES = 'sd15', rank = 4): Buffer {
  const header: Record<string, unknown> = { __metadata__: { ss_network_module: 'networks.lora', ss_network_dim: String(rank) } };
  let offset = 0;
  const tensor = (name: string, shape: number[]) => {
    const bytes = shape.reduce((a, b) => a * b, 1) * FP16_BYTES;
    header[name] = { dtype: 'F16', shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  };
  for (const [module, width] of MODULES[modelType]) {
    tensor(`${module}.alpha`, []);
    tensor(`${module}.lora_down.weight`, [rank, width]);
    tensor(`${module}.lora_up.weight`, [width, rank]);
  }
  // The header is padded with spaces to a multiple of 8 bytes, as the safetensors writer does.
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([length, Buffer.from(json, 'utf8'), Buffer.alloc(offset)]);
}
