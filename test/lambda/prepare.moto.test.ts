import * as fs from 'node:fs';
import * as path from 'node:path';
import { CreateBucketCommand, PutObjectCommand, GetObjectCommand, CreateMultipartUploadCommand, DeleteObjectCommand } from '@aws-sdk/client-s3';
import type { PrepareSettings } from '../../lambda/shared/contract';
import { DEFAULT_BASE_MODELS } from '../../lambda/shared/models';
import { createHandler } from '../../lambda/prepare/handler';
import { CASES, FIXTURES, fixtureFiles, loadCase } from '../fixtures/datasets/cases';
import { motoAvailable, useMotoS3 } from '../support/moto';
import { PREPARE_SETTINGS } from '../support/prepare';

// Settled at once: the uploads below are seconds old.
const SETTINGS: PrepareSettings = { ...PREPARE_SETTINGS, settleSeconds: 0 };
const EXECUTION = { name: 'pokemon-0123456789abcdef', startTime: new Date().toISOString() };

const describeWithMoto = motoAvailable() ? describe : describe.skip;

/** A real 64x64 PNG: Prepare reads the header of every image. */
const PNG = fs.readFileSync(path.join(FIXTURES, 'clean', 'a.png'));
const JPEG = fs.readFileSync(path.join(FIXTURES, 'clean', 'b.jpg'));

describeWithMoto('Prepare against moto, through the real S3 client', () => {
  const aws = useMotoS3([SETTINGS.datasetsBucket]);
  const put = (key: string, body: string | Uint8Array) => aws.s3.send(new PutObjectCommand({ Bucket: SETTINGS.datasetsBucket, Key: key, Body: body }));

  beforeEach(() => {
    jest.spyOn(console, 'log').mockImplementation(() => undefined);
    jest.spyOn(console, 'warn').mockImplementation(() => undefined);
  });
  afterEach(() => jest.restoreAllMocks());

  test('prepares a run from an uploaded folder, its dataset.toml and its train.json', async () => {
    await put('datasets/pokemon/0001.png', PNG);
    await put('datasets/pokemon/0001.txt', 'a pikachu');
    await put('datasets/pokemon/0002.JPG', JPEG);
    await put('datasets/pokemon/0002.txt', 'a raichu');
    await put('datasets/pokemon/notes.md', 'ignored');
    await put('datasets/pokemon/dataset.toml', "[general]\ncaption_extension = '.txt'\n[[datasets]]\nresolution = 512\n[[datasets.subsets]]\nimage_dir = '.'\n");
    await put('datasets/pokemon/train.json', JSON.stringify({ training: { spot: false }, hyperparameters: { max_train_steps: 200 } }));
    await put('datasets/other/0003.png', 'another folder');

    const handler = createHandler({ s3: aws.s3, settings: SETTINGS });
    const result = await handler({ request: { dataset: 's3://lora-datasets/datasets/pokemon/', endpoint: { instanceCount: 2 } }, execution: EXECUTION });

    expect(result).toMatchObject({
      settled: true,
      run: expect.stringMatching(/^lora-pokemon-\d{14}-[0-9a-f]{6}$/),
      dataset: { name: 'pokemon', uri: 's3://lora-datasets/datasets/pokemon/', images: 2, captions: 2, skipped: ['notes.md: not an image kohya trains, nor the caption of one'], skippedCount: 1 },
      modelType: 'sd15',
      baseModel: DEFAULT_BASE_MODELS.sd15,
      training: {
        hyperparameters: { max_train_steps: '200', model_type: 'sd15', output_name: 'pokemon', base_model: DEFAULT_BASE_MODELS.sd15 },
        spot: false,
        stoppingCondition: { MaxRuntimeInSeconds: 3600 },
        networkIsolation: false,
      },
      serving: { endpointName: 'lora-pokemon', environment: { MODEL_TYPE: 'sd15', LORA_SCALE: '1', BASE_MODEL_ID: DEFAULT_BASE_MODELS.sd15 } },
    });
    if (!result.settled || result.serving.mode !== 'dedicated') throw new Error('not a settled dedicated run');
    expect(result.serving.endpointConfig.ProductionVariants[0].InitialInstanceCount).toBe(2);
    // The same answer on the next call of the settle loop.
    expect(await handler({ request: { dataset: 'pokemon', endpoint: { instanceCount: 2 } }, execution: EXECUTION })).toEqual(result);
  });

  test('in a shared deployment, the same folder is served by the shared endpoint, nothing of its own to deploy', async () => {
    await put('datasets/pokemon/0001.png', PNG);
    await put('datasets/pokemon/0001.txt', 'a pikachu');
    const shared = { endpointName: 'lora-shared-sd15', inferenceComponentName: 'lora-shared-sd15' };
    const handler = createHandler({ s3: aws.s3, settings: { ...SETTINGS, endpoint: { ...SETTINGS.endpoint, mode: 'shared', shared } } });
    const result = await handler({ request: { dataset: 'pokemon' }, execution: EXECUTION });
    expect(result).toMatchObject({ settled: true, lora: { name: 'pokemon' }, serving: { mode: 'shared', ...shared } });
  });

  test('a bad dataset.toml and an empty folder are refused as InvalidDataset', async () => {
    await put('datasets/broken/a.png', 'x');
    await put('datasets/broken/dataset.toml', '[[datasets]\n');
    const handler = createHandler({ s3: aws.s3, settings: SETTINGS });
    await expect(handler({ request: { dataset: 'broken' }, execution: EXECUTION })).rejects.toMatchObject({
      name: 'InvalidDataset',
      message: expect.stringContaining('The dataset folder s3://lora-datasets/datasets/broken/ has 1 problem: dataset.toml: it is not valid TOML'),
    });
    await expect(handler({ request: { dataset: 'missing' }, execution: EXECUTION })).rejects.toMatchObject({
      name: 'InvalidDataset',
      message: expect.stringContaining('There are no objects under s3://lora-datasets/datasets/missing/'),
    });
  });

  test('an empty train.json is refused as InvalidInput, not read (S3 refuses a byte range of an empty object)', async () => {
    await put('datasets/blank/a.png', 'x');
    await put('datasets/blank/train.json', '');
    const handler = createHandler({ s3: aws.s3, settings: SETTINGS });
    await expect(handler({ request: { dataset: 'blank' }, execution: EXECUTION })).rejects.toMatchObject({
      name: 'InvalidInput',
      message: expect.stringContaining('s3://lora-datasets/datasets/blank/train.json'),
    });
    // Control: the bounded read of an empty object is what S3 (here moto) refuses.
    await expect(aws.s3.send(new GetObjectCommand({ Bucket: SETTINGS.datasetsBucket, Key: 'datasets/blank/train.json', Range: 'bytes=0-1048576' }))).rejects.toMatchObject({
      name: 'InvalidRange',
    });
  });

  test('a multipart upload still open in the folder keeps the run waiting', async () => {
    await put('datasets/big/a.png', 'x');
    await aws.s3.send(new CreateMultipartUploadCommand({ Bucket: SETTINGS.datasetsBucket, Key: 'datasets/big/b.png' }));
    const handler = createHandler({ s3: aws.s3, settings: SETTINGS });
    expect(await handler({ request: { dataset: 'big' }, execution: EXECUTION })).toMatchObject({ settled: false, reason: expect.stringContaining('datasets/big/b.png still being uploaded') });
  });

  test.each(CASES)('the fixture %s: Prepare reaches the outcome the training container reaches, reading by ranges', async (name) => {
    const { spec, root } = loadCase(name);
    const folder = name.replace(/[^a-z0-9-]/g, '-');
    for (const file of fixtureFiles(root)) await put(`datasets/${folder}/${file}`, fs.readFileSync(path.join(root, file)));
    if (Object.keys(spec.hyperparameters).length > 0) await put(`datasets/${folder}/train.json`, JSON.stringify({ hyperparameters: spec.hyperparameters }));
    const handler = createHandler({ s3: aws.s3, settings: { ...SETTINGS, modelType: spec.modelType } });
    const outcome = await handler({ request: { dataset: folder }, execution: EXECUTION }).then(
      (result) => ({ result }),
      (error: Error) => ({ error }),
    );
    if (spec.expected.outcome === 'ok') {
      if (!('result' in outcome) || !outcome.result.settled) throw new Error(`expected a prepared run, got ${JSON.stringify(outcome)}`);
      const { dataset } = outcome.result;
      expect({ images: dataset.images, captions: dataset.captions, skipped: dataset.skipped?.map((entry) => entry.split(': ')[0]) }).toEqual({
        images: spec.expected.images,
        captions: spec.expected.captions,
        skipped: spec.expected.skipped,
      });
    } else {
      if (!('error' in outcome)) throw new Error(`expected a refusal, got ${JSON.stringify(outcome.result)}`);
      expect(outcome.error.name).toBe('InvalidDataset');
      for (const mention of [...spec.expected.mentions, ...spec.expected.files]) expect(outcome.error.message).toContain(mention);
    }
  });

  test('a range past the end of a short object gives the whole object, as the header reads expect', async () => {
    await put('datasets/short/a.png', PNG);
    const object = await aws.s3.send(new GetObjectCommand({ Bucket: SETTINGS.datasetsBucket, Key: 'datasets/short/a.png', Range: 'bytes=0-4095' }));
    expect((await object.Body?.transformToByteArray())?.length).toBe(PNG.length);
    const first = await aws.s3.send(new GetObjectCommand({ Bucket: SETTINGS.datasetsBucket, Key: 'datasets/short/a.png', Range: 'bytes=0-32' }));
    expect(Buffer.from((await first.Body?.transformToByteArray()) ?? [])).toEqual(PNG.subarray(0, 33));
  });

  test('a FLUX.1 base model folder in another bucket is listed through the real client: four files pass, three are refused', async () => {
    await put('datasets/fox/0001.png', PNG);
    await put('datasets/fox/0001.txt', 'a fox');
    await aws.s3.send(new CreateBucketCommand({ Bucket: 'lora-models' }));
    const files = ['flux1-dev.safetensors', 'ae.safetensors', 'clip_l.safetensors', 't5xxl_fp16.safetensors'];
    for (const name of files) await aws.s3.send(new PutObjectCommand({ Bucket: 'lora-models', Key: `flux/${name}`, Body: 'x' }));
    const flux: PrepareSettings = {
      ...SETTINGS,
      modelType: 'flux1',
      baseModel: 's3://lora-models/flux/',
      readableS3BaseModel: 's3://lora-models/flux/',
      training: { ...SETTINGS.training, instanceType: 'ml.g5.2xlarge', volumeSizeGb: 150 },
      endpoint: { ...SETTINGS.endpoint, instanceType: 'ml.g6e.xlarge' },
    };
    const handler = createHandler({ s3: aws.s3, settings: flux });
    await expect(handler({ request: { dataset: 'fox' }, execution: EXECUTION })).resolves.toMatchObject({ settled: true, modelType: 'flux1', training: { networkIsolation: true } });
    await aws.s3.send(new DeleteObjectCommand({ Bucket: 'lora-models', Key: 'flux/clip_l.safetensors' }));
    await expect(handler({ request: { dataset: 'fox' }, execution: EXECUTION })).rejects.toMatchObject({
      name: 'InvalidInput',
      message: expect.stringContaining('s3://lora-models/flux/ has no clip_l.safetensors'),
    });
  });

  test('an S3 error that is not a refusal propagates with its own name', async () => {
    const handler = createHandler({ s3: aws.s3, settings: { ...SETTINGS, datasetsBucket: 'no-such-bucket' } });
    jest.spyOn(console, 'error').mockImplementation(() => undefined);
    await expect(handler({ request: { dataset: 'pokemon' }, execution: EXECUTION })).rejects.toMatchObject({ name: 'NoSuchBucket' });
  });
});
