import { createHash } from 'node:crypto';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { AbortMultipartUploadCommand, GetObjectCommand, PutObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { DynamoDBClient, TransactionCanceledException } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, GetCommand, PutCommand, QueryCommand, TransactWriteCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { mockClient } from 'aws-sdk-client-mock';
import 'aws-sdk-client-mock-jest';
import { parseRegistryEvent } from '../../lambda/registry/event';
import { createHandler } from '../../lambda/registry/handler';
import { inspectLora } from '../../lambda/registry/lora-header';
import { claimAttribute, RegistryTable } from '../../lambda/registry/table';
import { trainingArchive } from '../../lambda/registry/training-output';
import { headerLength, parseHeader, type SafetensorsHeader } from '../../lambda/shared/safetensors';
import { safetensorsFile, sd15Lora, sdxlLora, type TensorSpec } from '../fixtures/lora-files';
import { requireWithEnv } from '../support/isolated';
import { preparedRunFixture, sharedRunFixture, trainingJobFixture } from '../support/runs';
import { modelTarGz, tarArchive, type TarFile } from '../support/tar-archive';

const STORAGE = { bucket: 'artifacts-bucket', modelsPrefix: 'models/', lorasPrefix: 'loras/' };
const JOB = 'lora-pokemon-20250101120000-abc123';
const ARCHIVE = `models/${JOB}/output/model.tar.gz`;
const EXECUTION = { name: 'pokemon-1', startTime: '2025-01-01T11:55:00.000Z', arn: 'arn:aws:states:eu-west-1:123456789012:execution:LoraPipelineWorkflow:pokemon-1' };
const NOW = new Date('2025-01-01T13:00:00.000Z');

const s3Mock = mockClient(S3Client);
const ddbMock = mockClient(DynamoDBDocumentClient);
const table = new RegistryTable(DynamoDBDocumentClient.from(new DynamoDBClient({ region: 'eu-west-1' })), 'registry');
const handler = createHandler({ s3: new S3Client({ region: 'eu-west-1' }), table, storage: STORAGE, now: () => NOW });

function header(tensors: Record<string, TensorSpec>): SafetensorsHeader {
  const file = safetensorsFile(tensors);
  const length = headerLength(file.subarray(0, 8), file.length);
  return parseHeader(file.subarray(8, 8 + length), file.length);
}

/** Serves `archive` as the training job's model.tar.gz, and takes any upload. */
function serveArchive(archive: Buffer): void {
  s3Mock.on(GetObjectCommand, { Key: ARCHIVE }).callsFake(() => ({ Body: Readable.from([archive]) }));
  s3Mock.on(PutObjectCommand).resolves({ ETag: '"copied"' });
}

/** The bytes the registry uploaded, and to where. */
function uploaded(): Array<{ key?: string; body: Buffer; ifNoneMatch?: string }> {
  return s3Mock.commandCalls(PutObjectCommand).map(({ args: [{ input }] }) => ({ key: input.Key, body: Buffer.from(input.Body as Uint8Array), ifNoneMatch: input.IfNoneMatch }));
}

function registerEvent(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    action: 'register',
    run: sharedRunFixture(),
    training: trainingJobFixture({ ModelArtifacts: { S3ModelArtifacts: `s3://artifacts-bucket/${ARCHIVE}` }, FinalMetricDataList: [{ MetricName: 'loss', Value: 0.08 }] }),
    execution: EXECUTION,
    ...overrides,
  };
}

beforeEach(() => {
  s3Mock.reset();
  ddbMock.reset();
  jest.spyOn(console, 'log').mockImplementation(() => undefined);
  jest.spyOn(console, 'warn').mockImplementation(() => undefined);
  jest.spyOn(console, 'error').mockImplementation(() => undefined);
});
afterEach(() => jest.restoreAllMocks());

describe('the safetensors header', () => {
  test('a well-formed file parses to its tensors', () => {
    const parsed = header(sd15Lora(8));
    expect(parsed.tensors.get('lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight')).toEqual({ dtype: 'F16', shape: [8, 768], dataOffsets: expect.any(Array) });
  });

  test.each([
    ['too short', Buffer.alloc(4), 'shorter than the 8-byte header length'],
    ['an absurd header length', Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]), Buffer.alloc(16)]), 'is outside 2..'],
    ['a header longer than the file', Buffer.concat([Buffer.from([100, 0, 0, 0, 0, 0, 0, 0]), Buffer.alloc(16)]), 'it is truncated'],
  ])('%s is refused', (_, file, message) => {
    expect(() => headerLength(file.subarray(0, 8), file.length)).toThrow(message);
  });

  test('a header that is not JSON, metadata that is not strings, and data cut short are refused', () => {
    expect(() => parseHeader(Buffer.from('{nope'), 100)).toThrow('its header is not JSON');
    expect(() => parseHeader(Buffer.from('{"__metadata__": {"a": 1}}'), 100)).toThrow('__metadata__ must map names to strings');
    const file = safetensorsFile({ 'lora_unet_x.lora_down.weight': { shape: [4, 8] } });
    const length = headerLength(file.subarray(0, 8), file.length);
    expect(() => parseHeader(file.subarray(8, 8 + length), file.length - 1)).toThrow('it is truncated: tensor lora_unet_x.lora_down.weight ends at byte 64');
  });
});

describe("a kohya LoRA's family, components and rank", () => {
  test('SD 1.5: the U-Net and the text encoder', () => {
    expect(inspectLora(header(sd15Lora(16)), 'sd15')).toEqual({ modelType: 'sd15', components: ['unet', 'text_encoder'], rank: 16 });
    expect(inspectLora(header(sd15Lora(4, { unetOnly: true })), 'sd15').components).toEqual(['unet']);
  });

  test('SDXL: te1 and te2 are its two text encoders; a U-Net-only file is told by its block names', () => {
    expect(inspectLora(header(sdxlLora(8)), 'sdxl')).toEqual({ modelType: 'sdxl', components: ['unet', 'text_encoder', 'text_encoder_2'], rank: 8 });
    expect(inspectLora(header(sdxlLora(8, { unetOnly: true })), 'sdxl')).toMatchObject({ modelType: 'sdxl', components: ['unet'] });
  });

  test('the rank is the largest lora_down rank', () => {
    const mixed = { ...sd15Lora(4, { unetOnly: true }), 'lora_te_text_model_encoder_layers_1_mlp_fc1.lora_down.weight': { shape: [32, 768] }, 'lora_te_text_model_encoder_layers_1_mlp_fc1.lora_up.weight': { shape: [3072, 32] } };
    expect(inspectLora(header(mixed), 'sd15').rank).toBe(32);
  });

  test.each([
    ['an SDXL LoRA for an SD 1.5 run', sdxlLora(), 'sd15', 'it is an SDXL LoRA, but the run\'s modelType is sd15 (SD 1.5)'],
    ['an SD 1.5 LoRA for an SDXL run', sd15Lora(), 'sdxl', 'it is an SD 1.5 LoRA, but the run\'s modelType is sdxl (SDXL)'],
    ['a mix of both layouts', { ...sd15Lora(), ...sdxlLora() }, 'sd15', 'it mixes SD 1.5 and SDXL module names'],
    ['a base model checkpoint', { 'model.diffusion_model.input_blocks.0.0.weight': { shape: [320, 4, 3, 3] } }, 'sd15', 'it is not a kohya-ss LoRA: 1 of 1 tensors are not LoRA weights'],
    ['an unknown module layout', { 'lora_unet_something_else.lora_down.weight': { shape: [4, 8] } }, 'sd15', 'has no SD 1.5, SDXL or FLUX.1 layout'],
    ['no tensors at all', {}, 'sd15', 'it holds no tensors'],
  ] as const)('%s is refused', (_, tensors, modelType, message) => {
    expect(() => inspectLora(header(tensors as Record<string, TensorSpec>), modelType)).toThrow(message);
  });
});

describe('where the training output is', () => {
  test("S3ModelArtifacts of the default GZIP output: the job's model.tar.gz under models/", () => {
    expect(trainingArchive(`s3://artifacts-bucket/${ARCHIVE}`, STORAGE)).toEqual({ bucket: 'artifacts-bucket', key: ARCHIVE });
  });

  test.each([
    ['an uncompressed output prefix', `s3://artifacts-bucket/models/${JOB}/output/model/`, 'is not a model.tar.gz'],
    ['another bucket', `s3://elsewhere/${ARCHIVE}`, 'is not under s3://artifacts-bucket/models/'],
    ['outside the prefix', `s3://artifacts-bucket/loras/${JOB}/output/model.tar.gz`, 'is not under s3://artifacts-bucket/models/'],
    ['a path that climbs out', 's3://artifacts-bucket/models/../loras/x/model.tar.gz', 'is not under s3://artifacts-bucket/models/'],
    ['not an S3 URI', 'https://example.com/model.tar.gz', 'is not an s3://bucket/key URI'],
  ])('%s is refused as LoraFileInvalid, and nothing is read', async (_, uri, message) => {
    expect(() => trainingArchive(uri, STORAGE)).toThrow(expect.objectContaining({ name: 'LoraFileInvalid', message: expect.stringContaining(message) }));
    ddbMock.on(QueryCommand).resolves({ Items: [] });
    const event = registerEvent({ training: trainingJobFixture({ ModelArtifacts: { S3ModelArtifacts: uri } }) });
    await expect(handler(event)).rejects.toMatchObject({ name: 'LoraFileInvalid' });
    expect(s3Mock).not.toHaveReceivedAnyCommand();
  });
});

describe('the registry event', () => {
  test.each([
    ['an unknown action', { action: 'delete', name: 'pokemon', version: 1 }, 'action'],
    ['a name the server refuses', { action: 'promote', name: '../etc', version: 1 }, 'name: a LoRA name'],
    ['version 0, the head item', { action: 'retire', name: 'pokemon', version: 0 }, 'version: a version number from 1'],
    ['a register without the job', { action: 'register', run: sharedRunFixture(), execution: EXECUTION }, 'training'],
  ])('%s is InvalidRegistryEvent', (_, event, message) => {
    expect(() => parseRegistryEvent(event)).toThrow(expect.objectContaining({ name: 'InvalidRegistryEvent', message: expect.stringContaining(message) }));
  });

  test('a dedicated run does not register', () => {
    expect(() => parseRegistryEvent(registerEvent({ run: preparedRunFixture() }))).toThrow('is served by a dedicated endpoint');
  });

  test('a long reject reason is cut', () => {
    const parsed = parseRegistryEvent({ action: 'reject', name: 'pokemon', version: 2, reason: 'x'.repeat(5000) });
    expect(parsed.action === 'reject' && parsed.reason.length).toBe(1000);
  });
});

describe('register, with the clients mocked', () => {
  const file = safetensorsFile(sd15Lora(8));

  function serveEmptyRegistry(): void {
    ddbMock.on(QueryCommand).resolves({ Items: [] });
    ddbMock.on(UpdateCommand).resolves({ Attributes: { latest: 5 } });
    ddbMock.on(PutCommand).resolves({});
  }

  /** The version allocations sent (`ADD latest`), leaving out the registration's claim and its release. */
  function allocations(): number {
    return ddbMock.commandCalls(UpdateCommand).filter((call) => call.args[0].input.UpdateExpression?.startsWith('ADD #latest')).length;
  }

  /** The handler's refusal of `archive`: its error, with what was allocated, uploaded and written. */
  async function refusal(archive: Buffer) {
    serveArchive(archive);
    serveEmptyRegistry();
    const error = await handler(registerEvent()).then(
      () => undefined,
      (e: Error) => e,
    );
    return { error, allocated: allocations(), uploads: uploaded().length, items: ddbMock.commandCalls(PutCommand).length };
  }

  test("copies the LoRA out of model.tar.gz to loras/<name>/<version>.safetensors, never over another, and writes a pending version with the copy's hash and facts", async () => {
    serveArchive(modelTarGz(file));
    serveEmptyRegistry();
    const result = await handler(registerEvent());
    const sha256 = createHash('sha256').update(file).digest('hex');
    expect(result).toEqual({
      name: 'pokemon',
      version: 5,
      ref: 'pokemon@5',
      status: 'pending',
      modelType: 'sd15',
      baseModel: 'stable-diffusion-v1-5/stable-diffusion-v1-5',
      s3Uri: 's3://artifacts-bucket/loras/pokemon/5.safetensors',
      sha256,
      sizeBytes: file.length,
      rank: 8,
      components: ['unet', 'text_encoder'],
      createdAt: NOW.toISOString(),
    });
    expect(uploaded()).toEqual([{ key: 'loras/pokemon/5.safetensors', body: file, ifNoneMatch: '*' }]);
    expect(s3Mock).toHaveReceivedCommandWith(PutObjectCommand, { Bucket: 'artifacts-bucket' });
    expect(ddbMock).toHaveReceivedCommandWith(UpdateCommand, { Key: { name: 'pokemon', version: 0 }, UpdateExpression: 'ADD #latest :one SET updatedAt = :now', ReturnValues: 'UPDATED_NEW' });
    expect(ddbMock).toHaveReceivedCommandWith(PutCommand, {
      ConditionExpression: 'attribute_not_exists(#version)',
      Item: expect.objectContaining({ name: 'pokemon', version: 5, status: 'pending', sha256, execution: EXECUTION.arn, trainingJob: JOB, run: sharedRunFixture().run, summary: { trainingSeconds: 1000, billableSeconds: 370, spotSavingsPercent: 63, finalMetrics: { loss: 0.08 } } }),
    });
    // One read of the archive, nothing else of the training output.
    expect(s3Mock.commandCalls(GetObjectCommand).map((call) => call.args[0].input.Key)).toEqual([ARCHIVE]);
  });

  test('the LoRA under ./ (an archive made with `tar -C model .`) is the same LoRA', async () => {
    serveArchive(
      gzipSync(
        tarArchive([
          { path: './', type: '5' },
          { path: './training-metadata.json', body: Buffer.from('{}') },
          { path: './pokemon.safetensors', body: file },
        ]),
      ),
    );
    serveEmptyRegistry();
    await expect(handler(registerEvent())).resolves.toMatchObject({ sizeBytes: file.length, s3Uri: 's3://artifacts-bucket/loras/pokemon/5.safetensors' });
  });

  const gz = (files: TarFile[]) => gzipSync(tarArchive(files));
  const metadata: TarFile = { path: 'training-metadata.json', body: Buffer.from('{}') };

  test.each([
    ['no .safetensors at the top', () => gz([metadata, { path: 'sub/pokemon.safetensors', body: file }]), 'saved no .safetensors file at the top of s3://artifacts-bucket/models/', 0],
    ['a path with ..', () => gz([{ path: '../escape.safetensors', body: file }]), 'holds "../escape.safetensors", a path outside the archive\'s folder', 0],
    ['a LoRA that is a symbolic link', () => gz([metadata, { path: 'pokemon.safetensors', type: '2', linkTarget: '/etc/passwd' }]), 'holds pokemon.safetensors as a symlink, not a regular file', 0],
    ['an SDXL LoRA for an SD 1.5 run', () => modelTarGz(safetensorsFile(sdxlLora())), 'cannot be served by the shared endpoint: it is an SDXL LoRA', 0],
    ['a file that is not safetensors', () => modelTarGz(Buffer.from('PK\x03\x04 a zip archive, not safetensors')), 'cannot be served by the shared endpoint: its header length', 0],
    ['an archive that is not gzip', () => tarArchive([metadata]), 'is not a readable model.tar.gz: incorrect header check', 0],
    ['an archive cut short', () => modelTarGz(file).subarray(0, 200), 'is not a readable model.tar.gz', 0],
    // Found only after the first one is read and its version allocated: the number goes unused.
    ['two LoRA files', () => modelTarGz(file, { extra: [{ path: 'pokemon-000002.safetensors', body: file }] }), 'saved several .safetensors files at the top of s3://artifacts-bucket/models/', 1],
    ['a path with .. after the LoRA', () => modelTarGz(file, { extra: [{ path: 'x/../../y', body: metadata.body }] }), 'holds "x/../../y", a path outside the archive', 1],
  ])('%s: LoraFileInvalid saying so, and no copy and no item', async (_, archive, message, allocated) => {
    const result = await refusal(archive());
    expect(result).toEqual({ error: expect.objectContaining({ name: 'LoraFileInvalid', message: expect.stringContaining(message) }), allocated, uploads: 0, items: 0 });
  });

  test('control: the archives of those cases are refused for their flaw, the same archive without it is registered', async () => {
    expect(await refusal(gz([metadata, { path: 'pokemon.safetensors', body: file }]))).toEqual({ error: undefined, allocated: 1, uploads: 1, items: 1 });
  });

  test('a copy S3 refuses as existing is a RegistryConflict, and no item is written', async () => {
    serveArchive(modelTarGz(file));
    serveEmptyRegistry();
    s3Mock.on(PutObjectCommand).rejects(new S3ServiceException({ name: 'PreconditionFailed', $fault: 'client', $metadata: { httpStatusCode: 412 }, message: 'At least one of the pre-conditions you specified did not hold' }));
    await expect(handler(registerEvent())).rejects.toMatchObject({ name: 'RegistryConflict', message: expect.stringContaining('s3://artifacts-bucket/loras/pokemon/5.safetensors already exists') });
    expect(ddbMock).not.toHaveReceivedCommand(PutCommand);
  });

  test('a copy that fails for S3 is thrown as it is (for the Retry), and no item is written', async () => {
    serveArchive(modelTarGz(file));
    serveEmptyRegistry();
    s3Mock.on(PutObjectCommand).rejects(new S3ServiceException({ name: 'SlowDown', $fault: 'server', $metadata: { httpStatusCode: 503 }, message: 'Please reduce your request rate.' }));
    await expect(handler(registerEvent())).rejects.toMatchObject({ name: 'SlowDown' });
    expect(ddbMock).not.toHaveReceivedCommand(PutCommand);
    expect(s3Mock).not.toHaveReceivedCommand(AbortMultipartUploadCommand);
  });

  test('a retried registration of the same execution returns its version and reads or writes nothing else', async () => {
    const earlier = { name: 'pokemon', version: 3, status: 'pending', modelType: 'sd15', baseModel: 'b', s3Uri: 's3://artifacts-bucket/loras/pokemon/3.safetensors', sha256: 'ab', sizeBytes: 1, rank: 4, components: ['unet'], createdAt: 't', execution: EXECUTION.arn };
    ddbMock.on(QueryCommand).resolves({ Items: [earlier] });
    await expect(handler(registerEvent())).resolves.toMatchObject({ name: 'pokemon', version: 3, ref: 'pokemon@3', s3Uri: earlier.s3Uri });
    expect(ddbMock).toHaveReceivedCommandWith(QueryCommand, { FilterExpression: 'execution = :execution', ExpressionAttributeValues: expect.objectContaining({ ':execution': EXECUTION.arn }) });
    expect(ddbMock).not.toHaveReceivedCommand(UpdateCommand);
    expect(s3Mock).not.toHaveReceivedAnyCommand();
  });

  test('the registration claims its execution on the head before copying, and releases the claim after writing', async () => {
    serveArchive(modelTarGz(file));
    serveEmptyRegistry();
    await handler(registerEvent());
    const updates = ddbMock.commandCalls(UpdateCommand).map((call) => call.args[0].input);
    expect(updates.map((input) => input.UpdateExpression)).toEqual(['SET #claim = :until', 'ADD #latest :one SET updatedAt = :now', 'REMOVE #claim']);
    expect(updates[0]).toMatchObject({ Key: { name: 'pokemon', version: 0 }, ConditionExpression: 'attribute_not_exists(#claim) OR #claim < :now', ExpressionAttributeNames: { '#claim': claimAttribute(EXECUTION.arn) } });
    // The claim lasts beyond the function's timeout, and only this claim is released.
    expect(updates[0].ExpressionAttributeValues).toEqual({ ':now': NOW.getTime(), ':until': NOW.getTime() + 660_000 });
    expect(updates[2]).toMatchObject({ ConditionExpression: '#claim = :until', ExpressionAttributeValues: { ':until': NOW.getTime() + 660_000 } });
  });

  test('another invocation holding the claim: RegistryBusy (retried by the state), nothing allocated or copied', async () => {
    serveArchive(modelTarGz(file));
    serveEmptyRegistry();
    ddbMock.on(UpdateCommand, { UpdateExpression: 'SET #claim = :until' }).rejects(Object.assign(new Error('The conditional request failed'), { name: 'ConditionalCheckFailedException' }));
    await expect(handler(registerEvent())).rejects.toMatchObject({ name: 'RegistryBusy', message: expect.stringContaining('Another invocation of execution') });
    expect(allocations()).toBe(0);
    expect(uploaded()).toEqual([]);
  });

  test('a version that already exists is a RegistryConflict saying how to repair the head', async () => {
    serveArchive(modelTarGz(file));
    serveEmptyRegistry();
    ddbMock.on(PutCommand).rejects(Object.assign(new Error('The conditional request failed'), { name: 'ConditionalCheckFailedException' }));
    await expect(handler(registerEvent())).rejects.toMatchObject({ name: 'RegistryConflict', message: expect.stringContaining('Set "latest" of the head item (name pokemon, version 0)') });
  });
});

describe('promote, with the table mocked', () => {
  const canceled = (...codes: string[]) =>
    new TransactionCanceledException({ message: 'Transaction cancelled', $metadata: {}, CancellationReasons: codes.map((Code) => ({ Code })) });

  test('both conditions hold: ready and current', async () => {
    ddbMock.on(TransactWriteCommand).resolves({});
    await expect(handler({ action: 'promote', name: 'pokemon', version: 4 })).resolves.toEqual({ name: 'pokemon', version: 4, current: true });
    const items = ddbMock.commandCalls(TransactWriteCommand)[0].args[0].input.TransactItems ?? [];
    expect(items.map((item) => item.Update?.ConditionExpression)).toEqual(['#status = :pending', 'attribute_not_exists(#current) OR #current < :v']);
  });

  test('a newer version is current: this one becomes ready, not current', async () => {
    ddbMock.on(TransactWriteCommand).rejects(canceled('None', 'ConditionalCheckFailed'));
    ddbMock.on(UpdateCommand).resolves({});
    await expect(handler({ action: 'promote', name: 'pokemon', version: 4 })).resolves.toEqual({ name: 'pokemon', version: 4, current: false });
    expect(ddbMock).toHaveReceivedCommandWith(UpdateCommand, { Key: { name: 'pokemon', version: 4 }, ConditionExpression: '#status = :from', ExpressionAttributeValues: expect.objectContaining({ ':to': 'ready', ':from': 'pending' }) });
  });

  test('a retried promotion finds the version ready and answers whether it is current', async () => {
    ddbMock.on(TransactWriteCommand).rejects(canceled('ConditionalCheckFailed', 'None'));
    ddbMock.on(GetCommand, { Key: { name: 'pokemon', version: 4 } }).resolves({ Item: { name: 'pokemon', version: 4, status: 'ready' } });
    ddbMock.on(GetCommand, { Key: { name: 'pokemon', version: 0 } }).resolves({ Item: { name: 'pokemon', version: 0, latest: 4, current: 4 } });
    await expect(handler({ action: 'promote', name: 'pokemon', version: 4 })).resolves.toEqual({ name: 'pokemon', version: 4, current: true });
  });

  test('a failed, retired or missing version is refused', async () => {
    ddbMock.on(TransactWriteCommand).rejects(canceled('ConditionalCheckFailed', 'None'));
    ddbMock.on(GetCommand).resolves({ Item: { name: 'pokemon', version: 4, status: 'retired' } });
    await expect(handler({ action: 'promote', name: 'pokemon', version: 4 })).rejects.toMatchObject({ name: 'RegistryConflict', message: expect.stringContaining('pokemon@4 is retired, not pending') });
    ddbMock.on(GetCommand).resolves({});
    await expect(handler({ action: 'promote', name: 'pokemon', version: 4 })).rejects.toMatchObject({ name: 'LoraNotFound' });
  });

  test.each([
    ['a conflict with another transaction', ['TransactionConflict', 'None']],
    ['throttling of the head', ['None', 'ThrottlingError']],
    ['throughput exceeded', ['ProvisionedThroughputExceeded', 'None']],
  ])('%s is RegistryBusy, a name the state retries', async (_, codes) => {
    ddbMock.on(TransactWriteCommand).rejects(canceled(...codes));
    await expect(handler({ action: 'promote', name: 'pokemon', version: 4 })).rejects.toMatchObject({ name: 'RegistryBusy', message: expect.stringContaining(codes.join(', ')) });
    expect(ddbMock).not.toHaveReceivedCommand(UpdateCommand);
  });

  test('control: a cancellation for another reason (a validation error) is thrown as it is', async () => {
    ddbMock.on(TransactWriteCommand).rejects(canceled('ValidationError', 'None'));
    await expect(handler({ action: 'promote', name: 'pokemon', version: 4 })).rejects.toMatchObject({ name: 'TransactionCanceledException' });
  });
});

test('the function module refuses to start without its settings', () => {
  const index = path.resolve(__dirname, '../../lambda/registry/index');
  const load = (env: Record<string, string | undefined>) => requireWithEnv<typeof import('../../lambda/registry/index')>(index, { AWS_REGION: 'eu-west-1', ...env });
  const env = { LORA_REGISTRY_TABLE: 't', LORA_BUCKET: 'b', MODELS_PREFIX: 'models/', LORA_PREFIX: 'loras/' };
  expect(() => load({ ...env, LORA_REGISTRY_TABLE: undefined })).toThrow('LORA_REGISTRY_TABLE is not set');
  expect(() => load({ ...env, MODELS_PREFIX: undefined })).toThrow('MODELS_PREFIX is not set');
  expect(() => load({ ...env, LORA_PREFIX: undefined })).toThrow('LORA_PREFIX is not set');
  expect(typeof load(env).handler).toBe('function');
});
