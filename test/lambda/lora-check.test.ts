import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { InvokeEndpointCommand, ModelError, ModelNotReadyException, SageMakerRuntimeClient, ValidationError } from '@aws-sdk/client-sagemaker-runtime';
import { mockClient } from 'aws-sdk-client-mock';
import 'aws-sdk-client-mock-jest';
import { checkLora } from '../../lambda/lora-check/check';
import { smokeTestEndpoint } from '../../lambda/lora-check/dedicated';
import { MIN_MEAN_ABSOLUTE_DIFFERENCE } from '../../lambda/lora-check/image-difference';
import { decodePng, encodePng, type RawImage } from '../../lambda/lora-check/png';
import { DEFAULT_SMOKE_PROMPT, type SmokeFile, type SmokeStore } from '../../lambda/lora-check/smoke';
import { s3SmokeStore } from '../../lambda/lora-check/smoke-store';

const runtimeMock = mockClient(SageMakerRuntimeClient);
const runtime = new SageMakerRuntimeClient({ region: 'eu-west-1' });
const JOB = 'lora-pokemon-20250101120000-abc123';
const EVENT = {
  mode: 'shared',
  endpointName: 'lora-shared-sd15',
  inferenceComponentName: 'lora-shared-sd15',
  lora: { name: 'pokemon', version: 3 },
  modelType: 'sd15',
  trainingJobName: JOB,
  samples: null,
};
const DEDICATED = { mode: 'dedicated', endpointName: 'lora-pokemon', modelType: 'sd15', trainingJobName: JOB, samples: null };

/** An 8 × 8 RGB image, every channel `level` plus a gradient. */
function image(level: number): RawImage {
  const data = new Uint8Array(8 * 8 * 3).map((_, i) => Math.min(255, level + (i % 24)));
  return { width: 8, height: 8, channels: 3, data };
}
const png = (level: number) => encodePng(image(level));

/** The three images as stored, by file name. */
let stored: Map<SmokeFile, Uint8Array>;
const store: SmokeStore = {
  bucket: 'artifacts-bucket',
  async put(file, bytes) {
    stored.set(file, bytes);
    return `models/${JOB}/smoke/${file}`;
  },
};
const storeFor = (job: string) => {
  expect(job).toBe(JOB);
  return store;
};

/** Requests as the endpoint received them. */
const requests = () => runtimeMock.commandCalls(InvokeEndpointCommand).map((call) => ({ ...call.args[0].input, body: JSON.parse(Buffer.from(call.args[0].input.Body as Uint8Array).toString()) }));

/** The shared server: the LoRA's image at level `withLevel`, the base model's at 100; `loras` as it reports them. */
function sharedServer(withLevel = 140, loras: (request: Record<string, unknown>) => Array<Record<string, unknown>> = (request) => (request.lora ? [{ name: 'pokemon', version: 3, scale: 1, sha256: 'ab12' }] : [])): void {
  runtimeMock.on(InvokeEndpointCommand).callsFake((input: { Body: Uint8Array }) => {
    const request = JSON.parse(Buffer.from(input.Body).toString()) as Record<string, unknown>;
    const body = { images: [png(request.lora ? withLevel : 100).toString('base64')], seed: request.seed, loras: loras(request) };
    return { Body: Buffer.from(JSON.stringify(body)), ContentType: 'application/json' };
  });
}

beforeEach(() => {
  runtimeMock.reset();
  stored = new Map();
});

describe('shared mode: Try LoRA on the shared endpoint, with the smoke test', () => {
  test('with the exact version, then without a LoRA: the same PNG request; both images and the side-by-side stored; the answer says how far apart', async () => {
    sharedServer();
    let clock = 1000;
    const result = await checkLora(EVENT, runtime, storeFor, () => (clock += 250));
    const [withIt, without] = requests();
    expect(withIt).toMatchObject({ EndpointName: 'lora-shared-sd15', InferenceComponentName: 'lora-shared-sd15', ContentType: 'application/json', Accept: 'application/json' });
    const request = { prompt: DEFAULT_SMOKE_PROMPT, num_inference_steps: 20, width: 512, height: 512, seed: 1234, output_format: 'png' };
    expect(withIt.body).toEqual({ ...request, lora: 'pokemon@3' });
    expect(without.body).toEqual(request);
    expect(without.InferenceComponentName).toBe('lora-shared-sd15');
    expect(result).toEqual({
      endpointName: 'lora-shared-sd15',
      inferenceComponentName: 'lora-shared-sd15',
      lora: 'pokemon@3',
      sha256: 'ab12',
      milliseconds: 250,
      smoke: {
        bucket: 'artifacts-bucket',
        withoutLora: `models/${JOB}/smoke/without-lora.png`,
        withLora: `models/${JOB}/smoke/with-lora.png`,
        sideBySide: `models/${JOB}/smoke/side-by-side.png`,
        prompt: DEFAULT_SMOKE_PROMPT,
        seed: 1234,
        width: 8,
        height: 8,
        steps: 20,
        meanAbsoluteDifference: 40,
        changedPixelShare: 1,
        minMeanAbsoluteDifference: MIN_MEAN_ABSOLUTE_DIFFERENCE,
        milliseconds: 250,
      },
    });
    // The server's PNGs are stored as they came; the side-by-side is without (left), then with.
    expect(Buffer.from(stored.get('without-lora.png')!)).toEqual(png(100));
    expect(Buffer.from(stored.get('with-lora.png')!)).toEqual(png(140));
    const both = decodePng(stored.get('side-by-side.png')!);
    expect([both.width, both.height]).toEqual([8 + 16 + 8, 8]);
    expect(Array.from(both.data.subarray(0, 3))).toEqual(Array.from(image(100).data.subarray(0, 3)));
    expect(Array.from(both.data.subarray((8 + 16) * 3, (8 + 16) * 3 + 3))).toEqual(Array.from(image(140).data.subarray(0, 3)));
  });

  test("the samples' first prompt is the smoke test's prompt; an SDXL endpoint gets SDXL's side", async () => {
    sharedServer();
    await checkLora({ ...EVENT, modelType: 'sdxl', samples: { bucket: 'b', prompt: 'a green pokemon, sugimori style' } }, runtime, storeFor);
    expect(requests().map((r) => [r.body.prompt, r.body.width, r.body.height])).toEqual([
      ['a green pokemon, sugimori style', 1024, 1024],
      ['a green pokemon, sugimori style', 1024, 1024],
    ]);
    // An error in place of the samples' answer: the default prompt.
    runtimeMock.reset();
    sharedServer();
    await checkLora({ ...EVENT, samples: { Error: 'States.TaskFailed', Cause: 'x' } }, runtime, storeFor);
    expect(requests()[0].body.prompt).toBe(DEFAULT_SMOKE_PROMPT);
  });

  test.each([
    ['identical images', 100, 0],
    ['images just under the threshold (1 level)', 101, 1],
  ])('%s: SmokeTestFailed naming the numbers and the folder; the images are stored all the same', async (_, level, mean) => {
    sharedServer(level);
    await expect(checkLora(EVENT, runtime, storeFor)).rejects.toMatchObject({
      name: 'SmokeTestFailed',
      message: expect.stringContaining(`a mean difference of ${mean} levels in 255 (the threshold is 2)`),
    });
    await expect(checkLora(EVENT, runtime, storeFor)).rejects.toThrow(`The images are in s3://artifacts-bucket/models/${JOB}/smoke/`);
    expect([...stored.keys()].sort()).toEqual(['side-by-side.png', 'with-lora.png', 'without-lora.png']);
  });

  test('images at the threshold (2 levels) pass (control)', async () => {
    sharedServer(102);
    await expect(checkLora(EVENT, runtime, storeFor)).resolves.toMatchObject({ smoke: { meanAbsoluteDifference: 2 } });
  });

  test.each([
    ['another version', () => [{ name: 'pokemon', version: 2 }], 'used pokemon@2 instead of pokemon@3 alone'],
    ['a second LoRA besides', () => [{ name: 'pokemon', version: 3 }, { name: 'other', version: 1 }], 'used pokemon@3, other@1 instead of pokemon@3 alone'],
    ['no LoRA', () => [], 'used no LoRA instead of pokemon@3'],
    ['a LoRA for the request without one', () => [{ name: 'pokemon', version: 3 }], 'request without a LoRA with 200 but used pokemon@3 instead of none'],
  ])("a 200 that used %s is the server's fault, not the LoRA's: SharedEndpointUnavailable", async (_, loras, message) => {
    sharedServer(140, loras);
    await expect(checkLora(EVENT, runtime, storeFor)).rejects.toMatchObject({ name: 'SharedEndpointUnavailable', message: expect.stringContaining(message) });
    expect(stored.size).toBe(0);
  });

  test('a 200 without a loras list (a dedicated server) or without an image: SharedEndpointUnavailable', async () => {
    runtimeMock.on(InvokeEndpointCommand).resolves({ Body: Buffer.from(JSON.stringify({ images: [png(1).toString('base64')] })) as never });
    await expect(checkLora(EVENT, runtime, storeFor)).rejects.toMatchObject({ name: 'SharedEndpointUnavailable', message: expect.stringContaining('no "loras" list') });
    runtimeMock.on(InvokeEndpointCommand).resolves({ Body: Buffer.from(JSON.stringify({ loras: [] })) as never });
    await expect(checkLora(EVENT, runtime, storeFor)).rejects.toMatchObject({ name: 'SharedEndpointUnavailable', message: expect.stringContaining('without an image') });
  });

  test('an image that is not a PNG: SharedEndpointUnavailable (the deployment), never a rejection of the LoRA', async () => {
    runtimeMock.on(InvokeEndpointCommand).callsFake((input: { Body: Uint8Array }) => {
      const request = JSON.parse(Buffer.from(input.Body).toString()) as Record<string, unknown>;
      return { Body: Buffer.from(JSON.stringify({ images: ['/9j/4AAQ'], loras: request.lora ? [{ name: 'pokemon', version: 3 }] : [] })) };
    });
    await expect(checkLora(EVENT, runtime, storeFor)).rejects.toMatchObject({ name: 'SharedEndpointUnavailable', message: expect.stringContaining('is not a readable 8-bit PNG: not a PNG') });
  });

  test('a store that fails: its error as it is, for the state to retry', async () => {
    sharedServer();
    const failing: SmokeStore = { bucket: 'b', put: () => Promise.reject(Object.assign(new Error('Please reduce your request rate.'), { name: 'SlowDown' })) };
    await expect(checkLora(EVENT, runtime, () => failing)).rejects.toMatchObject({ name: 'SlowDown' });
  });
});

describe('shared mode: what the endpoint answers instead (the check\'s semantics, kept)', () => {
  test('no copy of the inference component (scaled to zero): SharedEndpointWarming, for the state to retry', async () => {
    // The message InvokeEndpoint gives while an inference component has no copies (AWS ML blog, "scale down to zero").
    const noCapacity =
      'Inference Component has no capacity to process this request. ApplicationAutoScaling may be in-progress (if configured) or try to increase the capacity by invoking UpdateInferenceComponentRuntimeConfig API.';
    runtimeMock.on(InvokeEndpointCommand).rejects(new ValidationError({ message: noCapacity, $metadata: { httpStatusCode: 400 } }));
    await expect(checkLora(EVENT, runtime, storeFor)).rejects.toMatchObject({ name: 'SharedEndpointWarming', message: expect.stringContaining('has no copy ready to serve (ValidationError: Inference Component has no capacity') });
  });

  test('a model not ready yet is warming too', async () => {
    runtimeMock.on(InvokeEndpointCommand).rejects(new ModelNotReadyException({ message: 'Model is not ready', $metadata: {} }));
    await expect(checkLora(EVENT, runtime, storeFor)).rejects.toMatchObject({ name: 'SharedEndpointWarming' });
  });

  test("the server's refusal: LoraCheckFailed with its status, its error message and where its logs are", async () => {
    runtimeMock.on(InvokeEndpointCommand).rejects(
      new ModelError({
        message: 'Received client error (410) from primary with message "..."',
        $metadata: { httpStatusCode: 424 },
        OriginalStatusCode: 410,
        OriginalMessage: JSON.stringify({ error: 'pokemon@3 failed its check and is not served', field: 'lora' }),
        LogStreamArn: 'arn:aws:logs:eu-west-1:123456789012:log-group:/aws/sagemaker/InferenceComponents/lora-shared-sd15',
      }),
    );
    await expect(checkLora(EVENT, runtime, storeFor)).rejects.toMatchObject({
      name: 'LoraCheckFailed',
      message:
        'Generating with LoRA pokemon@3 on the inference component lora-shared-sd15 of endpoint lora-shared-sd15 failed: the server answered 410: ' +
        'pokemon@3 failed its check and is not served (field lora) (logs: arn:aws:logs:eu-west-1:123456789012:log-group:/aws/sagemaker/InferenceComponents/lora-shared-sd15).',
    });
    // Refused before the second request is spent.
    expect(requests()).toHaveLength(1);
  });

  /** A ModelError as SageMaker gives it: the container's status and JSON body. */
  const modelError = (status: number, error = 'x') =>
    new ModelError({ message: `Received error (${status}) from primary`, $metadata: { httpStatusCode: 424 }, OriginalStatusCode: status, OriginalMessage: JSON.stringify({ error, field: 'lora' }) });

  test.each([400, 410])('the server refusing the LoRA (%i) is LoraCheckFailed: the version is rejected', async (status) => {
    runtimeMock.on(InvokeEndpointCommand).rejects(modelError(status));
    await expect(checkLora(EVENT, runtime, storeFor)).rejects.toMatchObject({ name: 'LoraCheckFailed', message: expect.stringContaining(`the server answered ${status}`) });
  });

  test('the same 400 for the request WITHOUT a LoRA is the deployment\'s fault, never a rejection', async () => {
    runtimeMock
      .on(InvokeEndpointCommand)
      .resolvesOnce({ Body: Buffer.from(JSON.stringify({ images: [png(140).toString('base64')], loras: [{ name: 'pokemon', version: 3 }] })) as never })
      .rejects(modelError(400, 'prompt is required'));
    await expect(checkLora(EVENT, runtime, storeFor)).rejects.toMatchObject({ name: 'SharedEndpointUnavailable', message: expect.stringContaining('Generating without a LoRA') });
  });

  test("a 404 for the version just registered (the server cannot find it, or cannot read its file) is the deployment's fault: SharedEndpointUnavailable, never a rejection", async () => {
    runtimeMock.on(InvokeEndpointCommand).rejects(modelError(404, 'LoRA pokemon@3: its file is missing from S3 or not readable by the endpoint role'));
    await expect(checkLora(EVENT, runtime, storeFor)).rejects.toMatchObject({ name: 'SharedEndpointUnavailable', message: expect.stringContaining('the server answered 404') });
  });

  test.each([429, 503, 504])('a busy endpoint (%i: at capacity, throttled, a download too slow) is SharedEndpointBusy, for the state to retry, never a rejection', async (status) => {
    runtimeMock.on(InvokeEndpointCommand).rejects(modelError(status, 'the registry is throttling; retry'));
    await expect(checkLora(EVENT, runtime, storeFor)).rejects.toMatchObject({ name: 'SharedEndpointBusy', message: expect.stringContaining(`the server answered ${status}: the registry is throttling; retry`) });
  });

  test('a 500 (registry or S3 access misconfigured) or any other status is SharedEndpointUnavailable: the deployment, not the LoRA', async () => {
    runtimeMock.on(InvokeEndpointCommand).rejects(new ModelError({ message: 'x', $metadata: {}, OriginalStatusCode: 500, OriginalMessage: 'Internal Server Error' }));
    await expect(checkLora(EVENT, runtime, storeFor)).rejects.toMatchObject({ name: 'SharedEndpointUnavailable', message: expect.stringContaining('the server answered 500: Internal Server Error.') });
    runtimeMock.on(InvokeEndpointCommand).rejects(new ModelError({ message: 'x', $metadata: {} }));
    await expect(checkLora(EVENT, runtime, storeFor)).rejects.toMatchObject({ name: 'SharedEndpointUnavailable', message: expect.stringContaining('the server answered unknown') });
  });

  test('any other ValidationError (a missing component) is SharedEndpointUnavailable, not warming nor a rejection', async () => {
    runtimeMock.on(InvokeEndpointCommand).rejects(new ValidationError({ message: 'Inference Component lora-shared-sd15 not found.', $metadata: {} }));
    await expect(checkLora(EVENT, runtime, storeFor)).rejects.toMatchObject({ name: 'SharedEndpointUnavailable', message: expect.stringContaining('(ValidationError): Inference Component lora-shared-sd15 not found.') });
  });

  test('throttling and faults keep their own name, for the Retry', async () => {
    runtimeMock.on(InvokeEndpointCommand).rejects(Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException', $metadata: {} }));
    await expect(checkLora(EVENT, runtime, storeFor)).rejects.toMatchObject({ name: 'ThrottlingException' });
  });
});

describe('dedicated mode: Smoke test the endpoint', () => {
  /** The dedicated server: the fused LoRA at the default scale, the base model at lora_scale 0. */
  function dedicatedServer(withLevel = 150): void {
    runtimeMock.on(InvokeEndpointCommand).callsFake((input: { Body: Uint8Array }) => {
      const request = JSON.parse(Buffer.from(input.Body).toString()) as Record<string, unknown>;
      return { Body: Buffer.from(JSON.stringify({ images: [png(request.lora_scale === 0 ? 100 : withLevel).toString('base64')], seed: request.seed })) };
    });
  }

  test('the default scale, then lora_scale 0, on the endpoint alone (no component, no lora field); the result is the smoke test', async () => {
    dedicatedServer();
    const result = await smokeTestEndpoint(DEDICATED, runtime, storeFor);
    const [withIt, without] = requests();
    expect(withIt.InferenceComponentName).toBeUndefined();
    expect(withIt).toMatchObject({ EndpointName: 'lora-pokemon', Accept: 'application/json' });
    expect(withIt.body).toEqual({ prompt: DEFAULT_SMOKE_PROMPT, num_inference_steps: 20, width: 512, height: 512, seed: 1234, output_format: 'png' });
    expect(without.body).toEqual({ ...withIt.body, lora_scale: 0 });
    expect(result).toMatchObject({ bucket: 'artifacts-bucket', meanAbsoluteDifference: 50, withoutLora: `models/${JOB}/smoke/without-lora.png` });
  });

  test('the same image at lora_scale 0: SmokeTestFailed', async () => {
    dedicatedServer(100);
    await expect(smokeTestEndpoint(DEDICATED, runtime, storeFor)).rejects.toMatchObject({ name: 'SmokeTestFailed', message: expect.stringContaining('The LoRA had no effect: endpoint lora-pokemon') });
  });

  test.each([
    ['a 500', 'SmokeTestFailed', new ModelError({ message: 'x', $metadata: {}, OriginalStatusCode: 500, OriginalMessage: '{"error": "CUDA out of memory"}' }), 'the server answered 500: CUDA out of memory'],
    ['a 400', 'SmokeTestFailed', new ModelError({ message: 'x', $metadata: {}, OriginalStatusCode: 400, OriginalMessage: '{"error": "lora_scale must be a number", "field": "lora_scale"}' }), 'the server answered 400'],
    ['a 503 (busy)', 'EndpointBusy', new ModelError({ message: 'x', $metadata: {}, OriginalStatusCode: 503, OriginalMessage: '{"error": "busy"}' }), 'the server answered 503'],
    ['a model not ready', 'EndpointBusy', new ModelNotReadyException({ message: 'not ready', $metadata: {} }), 'was not ready'],
    ['a ValidationError', 'SmokeTestFailed', new ValidationError({ message: 'Endpoint lora-pokemon of account 123456789012 not found.', $metadata: {} }), 'not found'],
  ])('%s from the endpoint: %s', async (_, name, error, message) => {
    runtimeMock.on(InvokeEndpointCommand).rejects(error);
    await expect(smokeTestEndpoint(DEDICATED, runtime, storeFor)).rejects.toMatchObject({ name, message: expect.stringContaining(message) });
  });

  test('throttling keeps its name, for the Retry', async () => {
    runtimeMock.on(InvokeEndpointCommand).rejects(Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException', $metadata: {} }));
    await expect(smokeTestEndpoint(DEDICATED, runtime, storeFor)).rejects.toMatchObject({ name: 'ThrottlingException' });
  });

  /** The endpoint answering `with` for the LoRA at its scale and `without` at lora_scale 0. */
  function answering(withPng: Buffer, withoutPng: Buffer): void {
    runtimeMock.on(InvokeEndpointCommand).callsFake((input: { Body: Uint8Array }) => {
      const request = JSON.parse(Buffer.from(input.Body).toString()) as Record<string, unknown>;
      return { Body: Buffer.from(JSON.stringify({ images: [(request.lora_scale === 0 ? withoutPng : withPng).toString('base64')] })) };
    });
  }

  test('two images of different sizes for the same request: SmokeTestFailed saying so, nothing stored (control: same size passes)', async () => {
    const wide: RawImage = { width: 16, height: 8, channels: 3, data: new Uint8Array(16 * 8 * 3).fill(150) };
    answering(encodePng(wide), png(100));
    await expect(smokeTestEndpoint(DEDICATED, runtime, storeFor)).rejects.toMatchObject({ name: 'SmokeTestFailed', message: expect.stringContaining('differ in size (8 × 8 and 16 × 8)') });
    expect(stored.size).toBe(0);
    answering(png(150), png(100));
    await expect(smokeTestEndpoint(DEDICATED, runtime, storeFor)).resolves.toMatchObject({ width: 8, height: 8, meanAbsoluteDifference: 50 });
  });

  test('an RGBA image beside an RGB one is judged on RGB alone: the same colours are no effect whatever the alpha (control: other colours pass)', async () => {
    const rgba = (level: number): RawImage => {
      const rgb = image(level).data;
      const data = new Uint8Array(8 * 8 * 4).map((_, i) => (i % 4 === 3 ? i & 0xff : rgb[(i >> 2) * 3 + (i % 4)]));
      return { width: 8, height: 8, channels: 4, data };
    };
    answering(encodePng(rgba(100)), png(100));
    await expect(smokeTestEndpoint(DEDICATED, runtime, storeFor)).rejects.toMatchObject({ name: 'SmokeTestFailed', message: expect.stringContaining('a mean difference of 0 levels') });
    answering(encodePng(rgba(130)), png(100));
    await expect(smokeTestEndpoint(DEDICATED, runtime, storeFor)).resolves.toMatchObject({ meanAbsoluteDifference: 30 });
    // The side-by-side is RGB whatever its halves are.
    expect(decodePng(stored.get('side-by-side.png')!).channels).toBe(3);
  });
});

test('a malformed event is a definition bug: a plain Error, and the endpoint is not called', async () => {
  await expect(checkLora({ ...EVENT, lora: { name: 'pokemon', version: 0 } }, runtime, storeFor)).rejects.toMatchObject({ name: 'Error', message: expect.stringContaining("The LoRA check's event is invalid (lora.version") });
  await expect(checkLora({ ...EVENT, modelType: 'sd3' }, runtime, storeFor)).rejects.toThrow('modelType');
  await expect(smokeTestEndpoint({ ...DEDICATED, trainingJobName: undefined }, runtime, storeFor)).rejects.toThrow('trainingJobName');
  // Each mode's function refuses the other's event.
  await expect(checkLora(DEDICATED, runtime, storeFor)).rejects.toThrow('checkLora is for shared runs');
  await expect(smokeTestEndpoint(EVENT, runtime, storeFor)).rejects.toThrow('smokeTestEndpoint is for dedicated runs');
  expect(runtimeMock).not.toHaveReceivedAnyCommand();
});

describe('the S3 store of the smoke images', () => {
  const s3Mock = mockClient(S3Client);
  afterAll(() => s3Mock.restore());

  test('PNGs under models/<job>/smoke/, SSE-KMS with the pipeline key', async () => {
    s3Mock.reset();
    s3Mock.on(PutObjectCommand).resolves({});
    const smokeStore = s3SmokeStore(new S3Client({ region: 'eu-west-1' }), { bucket: 'artifacts', modelsPrefix: 'models/', keyArn: 'arn:aws:kms:eu-west-1:123456789012:key/k' }, JOB);
    expect(await smokeStore.put('with-lora.png', png(1))).toBe(`models/${JOB}/smoke/with-lora.png`);
    expect(s3Mock).toHaveReceivedCommandWith(PutObjectCommand, {
      Bucket: 'artifacts',
      Key: `models/${JOB}/smoke/with-lora.png`,
      ContentType: 'image/png',
      ServerSideEncryption: 'aws:kms',
      SSEKMSKeyId: 'arn:aws:kms:eu-west-1:123456789012:key/k',
    });
  });

  test('a job name that could leave the folder is refused (control: a real one is taken)', () => {
    const storage = { bucket: 'artifacts', modelsPrefix: 'models/', keyArn: 'k' };
    expect(() => s3SmokeStore(new S3Client({ region: 'eu-west-1' }), storage, '../loras')).toThrow('is not a SageMaker training job name');
    expect(() => s3SmokeStore(new S3Client({ region: 'eu-west-1' }), storage, JOB)).not.toThrow();
  });
});
