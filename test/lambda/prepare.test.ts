import * as fs from 'node:fs';
import * as path from 'node:path';
import { GetObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, NoSuchKey, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { mockClient } from 'aws-sdk-client-mock';
import 'aws-sdk-client-mock-jest';
import type { DedicatedServing, PreparedRun, PrepareEvent, PrepareResult, PrepareSettings, UnsettledRun } from '../../lambda/shared/contract';
import { DEFAULT_BASE_MODELS } from '../../lambda/shared/models';
import { createHandler } from '../../lambda/prepare/handler';
import { hasInstanceStorage, tagValue } from '../../lambda/prepare/resources';
import { parseSettings } from '../../lambda/prepare/settings';
import { requireWithEnv } from '../support/isolated';
import { PREPARE_SETTINGS } from '../support/prepare';

const SETTINGS: PrepareSettings = PREPARE_SETTINGS;
const S3_MODEL = 's3://lora-models/sd15/model.safetensors';

const NOW = new Date('2025-06-01T12:00:00Z');
const EXECUTION = { name: 'pokemon-0123456789abcdef', startTime: '2025-06-01T11:58:00.000Z' };
/** SageMaker's rule for job, model, endpoint config and endpoint names. */
const SAGEMAKER_NAME = /^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$/;
const TAG_VALUE = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]{0,256}$/u;

const s3 = mockClient(S3Client);

interface FakeFile {
  readonly body?: string | Buffer;
  /** Seconds since it last changed (default: long settled). */
  readonly age?: number;
  /** Listed size, when it should differ from the body's. */
  readonly size?: number;
}

/** A real 64x64 PNG: Prepare reads each image's header. */
const PNG: FakeFile = { body: fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'datasets', 'clean', 'a.png')) };
const CAPTION: FakeFile = { body: 'a pikachu' };
const BASIC: Record<string, FakeFile> = { 'a.png': PNG, 'a.txt': CAPTION, 'b.JPG': PNG, 'b.txt': CAPTION, 'dataset.toml': { body: '' } };

/** Serves one folder of the datasets bucket, `pageSize` objects a page. */
function folder(files: Record<string, FakeFile>, options: { name?: string; pageSize?: number } = {}): void {
  const prefix = `datasets/${options.name ?? 'pokemon'}/`;
  const contents = Object.entries(files).map(([path, file]) => ({
    Key: prefix + path,
    Size: file.size ?? Buffer.byteLength(file.body ?? ''),
    LastModified: new Date(NOW.getTime() - (file.age ?? 3600) * 1000),
  }));
  const pageSize = options.pageSize ?? 1000;
  s3.on(ListObjectsV2Command).callsFake((input: { Prefix?: string; ContinuationToken?: string }) => {
    const listed = contents.filter((c) => c.Key.startsWith(input.Prefix ?? ''));
    const start = Number(input.ContinuationToken ?? 0);
    const next = start + pageSize;
    return {
      Contents: listed.slice(start, next),
      IsTruncated: next < listed.length,
      NextContinuationToken: next < listed.length ? String(next) : undefined,
    };
  });
  s3.on(GetObjectCommand).callsFake((input: { Key?: string; Range?: string }) => {
    const path = (input.Key ?? '').slice(prefix.length);
    const file = files[path];
    if (!input.Key?.startsWith(prefix) || !file) throw new NoSuchKey({ message: 'The specified key does not exist.', $metadata: {} });
    // Prepare reads every object by a range from its start, as S3 serves it.
    const last = /^bytes=0-(\d+)$/.exec(input.Range ?? '');
    const body = Buffer.from(file.body ?? '').subarray(0, last ? Number(last[1]) + 1 : undefined);
    return { Body: { transformToString: async () => body.toString('utf8'), transformToByteArray: async () => new Uint8Array(body) } };
  });
}

function handler(settings: PrepareSettings = SETTINGS, now: Date = NOW) {
  return createHandler({ s3: new S3Client({ region: 'us-east-1' }), settings, now: () => now });
}

function call(request: unknown, settings: PrepareSettings = SETTINGS, now: Date = NOW): Promise<PrepareResult> {
  const event: PrepareEvent = { request, execution: EXECUTION };
  return handler(settings, now)(event);
}

async function prepared(request: unknown, settings: PrepareSettings = SETTINGS): Promise<PreparedRun> {
  const result = await call(request, settings);
  if (!result.settled) throw new Error(`expected a prepared run, got ${JSON.stringify(result)}`);
  return result;
}

/** A prepared run's dedicated serving fields; fails the test for a shared run. */
function dedicated(run: PreparedRun): DedicatedServing {
  if (run.serving.mode !== 'dedicated') throw new Error(`expected a dedicated run, got serving ${JSON.stringify(run.serving)}`);
  return run.serving;
}

/** The error a call fails with (the test fails if it succeeds). */
async function failure(request: unknown, settings: PrepareSettings = SETTINGS, now: Date = NOW): Promise<Error> {
  const outcome = await call(request, settings, now).then(
    (result) => ({ result }),
    (error: unknown) => ({ error }),
  );
  if (!('error' in outcome)) throw new Error(`expected a failure, got ${JSON.stringify(outcome.result)}`);
  return outcome.error as Error;
}

beforeEach(() => {
  s3.reset();
  jest.spyOn(console, 'log').mockImplementation(() => undefined);
  jest.spyOn(console, 'warn').mockImplementation(() => undefined);
  jest.spyOn(console, 'error').mockImplementation(() => undefined);
});
afterEach(() => jest.restoreAllMocks());

describe('an execution input that alone is wrong fails with InvalidInput before any S3 request', () => {
  test.each([
    ['no dataset', {}, ['"dataset" is missing: give a folder name such as "pokemon", or the folder\'s URI s3://lora-datasets/datasets/<name>/']],
    ['not an object', 'pokemon', ['it must be a JSON object such as {"dataset": "pokemon"}, not "pokemon"']],
    ['an unknown field', { dataset: 'pokemon', trainig: {} }, ['unknown field "trainig": did you mean "training"?']],
    ['an unknown nested field', { dataset: 'pokemon', training: { spott: true } }, ['unknown field "training.spott": did you mean "training.spot"?']],
    ['an unknown field like no other', { dataset: 'pokemon', zzz: 1 }, ['unknown field "zzz": the fields are dataset, name, baseModel']],
    ['a dataset in another bucket', { dataset: 's3://other-bucket/datasets/pokemon/' }, ['is not in the datasets bucket lora-datasets']],
    ['a dataset outside the prefix', { dataset: 's3://lora-datasets/uploads/pokemon/' }, ['is not under the datasets prefix s3://lora-datasets/datasets/']],
    ['a nested dataset folder', { dataset: 's3://lora-datasets/datasets/pokemon/images/' }, ['datasets are folders exactly one level below']],
    ['the datasets prefix itself', { dataset: 's3://lora-datasets/datasets/' }, ['names no folder']],
    ['a bare name with a slash', { dataset: 'pokemon/images' }, ['is neither a folder name (which cannot contain "/") nor an s3:// URI']],
    ['a bare ..', { dataset: '..' }, ['"dataset" = ".." names no folder']],
    ['a dataset that is not a string', { dataset: 7 }, ['"dataset" = 7 is not allowed: expected a folder name']],
    ['an unreadable S3 base model', { dataset: 'pokemon', baseModel: 's3://elsewhere/model.safetensors' }, [
      'cannot be read by the training job and the endpoint: they may read no S3 base model',
      'Deploy the stack with -c baseModel=s3://elsewhere/model.safetensors',
    ]],
    ['a base model that is neither', { dataset: 'pokemon', baseModel: 'just-a-name' }, ['"baseModel" = "just-a-name" is not allowed: expected a Hugging Face repo id']],
    ['an endpoint name without the prefix', { dataset: 'pokemon', endpoint: { name: 'my-endpoint' } }, [
      '"endpoint.name" = "my-endpoint" must start with "lora-"',
      'for example "lora-my-endpoint"',
    ]],
    ['an invalid endpoint name', { dataset: 'pokemon', endpoint: { name: 'lora_endpoint' } }, ['"endpoint.name" = "lora_endpoint" is not allowed']],
    ['base_model in the hyperparameters', { dataset: 'pokemon', hyperparameters: { base_model: 'a/b' } }, [
      '"hyperparameters.base_model" is set from the top-level "baseModel"',
      'give "baseModel": "a/b" instead',
    ]],
    ['model_type in the hyperparameters', { dataset: 'pokemon', hyperparameters: { model_type: 'sdxl' } }, ['give "modelType": "sdxl" instead']],
    ['hyperparameters that are not an object', { dataset: 'pokemon', hyperparameters: [1] }, ['"hyperparameters" = [1] is not allowed']],
  ])('%s', async (_, request, expected) => {
    folder(BASIC);
    const error = await failure(request);
    expect(error.name).toBe('InvalidInput');
    for (const text of expected) expect(error.message).toContain(text);
    expect(error.message).toMatch(/^The execution input has 1 problem: .*\. Start the execution again with a corrected input\.$/s);
    expect(s3).not.toHaveReceivedAnyCommand();
  });

  test('every problem of the input is listed at once, each with its value and what is allowed', async () => {
    const error = await failure({
      name: 'has space',
      modelType: 'sd21',
      training: { instanceType: 'ml.m5.xlarge', spot: 'yes', maxRuntimeSeconds: 1.5, volumeSizeGb: 0 },
      endpoint: { instanceCount: 21 },
    });
    expect(error.name).toBe('InvalidInput');
    expect(error.message).toContain('has 8 problems');
    for (const text of [
      '"dataset" is missing',
      '"name" = "has space" is not allowed: expected a short name of 1 to 40 letters, digits and hyphens',
      `"modelType" = "sd21" is not allowed: expected 'sd15', 'sdxl' or 'flux1'`,
      '"training.instanceType" = "ml.m5.xlarge" is not allowed: expected a SageMaker GPU instance type',
      '"training.spot" = "yes" is not allowed: expected true or false',
      '"training.maxRuntimeSeconds" = 1.5 is not allowed: expected an integer from 1 to 2419200',
      '"training.volumeSizeGb" = 0 is not allowed: expected an integer from 1 to 16384',
      '"endpoint.instanceCount" = 21 is not allowed: expected an integer from 1 to 20',
    ]) {
      expect(error.message).toContain(text);
    }
    expect(s3).not.toHaveReceivedAnyCommand();
  });

  test('the deployed S3 base model is accepted', async () => {
    folder(BASIC);
    const run = await prepared({ dataset: 'pokemon', baseModel: S3_MODEL }, { ...SETTINGS, readableS3BaseModel: S3_MODEL });
    expect(run.baseModel).toBe(S3_MODEL);
    const error = await failure({ dataset: 'pokemon', baseModel: 's3://lora-models/other/' }, { ...SETTINGS, readableS3BaseModel: S3_MODEL });
    expect(error.message).toContain(`the only S3 base model they may read is ${S3_MODEL}`);
  });

  test('an endpoint name with the prefix is used as given', async () => {
    folder(BASIC);
    expect((await prepared({ dataset: 'pokemon', endpoint: { name: 'lora-shared' } })).serving.endpointName).toBe('lora-shared');
  });

  test('a dataset URI with or without its trailing slash names the same folder', async () => {
    folder(BASIC);
    const forms = ['pokemon', 's3://lora-datasets/datasets/pokemon/', 's3://lora-datasets/datasets/pokemon'];
    const uris = await Promise.all(forms.map(async (dataset) => (await prepared({ dataset })).dataset));
    for (const uri of uris) {
      expect(uri).toEqual({ name: 'pokemon', uri: 's3://lora-datasets/datasets/pokemon/', images: 2, captions: 2, skipped: [], skippedCount: 0, notes: [] });
    }
    expect(s3).toHaveReceivedCommandWith(ListObjectsV2Command, { Bucket: 'lora-datasets', Prefix: 'datasets/pokemon/' });
  });
});

describe('problems of the merged options fail with InvalidInput, naming each value and where it came from', () => {
  test('with spot, MaxWait below MaxRuntime', async () => {
    folder({ ...BASIC, 'train.json': { body: JSON.stringify({ training: { maxWaitSeconds: 1800 } }) } });
    const error = await failure({ dataset: 'pokemon' });
    expect(error.name).toBe('InvalidInput');
    expect(error.message).toContain(
      '"training.maxWaitSeconds" = 1800 (train.json) is less than "training.maxRuntimeSeconds" = 3600 (deploy-time configuration): ' +
        'with spot training SageMaker requires MaxWait ≥ MaxRuntime',
    );
  });

  test('without spot, MaxWait is neither checked nor sent', async () => {
    folder(BASIC);
    const run = await prepared({ dataset: 'pokemon', training: { spot: false, maxWaitSeconds: 60 } });
    expect(run.training.spot).toBe(false);
    expect(run.training.stoppingCondition).toEqual({ MaxRuntimeInSeconds: 3600 });
  });

  test.each([
    ['with spot, MaxWait', { spot: true, maxWaitSeconds: 7 * 86400 }, '"training.maxWaitSeconds" = 604800 (execution input)'],
    ['without spot, MaxRuntime', { spot: false, maxRuntimeSeconds: 8 * 86400 }, '"training.maxRuntimeSeconds" = 691200 (execution input)'],
  ])('%s as long as the checkpoints are kept', async (_, training, named) => {
    folder(BASIC);
    const error = await failure({ dataset: 'pokemon', training });
    expect(error.name).toBe('InvalidInput');
    expect(error.message).toContain(`${named} lets the job run as long as checkpoints are kept (7 days = 604800 s)`);
    expect(error.message).toContain('a lifecycle rule would delete the checkpoints a resuming job needs');
  });

  test('a long MaxWait is fine without spot', async () => {
    folder(BASIC);
    await expect(prepared({ dataset: 'pokemon', training: { spot: false, maxWaitSeconds: 30 * 86400 } })).rejects.toThrow('from 1 to 2419200');
    const run = await prepared({ dataset: 'pokemon', training: { spot: false, maxWaitSeconds: 14 * 86400 } });
    expect(run.training.stoppingCondition).toEqual({ MaxRuntimeInSeconds: 3600 });
  });

  test('bad hyperparameters, all of them, in the container validation\'s words', async () => {
    folder(BASIC);
    const error = await failure({ dataset: 'pokemon', hyperparameters: { learning_rat: 0.001, network_dim: 0, cache_text_encoder_outputs: true } });
    expect(error.name).toBe('InvalidInput');
    expect(error.message).toContain('Invalid hyperparameters (4 problems)');
    expect(error.message).toContain('"learning_rat": is not a known hyperparameter; did you mean "learning_rate"?');
    expect(error.message).toContain('"network_dim": must be at least 1, not 0');
    expect(error.message).toContain('"cache_text_encoder_outputs": applies only to model_type sdxl or flux1, not sd15');
    expect(error.message).toContain('"cache_text_encoder_outputs": needs network_train_unet_only = true');
  });

  test('the default base model of the other model type', async () => {
    folder(BASIC);
    const error = await failure({ dataset: 'pokemon', modelType: 'sdxl', baseModel: DEFAULT_BASE_MODELS.sd15 });
    expect(error.message).toContain(`"baseModel" = "${DEFAULT_BASE_MODELS.sd15}" (execution input) is the sd15 base model, but "modelType" = "sdxl"`);
  });

  test('problems of the input and of train.json together are listed together', async () => {
    folder({ ...BASIC, 'train.json': { body: JSON.stringify({ training: { spot: true, maxWaitSeconds: 1800 } }) } });
    const error = await failure({ dataset: 'pokemon', hyperparameters: { seed: -1 } });
    expect(error.message).toMatch(/^The run has 2 problems: \(1\) .*maxWaitSeconds.*; \(2\) Invalid hyperparameters.*"seed": must be at least 0/s);
    expect(error.message).toContain('Fix the execution input or s3://lora-datasets/datasets/pokemon/train.json');
  });
});

describe('train.json', () => {
  test.each([
    ['not JSON', '{\n  "training": {\n    "spot": true,\n  }\n}', ['it is not valid JSON', 'line 4 column 3']],
    ['an unknown field', '{"hyperparameter": {}}', ['unknown field "hyperparameter": did you mean "hyperparameters"?']],
    ['a wrong type', '{"training": {"volumeSizeGb": "50"}}', ['"training.volumeSizeGb" = "50" is not allowed: expected an integer from 1 to 16384']],
    ['a dataset field', '{"dataset": "other"}', ['"dataset" belongs in the execution input only: train.json is already in its dataset folder; remove it']],
    ['an unreadable S3 base model', '{"baseModel": "s3://bucket/model.ckpt"}', ['Deploy the stack with -c baseModel=s3://bucket/model.ckpt']],
    ['not an object', '[]', ['it must be a JSON object']],
  ])('that is malformed (%s) fails with InvalidInput naming it', async (_, body, expected) => {
    folder({ ...BASIC, 'train.json': { body } });
    const error = await failure({ dataset: 'pokemon' });
    expect(error.name).toBe('InvalidInput');
    expect(error.message).toMatch(/^s3:\/\/lora-datasets\/datasets\/pokemon\/train\.json has 1 problem: /);
    expect(error.message).toContain('Fix train.json, then upload dataset.toml again to start a new run.');
    for (const text of expected) expect(error.message).toContain(text);
  });

  test('over 1 MB is refused without being read', async () => {
    folder({ ...BASIC, 'train.json': { body: '{}', size: 2 * 1024 * 1024 } });
    const error = await failure({ dataset: 'pokemon' });
    expect(error.name).toBe('InvalidInput');
    expect(error.message).toContain('train.json has 1 problem: it is 2097152 bytes, more than the 1048576 a train.json may have');
    expect(s3).not.toHaveReceivedCommand(GetObjectCommand);
  });

  test('is read with a bounded range', async () => {
    folder({ ...BASIC, 'train.json': { body: '{}' } });
    await prepared({ dataset: 'pokemon' });
    expect(s3).toHaveReceivedCommandWith(GetObjectCommand, { Bucket: 'lora-datasets', Key: 'datasets/pokemon/train.json', Range: 'bytes=0-1048576' });
  });

  test('missing is fine, and then it is not read', async () => {
    folder(BASIC);
    await prepared({ dataset: 'pokemon' });
    expect(s3).not.toHaveReceivedCommandWith(GetObjectCommand, { Key: 'datasets/pokemon/train.json' });
  });
});

describe('precedence: execution input > train.json > deploy-time settings, key by key', () => {
  const trainJson = {
    name: 'from-file',
    modelType: 'sdxl',
    training: { instanceType: 'ml.g5.2xlarge', spot: true, maxRuntimeSeconds: 7200, maxWaitSeconds: 9000 },
    endpoint: { instanceType: 'ml.g5.xlarge', instanceCount: 2 },
    hyperparameters: { max_train_steps: 400, learning_rate: '1e-4', network_dim: 16 },
  };

  test('each key comes from the first source that gives it', async () => {
    folder({ ...BASIC, 'train.json': { body: JSON.stringify(trainJson) } });
    const run = await prepared({
      dataset: 'pokemon',
      name: 'from-input',
      training: { spot: false, volumeSizeGb: 100 },
      endpoint: { instanceCount: 3 },
      hyperparameters: { max_train_steps: 800 },
    });
    expect(run.run).toMatch(/^lora-from-input-20250601115800-[0-9a-f]{6}$/);
    expect(run.serving.endpointName).toBe('lora-from-input');
    expect(run.modelType).toBe('sdxl');
    // The file changed the model type and gave no base model: that type's default, not the deploy-time sd15 one.
    expect(run.baseModel).toBe(DEFAULT_BASE_MODELS.sdxl);
    expect(run.training.resourceConfig).toEqual({ InstanceType: 'ml.g5.2xlarge', InstanceCount: 1, VolumeSizeInGB: 100 });
    expect(run.training.spot).toBe(false);
    expect(run.training.stoppingCondition).toEqual({ MaxRuntimeInSeconds: 7200 });
    expect(dedicated(run).endpointConfig.ProductionVariants[0]).toMatchObject({ InstanceType: 'ml.g5.xlarge', InitialInstanceCount: 3 });
    expect(run.training.hyperparameters).toEqual({
      max_train_steps: '800',
      learning_rate: '0.0001',
      network_dim: '16',
      model_type: 'sdxl',
      output_name: 'from-input',
      base_model: DEFAULT_BASE_MODELS.sdxl,
    });
  });

  test('without input or train.json, the deploy-time settings', async () => {
    folder(BASIC);
    const run = await prepared({ dataset: 'pokemon' });
    expect(run.modelType).toBe('sd15');
    expect(run.baseModel).toBe(DEFAULT_BASE_MODELS.sd15);
    expect(run.training.resourceConfig).toEqual({ InstanceType: 'ml.g4dn.xlarge', InstanceCount: 1, VolumeSizeInGB: 50 });
    expect(run.training.stoppingCondition).toEqual({ MaxRuntimeInSeconds: 3600, MaxWaitTimeInSeconds: 7200 });
    expect(run.training.spot).toBe(true);
    expect(run.training.hyperparameters).toEqual({ model_type: 'sd15', output_name: 'pokemon', base_model: DEFAULT_BASE_MODELS.sd15 });
  });

  test('the deploy-time base model applies to its own model type only', async () => {
    folder(BASIC);
    const settings = { ...SETTINGS, baseModel: 'someone/sd15-finetune' };
    expect((await prepared({ dataset: 'pokemon' }, settings)).baseModel).toBe('someone/sd15-finetune');
    expect((await prepared({ dataset: 'pokemon', modelType: 'sd15' }, settings)).baseModel).toBe('someone/sd15-finetune');
    expect((await prepared({ dataset: 'pokemon', modelType: 'sdxl' }, settings)).baseModel).toBe(DEFAULT_BASE_MODELS.sdxl);
    expect((await prepared({ dataset: 'pokemon', modelType: 'sdxl', baseModel: 'someone/sdxl-x' }, settings)).baseModel).toBe('someone/sdxl-x');
  });

  test('a given output_name is kept', async () => {
    folder(BASIC);
    const run = await prepared({ dataset: 'pokemon', hyperparameters: { output_name: 'pika.v2' } });
    expect(run.training.hyperparameters.output_name).toBe('pika.v2');
  });
});

describe('the base model decides channels, network isolation and the serving model', () => {
  test('a Hugging Face model: base_model hyperparameter, no channel, network on, BASE_MODEL_ID', async () => {
    folder(BASIC);
    const run = await prepared({ dataset: 'pokemon', baseModel: 'someone/my-model' });
    expect(run.training.hyperparameters.base_model).toBe('someone/my-model');
    expect(run.training.inputDataConfig).toEqual([
      {
        ChannelName: 'dataset',
        DataSource: { S3DataSource: { S3DataType: 'S3Prefix', S3Uri: 's3://lora-datasets/datasets/pokemon/', S3DataDistributionType: 'FullyReplicated' } },
        InputMode: 'File',
      },
    ]);
    expect(run.training.networkIsolation).toBe(false);
    expect(dedicated(run).networkIsolation).toBe(false);
    expect(dedicated(run).environment).toEqual({ MODEL_TYPE: 'sd15', LORA_SCALE: '1', BASE_MODEL_ID: 'someone/my-model' });
    expect(dedicated(run).additionalModelDataSources).toEqual([]);
  });

  test.each([
    ['a file', S3_MODEL, 'S3Object'],
    ['a folder', 's3://lora-models/sdxl/', 'S3Prefix'],
  ])('an S3 model (%s): a base_model channel, no base_model hyperparameter, isolated', async (_, model, dataType) => {
    folder(BASIC);
    const run = await prepared({ dataset: 'pokemon' }, { ...SETTINGS, baseModel: model, readableS3BaseModel: model, endpoint: { ...SETTINGS.endpoint, loraScale: 0.8 } });
    expect(run.baseModel).toBe(model);
    expect(run.training.hyperparameters).not.toHaveProperty('base_model');
    expect(run.training.inputDataConfig.map((c) => [c.ChannelName, c.DataSource.S3DataSource.S3Uri])).toEqual([
      ['dataset', 's3://lora-datasets/datasets/pokemon/'],
      ['base_model', model],
    ]);
    expect(run.training.networkIsolation).toBe(true);
    expect(dedicated(run).networkIsolation).toBe(true);
    expect(dedicated(run).environment).toEqual({ MODEL_TYPE: 'sd15', LORA_SCALE: '0.8' });
    expect(dedicated(run).additionalModelDataSources).toEqual([
      { ChannelName: 'base_model', S3DataSource: { S3Uri: model, S3DataType: dataType, CompressionType: 'None' } },
    ]);
  });
});

describe('KMS keys only for instance types without local storage', () => {
  test('ml.p3.2xlarge gets VolumeKmsKeyId and KmsKeyId; ml.g4dn.xlarge neither', async () => {
    folder(BASIC);
    const p3 = await prepared({ dataset: 'pokemon', training: { instanceType: 'ml.p3.2xlarge' }, endpoint: { instanceType: 'ml.p3.2xlarge' } });
    expect(p3.training.resourceConfig.VolumeKmsKeyId).toBe(SETTINGS.keyArn);
    expect(dedicated(p3).endpointConfig.KmsKeyId).toBe(SETTINGS.keyArn);
    const g4dn = await prepared({ dataset: 'pokemon' });
    expect(g4dn.training.resourceConfig).not.toHaveProperty('VolumeKmsKeyId');
    expect(dedicated(g4dn).endpointConfig).not.toHaveProperty('KmsKeyId');
  });

  test.each([
    ['ml.p2.xlarge', false],
    ['ml.p2.16xlarge', false],
    ['ml.p3.2xlarge', false],
    ['ml.p3.8xlarge', false],
    ['ml.p3.16xlarge', false],
    ['ml.p3dn.24xlarge', true],
    ['ml.g4dn.xlarge', true],
    ['ml.g5.2xlarge', true],
    ['ml.g6e.xlarge', true],
    ['ml.p4d.24xlarge', true],
    ['ml.p5.48xlarge', true],
  ])('%s has instance storage: %s', (type, expected) => {
    expect(hasInstanceStorage(type)).toBe(expected);
  });
});

describe('the prepared run', () => {
  test('has every per-run request value', async () => {
    folder(BASIC);
    const run = await prepared({ dataset: 'pokemon' });
    expect(run).toMatchObject({ settled: true, run: expect.stringMatching(/^lora-pokemon-20250601115800-[0-9a-f]{6}$/) });
    expect(run.training.jobName).toBe(run.run);
    expect(run.serving).toMatchObject({ modelName: run.run, endpointConfigName: run.run, endpointName: 'lora-pokemon' });
    const tags = [
      { Key: 'pipeline', Value: 'SageMakerLoraPipeline' },
      { Key: 'dataset', Value: 'pokemon' },
      { Key: 'run', Value: run.run },
    ];
    expect(run.tags).toEqual(tags);
    expect(dedicated(run).endpointConfig).toEqual({
      EndpointConfigName: run.run,
      ProductionVariants: [
        {
          VariantName: 'AllTraffic',
          ModelName: run.run,
          InstanceType: 'ml.g4dn.xlarge',
          InitialInstanceCount: 1,
          ContainerStartupHealthCheckTimeoutInSeconds: 1200,
          ModelDataDownloadTimeoutInSeconds: 1200,
        },
      ],
      Tags: tags,
    });
  });

  test.each([
    ['a long name', 'a-very-long-dataset-folder-name-that-goes-on-and-on-well-past-every-sagemaker-limit-0123456789'],
    ['a unicode name', 'ポケモン図鑑 #1 (v2)'],
    ['an accented name', 'pokémon'],
  ])('for %s, names fit SageMaker and tags are valid', async (_, name) => {
    folder(BASIC, { name });
    const run = await prepared({ dataset: name });
    for (const resource of [run.run, run.serving.endpointName]) {
      expect(resource.length).toBeLessThanOrEqual(63);
      expect(resource).toMatch(SAGEMAKER_NAME);
      expect(resource).toMatch(/^lora-/);
    }
    for (const tag of run.tags) expect(tag.Value).toMatch(TAG_VALUE);
    expect(run.dataset.name).toBe(name);
    expect(run.training.hyperparameters.output_name).toMatch(/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/);
  });

  test('is the same on every call for one execution, however late it settles', async () => {
    folder({ ...BASIC, 'train.json': { body: '{"hyperparameters": {"seed": 7, "max_train_steps": 100}}' } });
    const first = await call({ dataset: 'pokemon' });
    const later = await call({ dataset: 'pokemon' }, SETTINGS, new Date(NOW.getTime() + 600_000));
    expect(later).toEqual(first);
    expect(JSON.stringify(later)).toBe(JSON.stringify(first));
  });
});

describe('tag values', () => {
  test('a valid value is kept; another is cleaned and keeps a hash of the original', () => {
    expect(tagValue('pokémon 2.0')).toBe('pokémon 2.0');
    const cleaned = tagValue('a#b');
    expect(cleaned).toMatch(/^a_b-[0-9a-f]{8}$/);
    expect(tagValue('a$b')).not.toBe(cleaned);
    expect(tagValue('x'.repeat(300))).toMatch(TAG_VALUE);
    expect(tagValue('x'.repeat(300))).toHaveLength(256);
  });
});

describe('the dataset folder', () => {
  test('with no objects fails with InvalidDataset', async () => {
    folder({});
    const error = await failure({ dataset: 'pokemon' });
    expect(error.name).toBe('InvalidDataset');
    expect(error.message).toBe(
      'There are no objects under s3://lora-datasets/datasets/pokemon/; upload the dataset folder (images, .txt captions, dataset.toml) first.',
    );
  });

  test('with only a folder marker counts as empty', async () => {
    folder({ '': { body: '' } });
    expect((await failure({ dataset: 'pokemon' })).message).toContain('There are no objects under');
  });

  test('without images fails with InvalidDataset, naming mixed-case extensions kohya ignores', async () => {
    folder({ 'a.Png': PNG, 'a.txt': CAPTION, 'b.gif': PNG, 'dataset.toml': { body: '' } });
    const error = await failure({ dataset: 'pokemon' });
    expect(error.name).toBe('InvalidDataset');
    expect(error.message).toContain('The dataset folder s3://lora-datasets/datasets/pokemon/ has 1 problem: the dataset folder has no images (.png, .jpg, .jpeg, .webp, .bmp, in lower or upper case)');
    expect(error.message).toContain('such as a.Png: rename them');
    expect(error.message).toContain('then upload dataset.toml again to start a new run');
  });

  test('without a configuration of its own, images count where the generated one looks: top level and first-level subfolders', async () => {
    folder({
      'a.png': PNG,
      'a.txt': CAPTION,
      '10_pikachu/b.webp': PNG,
      'style/c.BMP': PNG,
      'style/deeper/d.png': PNG,
      '0_skipped/e.png': PNG,
      '.hidden/f.png': PNG,
      '.g.png': PNG,
      'dataset.toml': { body: '# defaults\n' },
      'train.json': { body: '{"hyperparameters": {"allow_missing_captions": true}}' },
    });
    const run = await prepared({ dataset: 'pokemon' });
    // b.webp's caption is its folder's class tokens; c.BMP has none, which allow_missing_captions lets through.
    expect(run.dataset).toMatchObject({ images: 3, captions: 2, skippedCount: 4 });
    expect(run.dataset.skipped).toEqual([
      '.g.png: a hidden file, kohya ignores it',
      '.hidden/f.png: in a hidden folder, which the configuration does not train',
      '0_skipped/e.png: in a folder or subset of 0 repeats, which kohya skips',
      'style/deeper/d.png: not in a folder the dataset configuration trains',
    ]);
  });

  test('an empty caption file is refused, as kohya refuses it; the pre-flight reads images and captions by ranges', async () => {
    folder({ ...BASIC, 'b.txt': { body: '' } });
    const error = await failure({ dataset: 'pokemon' });
    expect(error.name).toBe('InvalidDataset');
    expect(error.message).toContain('1 caption file(s) are empty, which kohya refuses: b.txt');
    expect(s3).toHaveReceivedCommandWith(GetObjectCommand, { Key: 'datasets/pokemon/a.png', Range: 'bytes=0-4095' });
    expect(s3).toHaveReceivedCommandWith(GetObjectCommand, { Key: 'datasets/pokemon/a.txt', Range: 'bytes=0-4095' });
    // The empty object is not read: S3 refuses any range of it.
    expect(s3).not.toHaveReceivedCommandWith(GetObjectCommand, { Key: 'datasets/pokemon/b.txt' });
  });

  test('an image that does not decode is refused before any SageMaker call; skipped files are listed, at most 20', async () => {
    const strays = Object.fromEntries(Array.from({ length: 25 }, (_, i) => [`notes/${String(i).padStart(2, '0')}.md`, CAPTION]));
    folder({ ...BASIC, ...strays });
    const run = await prepared({ dataset: 'pokemon' });
    expect(run.dataset.skippedCount).toBe(25);
    expect(run.dataset.skipped).toHaveLength(20);
    expect(run.dataset.skipped?.[0]).toBe('notes/00.md: not an image kohya trains, nor the caption of one');
    folder({ ...BASIC, 'b.JPG': { body: 'not an image' } });
    const error = await failure({ dataset: 'pokemon' });
    expect(error.message).toContain("1 image(s) cannot be decoded: b.JPG (its content is not a PNG, JPEG, WEBP, BMP or GIF image)");
  });

  test('an image deleted between listing and reading: wait, as for any change', async () => {
    folder(BASIC);
    s3.on(GetObjectCommand, { Key: 'datasets/pokemon/a.png' }).rejects(new NoSuchKey({ message: 'gone', $metadata: {} }));
    expect(await call({ dataset: 'pokemon' })).toEqual({ settled: false, waitSeconds: 60, reason: 'a.png was deleted or replaced while it was being read' });
  });

  test('a nested image alone is not trained by the generated configuration', async () => {
    folder({ 'style/deeper/d.png': PNG, 'dataset.toml': { body: '' } });
    expect((await failure({ dataset: 'pokemon' })).message).toContain('at its top level or in its first-level subfolders');
  });

  test('with a dataset.toml of its own, images count anywhere in the folder', async () => {
    folder({ 'images/deeper/d.png': PNG, 'images/deeper/d.txt': CAPTION, 'dataset.toml': { body: "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'images/deeper'\n" } });
    expect((await prepared({ dataset: 'pokemon' })).dataset).toMatchObject({ images: 1, captions: 1 });
  });

  test('is listed page by page', async () => {
    folder({ 'x1.txt': CAPTION, 'x2.txt': CAPTION, 'z.txt': CAPTION, 'dataset.toml': { body: '' }, 'z.png': PNG }, { pageSize: 2 });
    expect((await prepared({ dataset: 'pokemon' })).dataset.images).toBe(1);
    expect(s3).toHaveReceivedCommandTimes(ListObjectsV2Command, 3);
  });

  test.each([
    ['a syntax error', 'a = 1\nb = = 2\n', 'it is not valid TOML: invalid value at line 2, column 5; an empty dataset.toml uses the default configuration'],
    ['datasets that are not tables', 'datasets = 1\n', 'it has no [[datasets]] table; add one with a [[datasets.subsets]] image_dir, or leave the file empty'],
    ['subsets that are not tables', '[[datasets]]\nsubsets = ["images"]\n', 'datasets[0].subsets[0] must be a table'],
    ['general that is not a table', 'general = "x"\n', 'general must be a table'],
    ['an image_dir outside the folder', "[[datasets]]\n[[datasets.subsets]]\nimage_dir = '../../../etc'\n", "datasets[0].subsets[0].image_dir '../../../etc' leads outside the dataset folder"],
  ])('with a dataset.toml with %s fails with InvalidDataset, in the training container\'s words', async (_, body, expected) => {
    folder({ ...BASIC, 'dataset.toml': { body } });
    const error = await failure({ dataset: 'pokemon' });
    expect(error.name).toBe('InvalidDataset');
    expect(error.message).toContain(`The dataset folder s3://lora-datasets/datasets/pokemon/ has 1 problem: dataset.toml: ${expected}`);
  });

  test('with a dataset.toml over 1 MB fails with InvalidDataset without reading it', async () => {
    folder({ ...BASIC, 'dataset.toml': { body: '', size: 1024 * 1024 + 1 } });
    const error = await failure({ dataset: 'pokemon' });
    expect(error.name).toBe('InvalidDataset');
    expect(error.message).toContain('dataset.toml is 1048577 bytes, more than the 1048576');
    expect(s3).not.toHaveReceivedCommand(GetObjectCommand);
  });
});

describe('settling', () => {
  test('a folder changed less than settleSeconds ago: wait the rest', async () => {
    folder({ ...BASIC, 'c.png': { ...PNG, age: 12 }, 'c.txt': CAPTION });
    const result = (await call({ dataset: 'pokemon' })) as UnsettledRun;
    expect(result).toEqual({
      settled: false,
      waitSeconds: 48,
      reason: 'datasets/pokemon/c.png changed 12 s ago; a run starts once nothing in s3://lora-datasets/datasets/pokemon/ has changed for 60 s',
    });
    // Nothing but the listing is read while the folder changes.
    expect(s3).not.toHaveReceivedCommand(GetObjectCommand);
  });

  test('a change this very second: wait a whole settle period; at settleSeconds, settled', async () => {
    folder({ ...BASIC, 'c.png': { ...PNG, age: 0 }, 'c.txt': CAPTION });
    expect(await call({ dataset: 'pokemon' })).toMatchObject({ settled: false, waitSeconds: 60 });
    folder({ ...BASIC, 'c.png': { ...PNG, age: 60 }, 'c.txt': CAPTION });
    expect(await call({ dataset: 'pokemon' })).toMatchObject({ settled: true });
  });

  test('the wait is at least one second', async () => {
    folder({ ...BASIC, 'c.png': { ...PNG, age: 59.7 }, 'c.txt': CAPTION });
    expect(await call({ dataset: 'pokemon' }, { ...SETTINGS, maxSettleWaitSeconds: 1000 })).toMatchObject({ settled: false, waitSeconds: 1 });
  });

  test('the waits are long enough that waiting maxSettleWaitSeconds stays far under Step Functions\' 25,000 history events', async () => {
    // About 9 events a pass (Wait, Lambda task, Choice): at most 2000 passes.
    const settings = { ...SETTINGS, settleSeconds: 1, maxSettleWaitSeconds: 10_800 };
    folder({ ...BASIC, 'c.png': { ...PNG, age: 0.5 }, 'c.txt': CAPTION });
    const changing = (await call({ dataset: 'pokemon' }, settings)) as UnsettledRun;
    s3.on(ListMultipartUploadsCommand).resolves({ Uploads: [{ Key: 'datasets/pokemon/big.png', UploadId: 'u1' }] });
    const uploading = (await call({ dataset: 'pokemon' }, settings)) as UnsettledRun;
    for (const { waitSeconds } of [changing, uploading]) {
      expect(waitSeconds).toBe(6);
      expect((settings.maxSettleWaitSeconds / waitSeconds) * 9).toBeLessThan(25_000);
    }
  });

  test('a folder still changing maxSettleWaitSeconds after the start fails with InvalidDataset', async () => {
    folder({ ...BASIC, 'c.png': { ...PNG, age: 5 }, 'c.txt': CAPTION });
    const error = await failure({ dataset: 'pokemon' }, { ...SETTINGS, maxSettleWaitSeconds: 100 });
    expect(error.name).toBe('InvalidDataset');
    expect(error.message).toContain('s3://lora-datasets/datasets/pokemon/ is still changing after 120 s (datasets/pokemon/c.png changed 5 s ago)');
    expect(error.message).toContain('upload dataset.toml again to start a new run');
    // Within the limit, it waits.
    expect(await call({ dataset: 'pokemon' }, { ...SETTINGS, maxSettleWaitSeconds: 120 })).toMatchObject({ settled: false });
  });

  test('a bad execution input fails at once while the folder is still changing', async () => {
    folder({ ...BASIC, 'c.png': { ...PNG, age: 1 }, 'c.txt': CAPTION });
    expect((await failure({ dataset: 'pokemon', training: { spot: 'no' } })).name).toBe('InvalidInput');
  });

  test('train.json is part of the upload: read only once the folder has settled, so a fixed one arriving late counts', async () => {
    folder({ ...BASIC, 'c.png': { ...PNG, age: 1 }, 'c.txt': CAPTION, 'train.json': { body: '{"training": {"spot": "no"}}' } });
    expect(await call({ dataset: 'pokemon' })).toMatchObject({ settled: false });
    expect(s3).not.toHaveReceivedCommand(GetObjectCommand);
    // Control: settled, the same train.json is refused.
    folder({ ...BASIC, 'train.json': { body: '{"training": {"spot": "no"}}' } });
    expect((await failure({ dataset: 'pokemon' })).name).toBe('InvalidInput');
  });

  test('a multipart upload still open in the folder: wait, however old the listed objects are', async () => {
    folder(BASIC);
    s3.on(ListMultipartUploadsCommand).resolves({ Uploads: [{ Key: 'datasets/pokemon/big.png', UploadId: 'u1' }] });
    expect(await call({ dataset: 'pokemon' })).toEqual({
      settled: false,
      waitSeconds: 60,
      reason: 'datasets/pokemon/big.png still being uploaded into s3://lora-datasets/datasets/pokemon/',
    });
    expect(s3).toHaveReceivedCommandWith(ListMultipartUploadsCommand, { Bucket: 'lora-datasets', Prefix: 'datasets/pokemon/' });
    // An upload open for longer than the run may wait fails the run, as a folder that keeps changing does.
    const error = await failure({ dataset: 'pokemon' }, { ...SETTINGS, maxSettleWaitSeconds: 100 });
    expect(error.name).toBe('InvalidDataset');
    expect(error.message).toContain('datasets/pokemon/big.png is still being uploaded');
  });

  test('settleSeconds 0: settled at once, even with a clock behind S3\'s', async () => {
    folder({ ...BASIC, 'c.png': { ...PNG, age: -0.8 }, 'c.txt': CAPTION });
    expect(await call({ dataset: 'pokemon' }, { ...SETTINGS, settleSeconds: 0 })).toMatchObject({ settled: true });
    // Control: with a settle period, the same folder waits.
    expect(await call({ dataset: 'pokemon' })).toMatchObject({ settled: false, waitSeconds: 60 });
  });

  test('a train.json deleted between listing and reading: wait', async () => {
    folder({ ...BASIC, 'train.json': { body: '{}' } });
    s3.on(GetObjectCommand, { Key: 'datasets/pokemon/train.json' }).rejects(new NoSuchKey({ message: 'gone', $metadata: {} }));
    expect(await call({ dataset: 'pokemon' })).toEqual({ settled: false, waitSeconds: 60, reason: 'train.json was deleted or replaced while it was being read' });
  });
});

describe('other errors propagate as they are, for the workflow to retry', () => {
  test('an S3 error keeps its name', async () => {
    s3.on(ListObjectsV2Command).rejects(new S3ServiceException({ name: 'SlowDown', $fault: 'server', $metadata: {}, message: 'Please reduce your request rate.' }));
    const error = await failure({ dataset: 'pokemon' });
    expect(error.name).toBe('SlowDown');
    expect(console.error).toHaveBeenCalledWith(expect.stringContaining('"error":"SlowDown"'));
  });

  test('an event without a valid execution is a workflow bug, not the user\'s', async () => {
    const error = await handler()({ request: { dataset: 'pokemon' }, execution: { name: '', startTime: 'yesterday' } }).catch((e: unknown) => e as Error);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).name).toBe('Error');
    expect((error as Error).message).toContain('Prepare\'s event has no valid "execution" {name, startTime} (execution.name: ');
    expect((error as Error).message).toContain('execution.startTime: an ISO 8601 timestamp');
    expect(s3).not.toHaveReceivedAnyCommand();
  });

  test('a refusal is logged as a warning with its reason', async () => {
    await failure({});
    expect(console.warn).toHaveBeenCalledWith(expect.stringContaining('"error":"InvalidInput"'));
  });
});

describe('SETTINGS', () => {
  test('valid settings parse to themselves', () => {
    expect(parseSettings(JSON.stringify(SETTINGS))).toEqual(SETTINGS);
  });

  test.each([
    [undefined, 'The SETTINGS environment variable is not set'],
    ['{', 'The SETTINGS environment variable is not valid JSON'],
    [JSON.stringify({ ...SETTINGS, settleSeconds: -1, namePrefix: 'Bad_Prefix' }), 'is not valid PrepareSettings: settleSeconds: '],
    [JSON.stringify({ ...SETTINGS, extra: 1 }), 'Unrecognized key: "extra"'],
  ])('%s is refused', (text, expected) => {
    expect(() => parseSettings(text)).toThrow(expected);
  });

  test('the function module refuses bad SETTINGS at cold start, and exports a handler with good ones', () => {
    const index = path.resolve(__dirname, '../../lambda/prepare/index');
    const load = (settings: string | undefined) => requireWithEnv<typeof import('../../lambda/prepare/index')>(index, { SETTINGS: settings });
    expect(() => load(JSON.stringify({ ...SETTINGS, keyArn: 'not-an-arn' }))).toThrow('is not valid PrepareSettings: keyArn: ');
    expect(() => load(undefined)).toThrow('The SETTINGS environment variable is not set');
    expect(typeof load(JSON.stringify(SETTINGS)).handler).toBe('function');
  });
});

describe('serving mode', () => {
  const SHARED_ENDPOINT = { endpointName: 'lora-shared-sd15', inferenceComponentName: 'lora-shared-sd15' };
  const SHARED: PrepareSettings = { ...SETTINGS, endpoint: { ...SETTINGS.endpoint, mode: 'shared', shared: SHARED_ENDPOINT } };
  const DEDICATED: PrepareSettings = { ...SETTINGS, endpoint: { ...SETTINGS.endpoint, mode: 'dedicated', shared: undefined } };

  test('a shared deployment serves a run of its modelType and baseModel on the shared endpoint', async () => {
    folder(BASIC);
    const run = await prepared({ dataset: 'pokemon' }, SHARED);
    expect(run.serving).toEqual({ mode: 'shared', ...SHARED_ENDPOINT });
    expect(run.lora).toEqual({ name: 'pokemon' });
  });

  test('a dedicated deployment gives every run its own endpoint, and says no reason', async () => {
    folder(BASIC);
    const run = await prepared({ dataset: 'pokemon' }, DEDICATED);
    expect(dedicated(run).endpointName).toBe('lora-pokemon');
    expect(run.serving).not.toHaveProperty('dedicatedBecause');
  });

  test.each([
    [
      'another model type',
      { modelType: 'sdxl' },
      "its modelType sdxl (execution input) is not the shared endpoint's sd15, and its baseModel stabilityai/stable-diffusion-xl-base-1.0 " +
        "(default for the model type) is not the shared endpoint's stable-diffusion-v1-5/stable-diffusion-v1-5",
    ],
    ['another base model', { baseModel: 'someone/my-model' }, "its baseModel someone/my-model (execution input) is not the shared endpoint's stable-diffusion-v1-5/stable-diffusion-v1-5"],
  ])('%s in a shared deployment: a dedicated endpoint, saying why', async (_, options, why) => {
    folder(BASIC);
    const run = await prepared({ dataset: 'pokemon', ...options }, SHARED);
    expect(run.serving.mode).toBe('dedicated');
    expect(dedicated(run).dedicatedBecause).toBe(`The shared endpoint lora-shared-sd15 cannot serve this run: ${why}; it gets an endpoint of its own.`);
    expect(dedicated(run).endpointName).toBe('lora-pokemon');
  });

  test('the reasons come from train.json too, and both are given', async () => {
    folder({ ...BASIC, 'train.json': { body: JSON.stringify({ modelType: 'sdxl', baseModel: 'someone/xl-model' }) } });
    const run = await prepared({ dataset: 'pokemon' }, SHARED);
    expect(dedicated(run).dedicatedBecause).toContain('its modelType sdxl (train.json) is not');
    expect(dedicated(run).dedicatedBecause).toContain(', and its baseModel someone/xl-model (train.json) is not');
  });

  test("the LoRA name is the run's stable name: execution input name, else the folder; a name the server refuses is slugged with a hash", async () => {
    folder(BASIC, { name: 'Pokémon cards' });
    expect((await prepared({ dataset: 'Pokémon cards' }, SHARED)).lora.name).toMatch(/^pokemon-cards-[0-9a-f]{8}$/);
    folder(BASIC, { name: 'My_Set-2' });
    expect((await prepared({ dataset: 'My_Set-2' }, SHARED)).lora.name).toBe('My_Set-2');
    expect((await prepared({ dataset: 'My_Set-2', name: 'hero' }, SHARED)).lora.name).toBe('hero');
  });

  test('endpoint options of a run served by the shared endpoint are refused, naming each and where it came from', async () => {
    folder({ ...BASIC, 'train.json': { body: JSON.stringify({ endpoint: { instanceCount: 2 } }) } });
    const error = await failure({ dataset: 'pokemon', endpoint: { name: 'lora-mine', instanceType: 'ml.g5.xlarge' } }, SHARED);
    expect(error.name).toBe('InvalidInput');
    expect(error.message).toContain('"endpoint.name" = "lora-mine", "endpoint.instanceType" (execution input), "endpoint.instanceCount" (train.json) apply only to a dedicated endpoint');
    expect(error.message).toContain('deploy with -c endpoint.mode=dedicated');
    // Control: the same options are a dedicated run's own.
    expect(dedicated(await prepared({ dataset: 'pokemon', endpoint: { name: 'lora-mine', instanceType: 'ml.g5.xlarge' } }, DEDICATED)).endpointName).toBe('lora-mine');
  });

  test("a dedicated endpoint may not take the shared endpoint's name, in either mode", async () => {
    folder(BASIC, { name: 'shared-sd15' });
    const named = await failure({ dataset: 'shared-sd15', modelType: 'sdxl' }, SHARED);
    expect(named.name).toBe('InvalidInput');
    expect(named.message).toContain('the run\'s name "shared-sd15" gives the endpoint name lora-shared-sd15, which is reserved for the shared endpoint');
    const explicit = await failure({ dataset: 'shared-sd15', endpoint: { name: 'lora-shared-sdxl' } }, DEDICATED);
    expect(explicit.message).toContain('"endpoint.name" gives the endpoint name lora-shared-sdxl, which is reserved for the shared endpoint');
    // SageMaker does not tell endpoint names apart by case: another case is the same endpoint.
    const mixedCase = await failure({ dataset: 'shared-sd15', endpoint: { name: 'lora-Shared-SDXL' } }, DEDICATED);
    expect(mixedCase.message).toContain('"endpoint.name" gives the endpoint name lora-Shared-SDXL, which is reserved for the shared endpoint');
    // Control: a name beside it is fine.
    folder(BASIC, { name: 'shared-sd15-cards' });
    expect(dedicated(await prepared({ dataset: 'shared-sd15-cards' }, DEDICATED)).endpointName).toBe('lora-shared-sd15-cards');
  });

  test('SETTINGS: shared mode needs the shared endpoint, dedicated mode must not have one', () => {
    expect(parseSettings(JSON.stringify(SHARED))).toEqual(SHARED);
    expect(() => parseSettings(JSON.stringify({ ...SETTINGS, endpoint: { ...SETTINGS.endpoint, mode: 'shared' } }))).toThrow('endpoint.shared: required in shared mode');
    expect(() => parseSettings(JSON.stringify({ ...SETTINGS, endpoint: { ...SETTINGS.endpoint, mode: 'dedicated', shared: SHARED_ENDPOINT } }))).toThrow(
      'endpoint.shared: must be absent in dedicated mode',
    );
    expect(() => parseSettings(JSON.stringify({ ...SETTINGS, endpoint: { ...SETTINGS.endpoint, mode: 'both' } }))).toThrow('endpoint.mode');
  });
});
