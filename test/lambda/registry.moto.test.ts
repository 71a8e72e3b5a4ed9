import { createHash } from 'node:crypto';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { randomFillSync } from 'node:crypto';
import { CreateBucketCommand, GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { DynamoDBDocumentClient, GetCommand, PutCommand as PutItemCommand, QueryCommand } from '@aws-sdk/lib-dynamodb';
import type { LoraPromotion, LoraRejection, LoraRetirement, RegisteredLora, RegistryResult } from '../../lambda/shared/contract';
import { createHandler } from '../../lambda/registry/handler';
import { claimAttribute, RegistryTable, type VersionItem } from '../../lambda/registry/table';
import { safetensorsFile, sd15Lora } from '../fixtures/lora-files';
import { motoAvailable, startMoto, type MotoServer } from '../support/moto';
import { sharedRunFixture, trainingJobFixture } from '../support/runs';
import { modelTarGz, type TarFile } from '../support/tar-archive';

const BUCKET = 'artifacts-bucket';
const TABLE = 'lora-registry';
const describeWithMoto = motoAvailable() ? describe : describe.skip;

describeWithMoto('the registry through the real AWS SDK, against moto', () => {
  let moto: MotoServer;
  let s3: S3Client;
  let dynamodb: DynamoDBClient;
  let documents: DynamoDBDocumentClient;
  let handler: (event: unknown) => Promise<RegistryResult>;
  let clock = 0;

  beforeAll(async () => {
    moto = await startMoto();
    s3 = new S3Client(moto.clientConfig);
    dynamodb = new DynamoDBClient(moto.clientConfig);
    documents = DynamoDBDocumentClient.from(dynamodb);
    handler = createHandler({ s3, table: new RegistryTable(documents, TABLE), storage: { bucket: BUCKET, modelsPrefix: 'models/', lorasPrefix: 'loras/' }, now: () => new Date(Date.UTC(2025, 0, 1, 12, 0, clock++)) });
  });
  afterAll(async () => {
    s3?.destroy();
    dynamodb?.destroy();
    await moto?.stop();
  });
  beforeEach(async () => {
    await moto.reset();
    await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
    // The table as lib/lora-registry.ts defines it: name (S) and version (N), on demand.
    await dynamodb.send(
      new CreateTableCommand({
        TableName: TABLE,
        AttributeDefinitions: [{ AttributeName: 'name', AttributeType: 'S' }, { AttributeName: 'version', AttributeType: 'N' }],
        KeySchema: [{ AttributeName: 'name', KeyType: 'HASH' }, { AttributeName: 'version', KeyType: 'RANGE' }],
        BillingMode: 'PAY_PER_REQUEST',
      }),
    );
    jest.spyOn(console, 'log').mockImplementation(() => undefined);
    jest.spyOn(console, 'warn').mockImplementation(() => undefined);
  });
  afterEach(() => jest.restoreAllMocks());

  /** A finished shared run: its model.tar.gz as the training job leaves it, holding `file` (a small LoRA by default). */
  async function trainedRun(job: string, rank = 4, file = safetensorsFile(sd15Lora(rank)), extra: TarFile[] = []): Promise<Record<string, unknown>> {
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: `models/${job}/output/model.tar.gz`, Body: modelTarGz(file, { extra }) }));
    return {
      action: 'register',
      run: sharedRunFixture(job),
      training: trainingJobFixture({ TrainingJobName: job, ModelArtifacts: { S3ModelArtifacts: `s3://${BUCKET}/models/${job}/output/model.tar.gz` } }),
      execution: { name: job, startTime: '2025-01-01T11:00:00.000Z', arn: `arn:aws:states:us-east-1:123456789012:execution:LoraPipelineWorkflow:${job}` },
    };
  }

  /** The object at an s3:// URI, read back whole. */
  async function objectAt(uri: string): Promise<Buffer> {
    const [, bucket, key] = /^s3:\/\/([^/]+)\/(.+)$/.exec(uri)!;
    const body = (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!;
    return Buffer.from(await body.transformToByteArray());
  }

  /**
   * A LoRA of about 12 MB: more than two of lib-storage's 5 MiB parts, so the copy is a real
   * multipart upload; random weights, so gzip cannot shrink it to one part's worth of reads.
   */
  function largeLora(): Buffer {
    const file = safetensorsFile(sd15Lora(1200));
    randomFillSync(file, 8 + Number(file.readBigUInt64LE(0)));
    return file;
  }

  const register = async (event: Record<string, unknown>) => (await handler(event)) as RegisteredLora;
  const promote = async (version: number) => (await handler({ action: 'promote', name: 'pokemon', version })) as LoraPromotion;
  const retire = async (version: number) => (await handler({ action: 'retire', name: 'pokemon', version })) as LoraRetirement;
  const item = async (version: number) => (await documents.send(new GetCommand({ TableName: TABLE, Key: { name: 'pokemon', version } }))).Item;

  test('a registration copies the LoRA to loras/<name>/<version>.safetensors and writes the item the server reads: the copy, its hash, size, rank and components', async () => {
    const event = await trainedRun('job-1', 8);
    const lora = await register(event);
    expect(lora).toMatchObject({ name: 'pokemon', version: 1, status: 'pending', rank: 8, components: ['unet', 'text_encoder'] });
    const stored = await item(1);
    const file = safetensorsFile(sd15Lora(8));
    expect(stored).toMatchObject({
      status: 'pending',
      modelType: 'sd15',
      s3Uri: `s3://${BUCKET}/loras/pokemon/1.safetensors`,
      sha256: createHash('sha256').update(file).digest('hex'),
      sizeBytes: file.length,
      trainingJob: 'job-1',
      execution: expect.stringContaining(':execution:LoraPipelineWorkflow:job-1'),
    });
    expect(await objectAt(String(stored?.s3Uri))).toEqual(file);
    expect(await item(0)).toMatchObject({ latest: 1 });
    expect(await item(0)).not.toHaveProperty('current');
    // A retried registration of the same execution adds nothing: no version, no copy.
    expect(await register(event)).toMatchObject({ version: 1, s3Uri: stored?.s3Uri });
    expect(await item(0)).toMatchObject({ latest: 1 });
    const copies = await s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: 'loras/' }));
    expect((copies.Contents ?? []).map((o) => o.Key)).toEqual(['loras/pokemon/1.safetensors']);
  });

  test('a LoRA of several upload parts (~12 MB) is streamed through a multipart upload, byte for byte', async () => {
    const file = largeLora();
    expect(file.length).toBeGreaterThan(2 * 5 * 1024 * 1024);
    const lora = await register(await trainedRun('job-large', 4, file));
    expect(lora).toMatchObject({ version: 1, rank: 1200, sizeBytes: file.length, sha256: createHash('sha256').update(file).digest('hex') });
    const copy = await objectAt(lora.s3Uri);
    expect(createHash('sha256').update(copy).digest('hex')).toBe(lora.sha256);
    // A multipart object's ETag ends in -<parts>: three parts of at most 5 MiB.
    const head = await s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'loras/pokemon/1.safetensors' }));
    expect(head.ETag).toMatch(/-3"$/);
  });

  test('a multipart copy refused after its parts were sent (a second LoRA at the archive\'s end) is aborted: no object, no upload left, no item', async () => {
    const event = await trainedRun('job-two', 4, largeLora(), [{ path: 'pokemon-000002.safetensors', body: Buffer.from('late') }]);
    const sent = jest.spyOn(s3, 'send');
    await expect(register(event)).rejects.toMatchObject({ name: 'LoraFileInvalid', message: expect.stringContaining('several .safetensors files') });
    const commands = sent.mock.calls.map(([command]) => command.constructor.name);
    expect(commands).toEqual(expect.arrayContaining(['CreateMultipartUploadCommand', 'UploadPartCommand', 'AbortMultipartUploadCommand']));
    expect(commands).not.toContain('CompleteMultipartUploadCommand');
    expect((await s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: 'loras/' }))).Contents ?? []).toEqual([]);
    expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: BUCKET }))).Uploads ?? []).toEqual([]);
    expect(await item(1)).toBeUndefined();
    // Its version number was allocated and is never used: the next registration gets 2.
    expect(await item(0)).toMatchObject({ latest: 1 });
    expect(await register(await trainedRun('job-next'))).toMatchObject({ version: 2 });
  });

  test('an existing copy is never overwritten: If-None-Match refuses it, and the version gets no item', async () => {
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'loras/pokemon/1.safetensors', Body: 'an older copy' }));
    await expect(register(await trainedRun('job-clash'))).rejects.toMatchObject({ name: 'RegistryConflict', message: expect.stringContaining('loras/pokemon/1.safetensors already exists') });
    expect((await objectAt(`s3://${BUCKET}/loras/pokemon/1.safetensors`)).toString()).toBe('an older copy');
    expect(await item(1)).toBeUndefined();
  });

  test('concurrent registrations of one name get distinct versions, and none is overwritten', async () => {
    const events = await Promise.all(Array.from({ length: 8 }, (_, i) => trainedRun(`job-${i}`)));
    const versions = (await Promise.all(events.map(register))).map((lora) => lora.version);
    expect([...versions].sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const stored = await documents.send(new QueryCommand({ TableName: TABLE, KeyConditionExpression: '#n = :n AND #v > :zero', ExpressionAttributeNames: { '#n': 'name', '#v': 'version' }, ExpressionAttributeValues: { ':n': 'pokemon', ':zero': 0 } }));
    // Each version's item names the job that registered it: eight different jobs, none lost.
    expect(new Set((stored.Items ?? []).map((i) => i.trainingJob)).size).toBe(8);
    expect(await item(0)).toMatchObject({ latest: 8 });
    // Control: a write of a version that exists is refused by its condition, and the item is kept.
    const kept = await item(3);
    await expect(new RegistryTable(documents, TABLE).putVersion({ ...(kept as VersionItem), trainingJob: 'intruder' })).rejects.toMatchObject({ name: 'RegistryConflict' });
    expect(await item(3)).toEqual(kept);
  });

  test('promotion: ready and current; an older version promoted later becomes ready without moving current back', async () => {
    const first = await register(await trainedRun('job-a'));
    const second = await register(await trainedRun('job-b'));
    expect(await promote(second.version)).toEqual({ name: 'pokemon', version: 2, current: true });
    expect(await promote(first.version)).toEqual({ name: 'pokemon', version: 1, current: false });
    expect(await item(0)).toMatchObject({ current: 2 });
    expect(await item(1)).toMatchObject({ status: 'ready' });
    // A repeated promotion changes nothing and says where the version stands.
    expect(await promote(2)).toEqual({ name: 'pokemon', version: 2, current: true });
    await expect(promote(9)).rejects.toMatchObject({ name: 'LoraNotFound' });
  });

  test('retiring the current version moves current back to the highest ready version below it, skipping others', async () => {
    for (const job of ['j1', 'j2', 'j3', 'j4']) await register(await trainedRun(job));
    await promote(1);
    await promote(2);
    await handler({ action: 'reject', name: 'pokemon', version: 3, reason: 'its check failed' });
    await promote(4);
    expect(await item(0)).toMatchObject({ current: 4 });
    expect(await retire(4)).toEqual({ name: 'pokemon', version: 4, status: 'retired', current: 2 });
    expect(await item(4)).toMatchObject({ status: 'retired', retiredAt: expect.any(String) });
    expect(await item(0)).toMatchObject({ current: 2 });
    // Retiring a version that is not current leaves current alone.
    expect(await retire(1)).toEqual({ name: 'pokemon', version: 1, status: 'retired', current: 2 });
    // The last ready one: no current remains.
    expect(await retire(2)).toEqual({ name: 'pokemon', version: 2, status: 'retired' });
    expect(await item(0)).not.toHaveProperty('current');
    await expect(retire(7)).rejects.toMatchObject({ name: 'LoraNotFound' });
  });

  test('a promotion racing a retirement: current ends on the newest ready version below the retired one, not below it', async () => {
    for (const job of ['k1', 'k2', 'k3']) await register(await trainedRun(job));
    await promote(1);
    await promote(3);
    // Version 2 is promoted while 3 is being retired, after the retirement looked for the highest
    // ready version below 3 (1): its promotion sees 3 still current, so 2 becomes ready, not current.
    const lookup = RegistryTable.prototype.highestReadyBelow;
    let raced = false;
    jest.spyOn(RegistryTable.prototype, 'highestReadyBelow').mockImplementation(async function (this: RegistryTable, name: string, below: number) {
      const found = await lookup.call(this, name, below);
      if (!raced) {
        raced = true;
        expect(await promote(2)).toEqual({ name: 'pokemon', version: 2, current: false });
      }
      return found;
    });
    expect(await retire(3)).toEqual({ name: 'pokemon', version: 3, status: 'retired', current: 2 });
    expect(await item(0)).toMatchObject({ current: 2 });
    expect(await item(2)).toMatchObject({ status: 'ready' });
  });

  test('two invocations of one execution at once (a retry while the first still runs) register one version', async () => {
    const event = await trainedRun('job-twice', 4, largeLora());
    const outcomes = await Promise.allSettled([register(event), register(event)]);
    const versions = outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value.version] : []));
    const errors = outcomes.flatMap((o) => (o.status === 'rejected' ? [(o.reason as Error).name] : []));
    // Either both answer version 1, or the second is RegistryBusy (for the state's Retry); never a second version.
    expect(versions.every((v) => v === 1)).toBe(true);
    expect(errors.every((name) => name === 'RegistryBusy')).toBe(true);
    expect(versions.length).toBeGreaterThan(0);
    expect(await item(0)).toMatchObject({ latest: 1 });
    expect(await item(2)).toBeUndefined();
    const copies = await s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: 'loras/' }));
    expect((copies.Contents ?? []).map((o) => o.Key)).toEqual(['loras/pokemon/1.safetensors']);
    // The state's retry then answers the same version, and no claim is left on the head.
    expect(await register(event)).toMatchObject({ version: 1 });
    expect(Object.keys((await item(0)) ?? {}).filter((key) => key.startsWith('registering-'))).toEqual([]);
  });

  test("a claim held by a running invocation makes the execution's retry wait; one left by an invocation that died (past its lease) does not", async () => {
    const event = await trainedRun('job-died');
    const claim = claimAttribute((event.execution as { arn: string }).arn);
    await documents.send(new PutItemCommand({ TableName: TABLE, Item: { name: 'pokemon', version: 0, latest: 0, [claim]: Date.UTC(2100, 0, 1) } }));
    await expect(register(event)).rejects.toMatchObject({ name: 'RegistryBusy' });
    expect(await item(0)).toMatchObject({ latest: 0 });
    await documents.send(new PutItemCommand({ TableName: TABLE, Item: { name: 'pokemon', version: 0, latest: 0, [claim]: 0 } }));
    expect(await register(event)).toMatchObject({ version: 1 });
    expect(await item(0)).not.toHaveProperty(claim);
  });

  test('reject marks a pending version failed with why; a ready version is left as it is', async () => {
    await register(await trainedRun('r1'));
    await register(await trainedRun('r2'));
    await promote(2);
    expect((await handler({ action: 'reject', name: 'pokemon', version: 1, reason: 'the server answered 400' })) as LoraRejection).toEqual({ name: 'pokemon', version: 1, status: 'failed', changed: true });
    expect(await item(1)).toMatchObject({ status: 'failed', failure: 'the server answered 400' });
    expect((await handler({ action: 'reject', name: 'pokemon', version: 2, reason: 'late failure' })) as LoraRejection).toEqual({ name: 'pokemon', version: 2, status: 'ready', changed: false });
    expect(await item(2)).toMatchObject({ status: 'ready' });
    expect(await item(2)).not.toHaveProperty('failure');
    // A failed version cannot be promoted afterwards.
    await expect(promote(1)).rejects.toMatchObject({ name: 'RegistryConflict' });
  });
});
