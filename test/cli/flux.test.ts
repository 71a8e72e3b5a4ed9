import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InvokeEndpointCommand, SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { mockClient } from 'aws-sdk-client-mock';
import { cli } from './fake-io';
import { runView } from '../../cli/run-view';
import { cliEnv, runCli, runFixture } from './read-side-support';

/**
 * The CLI with FLUX.1: `validate` checks a flux1 run as Prepare does (its hyperparameter rules, the
 * instance types that fit), and `generate` refuses a negative prompt for a shared FLUX.1 endpoint
 * before paying for a request the server would refuse.
 */

const FIXTURES = path.resolve(__dirname, '..', 'fixtures', 'datasets');
const PNG = fs.readFileSync(path.join(FIXTURES, 'clean', 'a.png'));
const OFFLINE = { LORA_PIPELINE_ENDPOINT_URL: 'http://127.0.0.1:9', AWS_EC2_METADATA_DISABLED: 'true', AWS_CONFIG_FILE: '/nonexistent', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent' };
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-flux-cli-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

/** A captioned folder, with `train` as its train.json when given. */
function folder(train?: unknown): string {
  const dir = fs.mkdtempSync(path.join(scratch, 'set-'));
  fs.writeFileSync(path.join(dir, 'a.png'), PNG);
  fs.writeFileSync(path.join(dir, 'a.txt'), 'a fox in the snow');
  fs.writeFileSync(path.join(dir, 'dataset.toml'), '');
  if (train !== undefined) fs.writeFileSync(path.join(dir, 'train.json'), JSON.stringify(train));
  return dir;
}

describe('lora-pipeline validate, flux1', () => {
  test('a flux1 deployment: a captioned folder is fine, trained on FLUX.1-schnell', async () => {
    const { code, out } = await cli(['validate', folder(), '--model-type', 'flux1', '--endpoint-mode', 'dedicated'], OFFLINE);
    expect(code).toBe(0);
    expect(out).toContain('flux1');
    expect(out).toContain('black-forest-labs/FLUX.1-schnell');
  });

  test('too small an instance, or fp16, is refused with what fits', async () => {
    const small = await cli(['validate', folder({ training: { instanceType: 'ml.g4dn.xlarge' } }), '--model-type', 'flux1', '--endpoint-mode', 'dedicated'], OFFLINE);
    expect(small.code).toBe(1);
    expect(small.out).toContain('ml.g4dn.xlarge cannot train FLUX.1');
    expect(small.out).toContain('use ml.g5.2xlarge');
    const fp16 = await cli(['validate', folder({ hyperparameters: { mixed_precision: 'fp16' } }), '--model-type', 'flux1'], OFFLINE);
    expect(fp16.code).toBe(1);
    expect(fp16.out).toContain('"mixed_precision": must be bf16 for model_type flux1');
  });

  test("offline the deployment's machines are unknown: fp8_base false is checked against the run's own instance only", async () => {
    // The deployment may train on an L40S: the configuration default (A10G 24 GB) does not stand in for it.
    const unknown = await cli(['validate', folder({ hyperparameters: { fp8_base: false } }), '--model-type', 'flux1', '--endpoint-mode', 'dedicated'], OFFLINE);
    expect(unknown.code).toBe(0);
    // The control: the same run naming a 24 GB instance itself is refused.
    const given = await cli(['validate', folder({ training: { instanceType: 'ml.g5.2xlarge' }, hyperparameters: { fp8_base: false } }), '--model-type', 'flux1', '--endpoint-mode', 'dedicated'], OFFLINE);
    expect(given.code).toBe(1);
    expect(given.out).toContain('"training.instanceType" = "ml.g5.2xlarge" (train.json) does not fit flux1');
  });

  test('a folder with an image without a caption: flux1 says it will be captioned; sd15 refuses it (the control)', async () => {
    const dir = folder();
    fs.writeFileSync(path.join(dir, 'b.png'), PNG);
    const flux = await cli(['validate', dir, '--model-type', 'flux1', '--endpoint-mode', 'dedicated'], OFFLINE);
    expect(flux.code).toBe(0);
    expect(flux.out).toContain('to be captioned by BLIP in the training job (caption_missing): 1, written next to them in S3 for review');
    expect(JSON.parse((await cli(['validate', dir, '--model-type', 'flux1', '--json'], OFFLINE)).out)).toMatchObject({ ok: true, captionsToWrite: 1 });
    const sd15 = await cli(['validate', dir, '--model-type', 'sd15'], OFFLINE);
    expect(sd15.code).toBe(1);
    expect(sd15.out).not.toContain('to be captioned by BLIP');
  });

  test('a flux1 run on an sd15 deployment takes the flux1 machines (the deployment defaults are too small)', async () => {
    const { code, out } = await cli(['validate', folder({ modelType: 'flux1' }), '--json', '--endpoint-mode', 'dedicated'], OFFLINE);
    expect(code).toBe(0);
    expect(JSON.parse(out)).toMatchObject({ ok: true });
  });
});

describe('lora-pipeline generate, flux1', () => {
  const runtime = mockClient(SageMakerRuntimeClient);
  const served = { Body: new TextEncoder().encode(JSON.stringify({ images: [PNG.toString('base64')], seed: 1, loras: [] })), ContentType: 'application/json' } as never;
  beforeEach(() => runtime.reset());

  test('--negative on a shared FLUX.1 endpoint: a usage error, and no request', async () => {
    runtime.on(InvokeEndpointCommand).resolves(served);
    const env = cliEnv({ 'shared-endpoint': 'lora-shared-flux1', 'shared-inference-component': 'lora-shared-flux1', 'model-type': 'flux1' });
    const { code, io } = await runCli(['generate', '--lora', 'fox', '-p', 'a fox', '--negative', 'blurry', '--out', path.join(scratch, 'f.png')], env);
    expect(code).toBe(2);
    expect(io.stderr()).toContain('--negative does not apply to FLUX.1');
    expect(runtime.commandCalls(InvokeEndpointCommand)).toHaveLength(0);
  });

  test('the same on an SD 1.5 endpoint is sent (the negative control); FLUX.1 with --guidance is sent too', async () => {
    runtime.on(InvokeEndpointCommand).resolves(served);
    const sd15 = cliEnv({ 'shared-endpoint': 'lora-shared-sd15', 'shared-inference-component': 'lora-shared-sd15', 'model-type': 'sd15' });
    expect((await runCli(['generate', '--lora', 'fox', '-p', 'a fox', '--negative', 'blurry', '--out', path.join(scratch, 's.png')], sd15)).code).toBe(0);
    const flux = cliEnv({ 'shared-endpoint': 'lora-shared-flux1', 'shared-inference-component': 'lora-shared-flux1', 'model-type': 'flux1' });
    expect((await runCli(['generate', '--lora', 'fox', '-p', 'a fox', '--guidance', '3.5', '--out', path.join(scratch, 'g.png')], flux)).code).toBe(0);
    const body = JSON.parse(Buffer.from(runtime.commandCalls(InvokeEndpointCommand)[1].args[0].input.Body as Uint8Array).toString('utf8')) as Record<string, unknown>;
    expect(body).toMatchObject({ guidance_scale: 3.5 });
    expect(body).not.toHaveProperty('negative_prompt');
  });

  test('--guidance on a shared FLUX.1-schnell endpoint: a usage error, and no request; 0, or dev, is sent', async () => {
    runtime.on(InvokeEndpointCommand).resolves(served);
    const shared = { 'shared-endpoint': 'lora-shared-flux1', 'shared-inference-component': 'lora-shared-flux1', 'model-type': 'flux1' };
    const schnell = cliEnv({ ...shared, 'base-model': 'black-forest-labs/FLUX.1-schnell' });
    const refused = await runCli(['generate', '--lora', 'fox', '-p', 'a fox', '--guidance', '3.5', '--out', path.join(scratch, 'n.png')], schnell);
    expect(refused.code).toBe(2);
    expect(refused.io.stderr()).toContain('--guidance does not apply to FLUX.1-schnell (it takes no guidance)');
    expect(runtime.commandCalls(InvokeEndpointCommand)).toHaveLength(0);
    expect((await runCli(['generate', '--lora', 'fox', '-p', 'a fox', '--guidance', '0', '--out', path.join(scratch, 'z.png')], schnell)).code).toBe(0);
    const dev = cliEnv({ ...shared, 'base-model': 'black-forest-labs/FLUX.1-dev' });
    expect((await runCli(['generate', '--lora', 'fox', '-p', 'a fox', '--guidance', '3.5', '--out', path.join(scratch, 'd.png')], dev)).code).toBe(0);
    expect(runtime.commandCalls(InvokeEndpointCommand)).toHaveLength(2);
  });
});

describe('lora-pipeline status, a run that captions its images', () => {
  const NOW = Date.parse('2025-01-01T12:12:05Z');

  test('Prepare counted the images to caption; once published, the captions row says where they are', () => {
    const prepared = runView(runFixture({ datasetCheck: { skipped: [], skippedCount: 0, notes: [], captionsToWrite: 12 } }), NOW);
    expect(prepared).toContain('Note      12 images without a caption will be captioned by BLIP (caption_missing)');
    const done = runView(runFixture({ captions: { written: 11, kept: 1, folder: 's3://datasets/pokemon/' } }), NOW);
    expect(done).toContain('Captions  11 written by BLIP next to their images in s3://datasets/pokemon/, for review; 1 not written');
    // The control: a run that captions nothing shows neither.
    expect(runView(runFixture({}), NOW)).not.toMatch(/BLIP/);
  });
});
