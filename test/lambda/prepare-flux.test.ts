import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkFluxFolder } from '../../lambda/prepare/base-model-files';
import { type DatasetStore, prepare } from '../../lambda/prepare/prepare';
import { parseSettings } from '../../lambda/prepare/settings';
import type { DedicatedServing, PreparedRun, PrepareSettings } from '../../lambda/shared/contract';
import type { ListedObject } from '../../lambda/prepare/dataset';
import { PREPARE_SETTINGS } from '../support/prepare';

/**
 * FLUX.1 runs through Prepare: base models (the two Hub ids, an S3 folder of the four files),
 * instance types and volume sized for the model type, the hyperparameter rules of sd-scripts' FLUX
 * trainer, the Hugging Face token's secret id, and the deploy-wide caption default.
 */

const NOW = new Date('2025-06-01T12:00:00Z');
const EXECUTION = { name: 'flux-0123456789abcdef', startTime: '2025-06-01T11:58:00.000Z' };
const PNG = fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'datasets', 'clean', 'a.png'));
const SCHNELL = 'black-forest-labs/FLUX.1-schnell';
const DEV = 'black-forest-labs/FLUX.1-dev';
const FLUX_S3 = 's3://lora-models/flux/';
const FOUR_FILES = ['flux1-schnell.safetensors', 'ae.safetensors', 'clip_l.safetensors', 't5xxl_fp16.safetensors'];

/** An in-memory bucket per name; every list is recorded, so a test can say which prefixes were read. */
function fakeStore(buckets: Record<string, Record<string, Buffer | string>>): DatasetStore & { listed: string[] } {
  const listed: string[] = [];
  const objects = (bucket: string) => buckets[bucket] ?? {};
  return {
    listed,
    async list(bucket, prefix) {
      listed.push(`s3://${bucket}/${prefix}`);
      const old = new Date(NOW.getTime() - 3600_000);
      return Object.entries(objects(bucket))
        .filter(([key]) => key.startsWith(prefix))
        .map(([key, body]): ListedObject => ({ key, size: Buffer.byteLength(body), lastModified: old }));
    },
    async read(bucket, key, maxBytes) {
      const body = objects(bucket)[key];
      return body === undefined ? undefined : Buffer.from(body).subarray(0, maxBytes + 1).toString('utf8');
    },
    async head(bucket, key, bytes) {
      const body = objects(bucket)[key];
      return body === undefined ? undefined : new Uint8Array(Buffer.from(body).subarray(0, bytes));
    },
    async uploadsInProgress() {
      return [];
    },
  };
}

/** A captioned two-image folder `datasets/pokemon/`, plus `train.json` when given, plus other buckets. */
function store(trainJson?: unknown, others: Record<string, Record<string, Buffer | string>> = {}, toml = '') {
  const folder: Record<string, Buffer | string> = {
    'datasets/pokemon/a.png': PNG,
    'datasets/pokemon/a.txt': 'a pikachu',
    'datasets/pokemon/b.png': PNG,
    'datasets/pokemon/b.txt': 'a pikachu',
    'datasets/pokemon/dataset.toml': toml,
  };
  if (trainJson !== undefined) folder['datasets/pokemon/train.json'] = JSON.stringify(trainJson);
  return fakeStore({ 'lora-datasets': folder, ...others });
}

/** A flux S3 folder holding `names` (each a small non-empty object). */
function fluxFolder(names: readonly string[]): Record<string, Record<string, string>> {
  return { 'lora-models': Object.fromEntries(names.map((name) => [`flux/${name}`, 'x'])) };
}

const S3_FLUX_SETTINGS: PrepareSettings = {
  ...PREPARE_SETTINGS,
  modelType: 'flux1',
  baseModel: FLUX_S3,
  readableS3BaseModel: FLUX_S3,
  training: { ...PREPARE_SETTINGS.training, instanceType: 'ml.g5.2xlarge', volumeSizeGb: 150 },
  endpoint: { ...PREPARE_SETTINGS.endpoint, instanceType: 'ml.g6e.xlarge' },
};

async function run(request: Record<string, unknown>, settings: PrepareSettings = PREPARE_SETTINGS, bucket = store()): Promise<PreparedRun> {
  const result = await prepare({ request: { dataset: 'pokemon', ...request }, execution: EXECUTION }, { store: bucket, settings, now: () => NOW });
  if (!result.settled) throw new Error(`expected a prepared run, got ${JSON.stringify(result)}`);
  return result;
}

async function refusal(request: Record<string, unknown>, settings: PrepareSettings = PREPARE_SETTINGS, bucket = store()): Promise<Error> {
  const outcome = await run(request, settings, bucket).then(
    (result) => ({ result }),
    (error: unknown) => ({ error }),
  );
  if (!('error' in outcome)) throw new Error(`expected a refusal, got ${JSON.stringify(outcome.result)}`);
  return outcome.error as Error;
}

function dedicated(prepared: PreparedRun): DedicatedServing {
  if (prepared.serving.mode !== 'dedicated') throw new Error('expected a dedicated run');
  return prepared.serving;
}

beforeEach(() => jest.spyOn(console, 'log').mockImplementation(() => undefined));
afterEach(() => jest.restoreAllMocks());

describe('a flux1 run on a deployment of another model type', () => {
  test("takes FLUX.1-schnell and the flux1 machine defaults where the deployment's are too small", async () => {
    const prepared = await run({ modelType: 'flux1' });
    expect(prepared.modelType).toBe('flux1');
    expect(prepared.baseModel).toBe(SCHNELL);
    expect(prepared.training.hyperparameters).toMatchObject({ model_type: 'flux1', base_model: SCHNELL });
    expect(prepared.training.resourceConfig).toMatchObject({ InstanceType: 'ml.g5.2xlarge', VolumeSizeInGB: 150 });
    expect(dedicated(prepared).endpointConfig.ProductionVariants[0].InstanceType).toBe('ml.g6e.xlarge');
    expect(dedicated(prepared).environment).toEqual({ MODEL_TYPE: 'flux1', LORA_SCALE: '1', BASE_MODEL_ID: SCHNELL });
  });

  test("gets its own model type's endpoint startup limit (a Hub FLUX.1 downloads ~34 GB at start); an sd15 run the deployment's", async () => {
    const startup = (prepared: PreparedRun) => dedicated(prepared).endpointConfig.ProductionVariants[0].ContainerStartupHealthCheckTimeoutInSeconds;
    expect(PREPARE_SETTINGS.endpoint.startupHealthCheckTimeoutSeconds).toBe(1200);
    expect(startup(await run({ modelType: 'flux1' }))).toBe(1800);
    expect(startup(await run({}))).toBe(1200);
  });

  test("keeps the deployment's machines when they fit, and an sd15 run keeps them whatever they are", async () => {
    const big: PrepareSettings = { ...PREPARE_SETTINGS, training: { ...PREPARE_SETTINGS.training, instanceType: 'ml.g6e.2xlarge', volumeSizeGb: 200 } };
    const flux = await run({ modelType: 'flux1' }, big);
    expect(flux.training.resourceConfig).toMatchObject({ InstanceType: 'ml.g6e.2xlarge', VolumeSizeInGB: 200 });
    const sd15 = await run({});
    expect(sd15.training.resourceConfig).toMatchObject({ InstanceType: 'ml.g4dn.xlarge', VolumeSizeInGB: 50 });
  });
});

describe('machines too small for FLUX.1 are refused, naming the value, its source and what fits', () => {
  test.each([
    ['a T4 (no bf16)', { training: { instanceType: 'ml.g4dn.2xlarge' } }, '"training.instanceType" = "ml.g4dn.2xlarge" (execution input) does not fit flux1: ml.g4dn.2xlarge cannot train FLUX.1: its NVIDIA T4 has 16 GB and no bf16'],
    ['16 GiB of host memory', { training: { instanceType: 'ml.g5.xlarge' } }, 'ml.g5.xlarge cannot train FLUX.1: it has 16 GiB of memory'],
    ['24 GB without fp8_base or block swap', { hyperparameters: { fp8_base: false } }, 'FLUX.1 needs 46 GB with fp8_base false and no blocks_to_swap'],
    ['a small volume', { training: { volumeSizeGb: 60 } }, '"training.volumeSizeGb" = 60 (execution input) does not fit flux1: a 60 GB training volume cannot hold FLUX.1'],
    ['a 24 GB serving GPU', { endpoint: { instanceType: 'ml.g5.2xlarge' } }, '"endpoint.instanceType" = "ml.g5.2xlarge" (execution input) does not fit flux1: ml.g5.2xlarge cannot serve FLUX.1'],
  ])('%s', async (_, request, message) => {
    const error = await refusal({ modelType: 'flux1', ...request });
    expect(error.name).toBe('InvalidInput');
    expect(error.message).toContain(message);
    expect(error.message).toMatch(/use ml\.g|give at least 100 GB/);
  });

  test('the same settings with room to spare are accepted (the negative controls)', async () => {
    await expect(run({ modelType: 'flux1', hyperparameters: { fp8_base: false, blocks_to_swap: 8 } })).resolves.toBeDefined();
    await expect(run({ modelType: 'flux1', training: { instanceType: 'ml.g6e.xlarge', volumeSizeGb: 100 }, hyperparameters: { fp8_base: false } })).resolves.toBeDefined();
    await expect(run({ modelType: 'flux1', endpoint: { instanceType: 'ml.g6e.2xlarge' } })).resolves.toBeDefined();
  });

  test("a shared run's endpoint is the shared one: its instance type is checked when the stack is deployed, not here", async () => {
    const shared: PrepareSettings = {
      ...S3_FLUX_SETTINGS,
      baseModel: SCHNELL,
      readableS3BaseModel: undefined,
      endpoint: { ...S3_FLUX_SETTINGS.endpoint, mode: 'shared', shared: { endpointName: 'lora-shared-flux1', inferenceComponentName: 'lora-shared-flux1' }, instanceType: 'ml.g5.2xlarge' },
    };
    const prepared = await run({}, shared);
    expect(prepared.serving).toEqual({ mode: 'shared', endpointName: 'lora-shared-flux1', inferenceComponentName: 'lora-shared-flux1' });
  });
});

describe('flux1 base models', () => {
  test('FLUX.1-dev from the Hub is accepted with a token; another Hub model is refused once, as "baseModel"', async () => {
    const withToken: PrepareSettings = { ...PREPARE_SETTINGS, huggingFaceTokenSecretId: 'hf' };
    expect((await run({ modelType: 'flux1', baseModel: DEV }, withToken)).training.hyperparameters.base_model).toBe(DEV);
    const error = await refusal({ modelType: 'flux1', baseModel: 'someone/flux-finetune' });
    expect(error.message).toContain('"baseModel" = "someone/flux-finetune" (execution input) is not a flux1 base model');
    expect(error.message).toMatch(/^The run has 1 problem/);
  });

  test('FLUX.1-dev without a configured token is refused, saying how to give one; schnell needs none', async () => {
    const error = await refusal({ modelType: 'flux1', baseModel: DEV });
    expect(error.message).toContain(`"baseModel" = "${DEV}" (execution input) is gated on the Hugging Face Hub`);
    expect(error.message).toContain('-c huggingFaceTokenSecret=');
    await expect(run({ modelType: 'flux1', baseModel: SCHNELL })).resolves.toBeDefined();
  });

  test("the sdxl base model with modelType flux1 is refused as the other type's", async () => {
    const error = await refusal({ modelType: 'flux1', baseModel: 'stabilityai/stable-diffusion-xl-base-1.0' });
    expect(error.message).toContain('is the sdxl base model, but "modelType" = "flux1"');
  });

  test('FLUX.1-dev (no default) for an SD run is refused once, as a flux1 base model, before a job downloads it', async () => {
    const error = await refusal({ modelType: 'sdxl', baseModel: DEV });
    expect(error.message).toMatch(/^The run has 1 problem/);
    expect(error.message).toContain(`"baseModel" = "${DEV}" (execution input) is a flux1 base model, but "modelType" = "sdxl" (execution input): set "modelType": "flux1"`);
    // The control: an sdxl model that is not the default is not a known type's, and is left to the run.
    await expect(run({ modelType: 'sdxl', baseModel: 'someone/sdxl-finetune' })).resolves.toBeDefined();
  });

  test('an S3 folder with the four files: listed, then trained isolated from the network', async () => {
    const bucket = store(undefined, fluxFolder(FOUR_FILES));
    const prepared = await run({}, S3_FLUX_SETTINGS, bucket);
    expect(bucket.listed).toContain(FLUX_S3);
    expect(prepared.training.networkIsolation).toBe(true);
    expect(prepared.training.hyperparameters).not.toHaveProperty('base_model');
    expect(prepared.training.inputDataConfig.map((c) => c.ChannelName)).toEqual(['dataset', 'base_model']);
  });

  test.each([
    ['missing T5-XXL', FOUR_FILES.filter((name) => name !== 't5xxl_fp16.safetensors'), 'has no t5xxl_fp16.safetensors'],
    ['no transformer', FOUR_FILES.slice(1), 'has no flux1-dev.safetensors or flux1-schnell.safetensors'],
    ['both transformers', [...FOUR_FILES, 'flux1-dev.safetensors'], 'holds both flux1-dev.safetensors and flux1-schnell.safetensors'],
    ['a file only in a subfolder', [...FOUR_FILES.slice(0, 3), 'old/t5xxl_fp16.safetensors'], 'has no t5xxl_fp16.safetensors'],
  ])('an S3 folder with %s is refused, naming the files', async (_, names, message) => {
    const error = await refusal({}, S3_FLUX_SETTINGS, store(undefined, fluxFolder(names)));
    expect(error.name).toBe('InvalidInput');
    expect(error.message).toContain(`"baseModel" = "${FLUX_S3}": ${FLUX_S3} ${message}`);
  });

  test('a refused run does not list the base model folder', async () => {
    const bucket = store(undefined, fluxFolder(FOUR_FILES));
    await refusal({ hyperparameters: { mixed_precision: 'fp16' } }, S3_FLUX_SETTINGS, bucket);
    expect(bucket.listed).not.toContain(FLUX_S3);
  });

  test("the deployment's S3 model is of the deployment's type: a flux1 run on an sd15 deployment's folder is refused, unlisted", async () => {
    const folder = 's3://lora-models/sd15/';
    const bucket = store(undefined, fluxFolder(FOUR_FILES));
    const error = await refusal({ modelType: 'flux1', baseModel: folder }, { ...PREPARE_SETTINGS, baseModel: folder, readableS3BaseModel: folder }, bucket);
    expect(error.message).toContain(`"baseModel" = "${folder}" (execution input) is the deployment's sd15 base model, but "modelType" = "flux1"`);
    expect(bucket.listed).not.toContain(folder);
    // The control: the same folder for an sd15 run is the deployment's own model.
    await expect(run({ baseModel: folder }, { ...PREPARE_SETTINGS, baseModel: folder, readableS3BaseModel: folder })).resolves.toBeDefined();
  });

  test('a single S3 file is not a flux1 base model', async () => {
    const file = 's3://lora-models/flux/flux1-dev.safetensors';
    const error = await refusal({}, { ...S3_FLUX_SETTINGS, baseModel: file, readableS3BaseModel: file });
    expect(error.message).toContain('is not a flux1 base model: a flux1 base model in S3 is a folder');
  });

  test('the folder check reads names, not sizes: the variant comes from the transformer file', () => {
    expect(checkFluxFolder(FLUX_S3, FOUR_FILES)).toEqual({ variant: 'schnell' });
    expect(checkFluxFolder(FLUX_S3, ['flux1-dev.safetensors', ...FOUR_FILES.slice(1), 'README.md'])).toEqual({ variant: 'dev' });
  });
});

describe("sd-scripts' FLUX.1 rules, as the container applies them", () => {
  test.each([
    [{ mixed_precision: 'fp16' }, '"mixed_precision": must be bf16 for model_type flux1'],
    [{ network_train_unet_only: false }, '"network_train_unet_only": must be true for model_type flux1'],
    [{ cache_text_encoder_outputs: false }, '"cache_text_encoder_outputs": must be true for model_type flux1'],
    [{ fp8_base: true, mixed_precision: 'no' }, '"fp8_base": needs mixed_precision = bf16'],
    [{ sample_sampler: 'euler_a' }, '"sample_sampler": applies only to model_type sd15 or sdxl, not flux1'],
    [{ clip_skip: 2 }, '"clip_skip": applies only to model_type sd15, not flux1'],
  ])('%j is refused', async (hyperparameters, message) => {
    const error = await refusal({ modelType: 'flux1', hyperparameters });
    expect(error.message).toContain(message);
  });

  test("shuffle_caption in dataset.toml is refused for flux1, whose text-encoder outputs are always cached; sd15 takes it", async () => {
    const toml = '[general]\nshuffle_caption = true\n\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "."\n';
    const error = await refusal({ modelType: 'flux1' }, PREPARE_SETTINGS, store(undefined, {}, toml));
    expect(error.message).toContain('cache_text_encoder_outputs cannot be combined with shuffle_caption in dataset.toml');
    await expect(run({}, PREPARE_SETTINGS, store(undefined, {}, toml))).resolves.toBeDefined();
  });

  test('the FLUX.1 keys are refused for sd15, and accepted for flux1', async () => {
    const error = await refusal({ hyperparameters: { guidance_scale: 1 } });
    expect(error.message).toContain('"guidance_scale": applies only to model_type flux1, not sd15');
    const prepared = await run({ modelType: 'flux1', hyperparameters: { guidance_scale: 1, timestep_sampling: 'sigmoid', blocks_to_swap: 4 } });
    expect(prepared.training.hyperparameters).toMatchObject({ guidance_scale: '1', timestep_sampling: 'sigmoid', blocks_to_swap: '4' });
  });
});

describe('the Hugging Face token', () => {
  const WITH_TOKEN: PrepareSettings = { ...PREPARE_SETTINGS, huggingFaceTokenSecretId: 'lora/hf-token' };

  const region = process.env.AWS_REGION;
  beforeEach(() => {
    process.env.AWS_REGION = 'eu-west-3';
  });
  afterEach(() => {
    if (region === undefined) delete process.env.AWS_REGION;
    else process.env.AWS_REGION = region;
  });

  test("a Hub run's job and model get only the secret's id (and, for a name, Prepare's region), never in a hyperparameter", async () => {
    const prepared = await run({ modelType: 'flux1', baseModel: DEV }, WITH_TOKEN);
    // boto3 finds a secret by name only in AWS_DEFAULT_REGION, which SageMaker does not set.
    const expected = { HF_TOKEN_SECRET_ID: 'lora/hf-token', AWS_DEFAULT_REGION: 'eu-west-3' };
    expect(prepared.training.environment).toEqual(expected);
    expect(dedicated(prepared).environment).toMatchObject(expected);
    expect(JSON.stringify(prepared.training.hyperparameters)).not.toContain('hf-token');
  });

  test('a secret given by ARN names its own region: no AWS_DEFAULT_REGION', async () => {
    const arn = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:lora/hf-token-AbCdEf';
    const prepared = await run({ modelType: 'flux1', baseModel: DEV }, { ...WITH_TOKEN, huggingFaceTokenSecretId: arn });
    expect(prepared.training.environment).toEqual({ HF_TOKEN_SECRET_ID: arn });
    expect(dedicated(prepared).environment).not.toHaveProperty('AWS_DEFAULT_REGION');
  });

  test('without a configured secret, or with an S3 base model (no network), nothing', async () => {
    expect((await run({ modelType: 'flux1' })).training.environment).toEqual({});
    const s3 = await run({}, { ...S3_FLUX_SETTINGS, huggingFaceTokenSecretId: 'lora/hf-token' }, store(undefined, fluxFolder(FOUR_FILES)));
    expect(s3.training.environment).toEqual({});
    expect(dedicated(s3).environment).not.toHaveProperty('HF_TOKEN_SECRET_ID');
  });

  test('SETTINGS take a secret name or ARN, never something else', () => {
    const arn = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:lora/hf-token-AbCdEf';
    for (const id of ['lora/hf-token', arn]) expect(parseSettings(JSON.stringify({ ...PREPARE_SETTINGS, huggingFaceTokenSecretId: id })).huggingFaceTokenSecretId).toBe(id);
    expect(() => parseSettings(JSON.stringify({ ...PREPARE_SETTINGS, huggingFaceTokenSecretId: 'hf token with spaces' }))).toThrow('huggingFaceTokenSecretId');
  });
});

describe('the deploy-wide caption default', () => {
  test("is sent as caption_missing unless the run's hyperparameters set it", async () => {
    const on: PrepareSettings = { ...PREPARE_SETTINGS, training: { ...PREPARE_SETTINGS.training, captionMissing: true } };
    expect((await run({}, on)).training.hyperparameters.caption_missing).toBe('true');
    expect((await run({ hyperparameters: { caption_missing: false } }, on)).training.hyperparameters.caption_missing).toBe('false');
    expect((await run({}, on, store({ hyperparameters: { caption_missing: false } }))).training.hyperparameters.caption_missing).toBe('false');
    // Absent: the model type's default applies in the container; nothing is sent.
    expect((await run({})).training.hyperparameters).not.toHaveProperty('caption_missing');
  });

  test("the images the job will caption are counted in the prepared run (the notification and status say it)", async () => {
    const uncaptioned = fakeStore({ 'lora-datasets': { 'datasets/pokemon/a.png': PNG, 'datasets/pokemon/a.txt': 'a pikachu', 'datasets/pokemon/b.png': PNG, 'datasets/pokemon/dataset.toml': '' } });
    expect((await run({ modelType: 'flux1' }, PREPARE_SETTINGS, uncaptioned)).dataset.captionsToWrite).toBe(1);
    // The controls: every image captioned, nothing to write; sd15 without caption_missing refuses the folder as before.
    expect((await run({ modelType: 'flux1' })).dataset).not.toHaveProperty('captionsToWrite');
    expect((await refusal({}, PREPARE_SETTINGS, uncaptioned)).message).toContain('1 of 2 image(s) have no caption');
  });

  test('SETTINGS accept it, and flux1 as the model type', () => {
    const settings = { ...S3_FLUX_SETTINGS, training: { ...S3_FLUX_SETTINGS.training, captionMissing: false } };
    expect(parseSettings(JSON.stringify(settings))).toEqual(settings);
  });
});

describe("kohya's bucket step for FLUX.1 (flux_train_network.py runs train_network.py's verify_bucket_reso_steps(64), then its own (32))", () => {
  const toml = (steps: number) => `[general]\nenable_bucket = true\nbucket_reso_steps = ${steps}\n\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "."\n`;

  test('32 is refused for sd15 and flux1, and accepted for sdxl; 64 is accepted for flux1', async () => {
    const sd15 = await refusal({}, PREPARE_SETTINGS, store(undefined, {}, toml(32)));
    expect(sd15.message).toContain('bucket_reso_steps = 32, which kohya refuses for sd15: it must be a multiple of 64');
    const flux = await refusal({ modelType: 'flux1' }, PREPARE_SETTINGS, store(undefined, {}, toml(32)));
    expect(flux.message).toContain('bucket_reso_steps = 32, which kohya refuses for flux1: it must be a multiple of 64 (64 for sd15 and flux1, 32 for sdxl)');
    await expect(run({ modelType: 'sdxl' }, PREPARE_SETTINGS, store(undefined, {}, toml(32)))).resolves.toBeDefined();
    await expect(run({ modelType: 'flux1' }, PREPARE_SETTINGS, store(undefined, {}, toml(64)))).resolves.toBeDefined();
  });
});
