import * as path from 'node:path';
import { CreateBucketCommand, GetObjectCommand, ListBucketsCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { motoAvailable, startMoto } from '../support/moto';
import type { MotoServer } from '../support/moto';
import { requireWithEnv } from '../support/isolated';

// Outside CI a machine without moto skips this suite with a note; in CI motoAvailable() throws.
const describeWithMoto = motoAvailable() ? describe : describe.skip;

describeWithMoto('moto server harness', () => {
  let moto: MotoServer;
  let s3: S3Client;

  beforeAll(async () => {
    moto = await startMoto();
    s3 = new S3Client(moto.clientConfig);
  });

  afterAll(async () => {
    s3?.destroy();
    await moto?.stop();
  });

  test('round-trips an object through the real AWS SDK v3 S3 client', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'datasets' }));
    await s3.send(new PutObjectCommand({ Bucket: 'datasets', Key: 'datasets/pokemon/dataset.toml', Body: '[general]\n' }));
    const object = await s3.send(new GetObjectCommand({ Bucket: 'datasets', Key: 'datasets/pokemon/dataset.toml' }));
    expect(await object.Body?.transformToString()).toBe('[general]\n');
  });

  test('reset forgets every resource', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'to-forget' }));
    await moto.reset();
    const { Buckets } = await s3.send(new ListBucketsCommand({}));
    expect(Buckets ?? []).toEqual([]);
  });

  test('a second server gets its own port, and stop ends it', async () => {
    const other = await startMoto();
    expect(other.endpoint).not.toBe(moto.endpoint);
    await other.stop();
    await expect(fetch(`${other.endpoint}/moto-api/`)).rejects.toThrow();
    await expect(other.stop()).resolves.toBeUndefined();
  });
});

describe('moto server harness failures', () => {
  test('a server that exits at start is reported with its output, not waited on', async () => {
    const harness = requireWithEnv<typeof import('../support/moto')>(path.resolve(__dirname, '../support/moto'), { PYTHON: '/bin/false' });
    const started = Date.now();
    await expect(harness.startMoto(20_000)).rejects.toThrow(/moto server exited at start/);
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});
