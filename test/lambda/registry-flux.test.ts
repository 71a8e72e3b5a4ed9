import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { inspectLora } from '../../lambda/registry/lora-header';
import { headerLength, parseHeader, type SafetensorsHeader } from '../../lambda/shared/safetensors';
import { safetensorsFile, sd15Lora, sdxlLora } from '../fixtures/lora-files';
import { IN_CI } from '../support/tools';

/**
 * The registry tells a FLUX.1 LoRA by the module names kohya-ss writes for it: files written here by
 * the pinned sd-scripts' own networks/lora_flux.py (containers/inference/tests/kohya_flux_fixture.py, the
 * script the server's tests use too, on the training environment that `npm test` makes), not hand-typed key names.
 */

const ROOT = path.resolve(__dirname, '..', '..');
const TRAINING_PYTHON = process.env.LORA_TEST_PYTHON_TRAINING ?? path.join(ROOT, '.venv', 'training', 'bin', 'python');
const SD_SCRIPTS = process.env.LORA_TEST_SD_SCRIPTS ?? path.join(ROOT, '.venv', 'training', 'sd-scripts');
const INFERENCE_PYTHON = process.env.LORA_TEST_PYTHON_INFERENCE ?? path.join(ROOT, '.venv', 'inference', 'bin', 'python');
const FIXTURE = path.join(ROOT, 'containers', 'inference', 'tests', 'kohya_flux_fixture.py');
const available = existsSync(TRAINING_PYTHON) && existsSync(INFERENCE_PYTHON) && existsSync(path.join(SD_SCRIPTS, 'networks', 'lora_flux.py'));
if (!available) {
  const reason = `the training or inference environment (${TRAINING_PYTHON}, ${INFERENCE_PYTHON}) or sd-scripts (${SD_SCRIPTS}) is missing: run node test/support/python-envs.mjs`;
  if (IN_CI) throw new Error(`${reason}. CI never skips these tests.`);
  console.warn(`Skipping the kohya FLUX.1 LoRA tests: ${reason}`);
}
const describeKohya = available ? describe : describe.skip;

function header(file: Buffer): SafetensorsHeader {
  return parseHeader(file.subarray(8, 8 + headerLength(file.subarray(0, 8), file.length)), file.length);
}

/** The fixture's arguments for each option: a one-layer CLIP-L or T5 beside the transformer, or LoRA on its 5 input layers. */
const FIXTURE_OPTIONS = { '--clip-l': ['--clip-l'], '--t5': ['--t5'], '--in-dims': ['--in-dims', '[4,4,4,4,4]'] } as const;

/**
 * A LoRA of the fixture's tiny FLUX.1 transformer (rank 4, with a guidance embedder), as kohya-ss writes it;
 * `option` also adapts a tiny CLIP-L (`--clip-l`), a tiny T5 (`--t5`) or the transformer's input layers (`--in-dims`).
 */
function kohyaFluxLora(directory: string, option?: keyof typeof FIXTURE_OPTIONS): SafetensorsHeader {
  const output = path.join(directory, `flux${option ?? ''}.safetensors`);
  const args = [FIXTURE, 'lora', output, '--sd-scripts', SD_SCRIPTS, ...(option ? FIXTURE_OPTIONS[option] : [])];
  const result = spawnSync(TRAINING_PYTHON, args, { encoding: 'utf8', timeout: 120_000 });
  if (result.status !== 0) throw new Error(`kohya_flux_fixture.py failed: ${result.stderr.slice(-2000)}`);
  return header(readFileSync(output));
}

/** The server's verdict on each file for a flux1 endpoint, from its own header reader on the inference environment. */
function serverVerdicts(files: readonly string[]): string[] {
  const script = [
    'import json, sys',
    'from pathlib import Path',
    'from lora_server.lora_file import LoraFileError, inspect_lora',
    'def verdict(path):',
    '    try:',
    '        inspect_lora(Path(path), "flux1")',
    '        return "accepted"',
    '    except LoraFileError:',
    '        return "refused"',
    'print(json.dumps([verdict(path) for path in sys.argv[1:]]))',
  ].join('\n');
  const result = spawnSync(INFERENCE_PYTHON, ['-c', script, ...files], { cwd: path.join(ROOT, 'containers', 'inference'), encoding: 'utf8', timeout: 60_000 });
  if (result.status !== 0) throw new Error(`the server's inspect_lora failed to run: ${result.stderr.slice(-2000)}`);
  return JSON.parse(result.stdout) as string[];
}

const hasModule = (lora: SafetensorsHeader, prefix: string) => [...lora.tensors.keys()].some((name) => name.startsWith(prefix));
const TEXT_ENCODERS_REFUSED = 'FLUX.1 LoRAs are served for the transformer only, as this pipeline trains them (network_train_unet_only): retrain without the text encoders';

describeKohya("a FLUX.1 LoRA written by kohya-ss's networks/lora_flux.py", () => {
  let directory: string;
  let transformerOnly: SafetensorsHeader;
  let withClip: SafetensorsHeader;
  let withT5: SafetensorsHeader;
  let withInputLayers: SafetensorsHeader;
  beforeAll(() => {
    directory = mkdtempSync(path.join(tmpdir(), 'flux-lora-'));
    transformerOnly = kohyaFluxLora(directory);
    withClip = kohyaFluxLora(directory, '--clip-l');
    withT5 = kohyaFluxLora(directory, '--t5');
    withInputLayers = kohyaFluxLora(directory, '--in-dims');
  }, 480_000);
  afterAll(() => rmSync(directory, { recursive: true, force: true }));

  test('is a flux1 LoRA of the transformer, of the rank it was made with', () => {
    // The fixture's own names: double- and single-stream blocks, as flux_train_network.py trains them.
    expect([...transformerOnly.tensors.keys()].some((name) => name.startsWith('lora_unet_double_blocks_0_'))).toBe(true);
    expect([...transformerOnly.tensors.keys()].some((name) => name.startsWith('lora_unet_single_blocks_0_'))).toBe(true);
    expect(inspectLora(transformerOnly, 'flux1')).toEqual({ modelType: 'flux1', components: ['transformer'], rank: 4 });
  });

  test("with in_dims, the input layers' modules are refused as FLUX.1's, as the server refuses them (diffusers 0.40 drops them)", () => {
    for (const layer of ['img_in', 'txt_in', 'time_in_', 'vector_in_', 'guidance_in_']) expect(hasModule(withInputLayers, `lora_unet_${layer}`)).toBe(true);
    expect(() => inspectLora(withInputLayers, 'flux1')).toThrow(
      "it is a FLUX.1 LoRA with 8 kohya's in_dims modules on the input layers (first: lora_unet_guidance_in_in_layer); diffusers 0.40 drops them",
    );
    // Read as another family, it is still told as FLUX.1's.
    expect(() => inspectLora(withInputLayers, 'sdxl')).toThrow("it is a FLUX.1 LoRA, but the run's modelType is sdxl");
  });

  test('each file is accepted or refused for flux1 as the server (lora_file.py inspect_lora) accepts or refuses it', () => {
    const files = { transformerOnly: 'flux.safetensors', withClip: 'flux--clip-l.safetensors', withT5: 'flux--t5.safetensors', withInputLayers: 'flux--in-dims.safetensors' };
    const headers = { transformerOnly, withClip, withT5, withInputLayers };
    const server = serverVerdicts(Object.values(files).map((file) => path.join(directory, file)));
    const registry = Object.values(headers).map((lora) => {
      try {
        inspectLora(lora, 'flux1');
        return 'accepted';
      } catch {
        return 'refused';
      }
    });
    expect(registry).toEqual(['accepted', 'refused', 'refused', 'refused']);
    expect(server).toEqual(registry);
  });

  test('its CLIP-L (lora_te1_) or T5 (lora_te3_) modules are refused, as the server refuses them', () => {
    expect(hasModule(withClip, 'lora_te1_')).toBe(true);
    expect(hasModule(withT5, 'lora_te3_')).toBe(true);
    expect(() => inspectLora(withClip, 'flux1')).toThrow(/^it is a FLUX\.1 LoRA with 6 text-encoder modules \(first: lora_te1_text_model_encoder_layers_0_mlp_fc1\)/);
    expect(() => inspectLora(withClip, 'flux1')).toThrow(TEXT_ENCODERS_REFUSED);
    expect(() => inspectLora(withT5, 'flux1')).toThrow(/^it is a FLUX\.1 LoRA with 7 text-encoder modules \(first: lora_te3_encoder_block_0_/);
  });

  test('it is refused for an SD 1.5 or SDXL run, and their LoRAs for a flux1 run', () => {
    expect(() => inspectLora(transformerOnly, 'sdxl')).toThrow("it is a FLUX.1 LoRA, but the run's modelType is sdxl (SDXL)");
    expect(() => inspectLora(withClip, 'sd15')).toThrow("it is a FLUX.1 LoRA, but the run's modelType is sd15 (SD 1.5)");
    expect(() => inspectLora(header(safetensorsFile(sdxlLora(8))), 'flux1')).toThrow("it is an SDXL LoRA, but the run's modelType is flux1 (FLUX.1)");
    expect(() => inspectLora(header(safetensorsFile(sd15Lora(8))), 'flux1')).toThrow("it is an SD 1.5 LoRA, but the run's modelType is flux1 (FLUX.1)");
  });
});

describe('family rules without kohya (the negative controls)', () => {
  const module = (name: string) => ({ [`${name}.lora_down.weight`]: { shape: [4, 8] }, [`${name}.lora_up.weight`]: { shape: [8, 4] } });

  test('FLUX.1 transformer modules mixed with an SDXL U-Net are refused', () => {
    const mixed = { ...sdxlLora(4, { unetOnly: true }), ...module('lora_unet_double_blocks_0_img_attn_qkv') };
    expect(() => inspectLora(header(safetensorsFile(mixed)), 'flux1')).toThrow('it mixes SDXL and FLUX.1 module names');
  });

  test('an SDXL LoRA with both text encoders stays SDXL: lora_te2_ is SDXL only', () => {
    expect(inspectLora(header(safetensorsFile(sdxlLora(4))), 'sdxl').modelType).toBe('sdxl');
  });

  test("a lora_te1_-only file is SDXL's first text encoder; for a flux1 run it is CLIP-L, refused as the server refuses it", () => {
    const te1 = module('lora_te1_text_model_encoder_layers_0_mlp_fc1');
    expect(inspectLora(header(safetensorsFile(te1)), 'sdxl')).toEqual({ modelType: 'sdxl', components: ['text_encoder'], rank: 4 });
    expect(() => inspectLora(header(safetensorsFile(te1)), 'flux1')).toThrow(TEXT_ENCODERS_REFUSED);
    expect(() => inspectLora(header(safetensorsFile(te1)), 'sd15')).toThrow("it is an SDXL LoRA, but the run's modelType is sd15");
  });

  test('an SDXL LoRA with its lora_te1_ encoder is untouched by the FLUX.1 text-encoder rule', () => {
    expect(inspectLora(header(safetensorsFile(sdxlLora(4))), 'sdxl').components).toEqual(['unet', 'text_encoder', 'text_encoder_2']);
  });

  test('a T5 (lora_te3_) module beside FLUX.1 blocks is refused; a FLUX.1 layer lora_flux.py never adapts is unknown', () => {
    const withT5 = { ...module('lora_unet_double_blocks_0_img_attn_qkv'), ...module('lora_te3_encoder_block_0_layer_0_SelfAttention_q') };
    expect(() => inspectLora(header(safetensorsFile(withT5)), 'flux1')).toThrow('(first: lora_te3_encoder_block_0_layer_0_SelfAttention_q)');
    expect(() => inspectLora(header(safetensorsFile(module('lora_unet_final_layer_linear'))), 'flux1')).toThrow('has no SD 1.5, SDXL or FLUX.1 layout');
  });
});
