import { CreateBucketCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { gzipSync } from 'node:zlib';
import { publishSamples } from '../../lambda/samples/publish';
import { motoAvailable, useMotoS3 } from '../support/moto';
import { tarArchive } from '../support/tar-archive';

const BUCKET = 'artifacts-bucket';
const JOB = 'lora-pokemon-20250101120000-abc123';
const KEY_ARN = 'arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';
const STORAGE = { bucket: BUCKET, modelsPrefix: 'models/', keyArn: KEY_ARN };
const describeWithMoto = motoAvailable() ? describe : describe.skip;

describeWithMoto('Publish samples through the real AWS SDK, against moto', () => {
  const aws = useMotoS3([BUCKET]);

  const put = (key: string, body: string | Buffer, contentType?: string) => aws.s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body, ContentType: contentType }));
  const read = async (key: string) => Buffer.from(await (await aws.s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }))).Body!.transformToByteArray());
  const keys = async (prefix: string) => ((await aws.s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix }))).Contents ?? []).map((o) => o.Key).sort();

  test('every sample/ file of the job\'s output.tar.gz, byte for byte, with its content type, SSE-KMS with the pipeline key; nothing else', async () => {
    const sheet = Buffer.from([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]);
    const samplesJson = JSON.stringify({ prompts: [{ index: 0, prompt: 'a red pokemon', seed: 1 }], images: [], contact_sheet: 'contact-sheet.png' });
    // What the container leaves in /opt/ml/output/data beside its samples, and what no sample may be.
    const archive = gzipSync(
      tarArchive([
        { path: 'pokemon.safetensors', body: Buffer.from('not a sample') },
        { path: 'logs/train.log', body: Buffer.from('log') },
        { path: 'sample/', type: '5' },
        { path: 'sample/contact-sheet.png', body: sheet },
        { path: 'sample/samples.json', body: Buffer.from(samplesJson) },
        { path: 'sample/pokemon e000001 00.png', body: Buffer.from('image 1') },
        { path: 'sample/nested/x.png', body: Buffer.from('nested') },
        { path: 'sample/../escape.png', body: Buffer.from('escape') },
      ]),
    );
    await put(`models/${JOB}/output/output.tar.gz`, archive);
    await put(`models/${JOB}/output/model.tar.gz`, 'model');
    // Another job whose name starts the same: not read.
    await put(`models/${JOB}-2/output/output.tar.gz`, gzipSync(tarArchive([{ path: 'sample/other.png', body: Buffer.from('other') }])));

    const result = await publishSamples({ trainingJobName: JOB }, aws.s3, STORAGE);
    expect(result).toEqual({
      bucket: BUCKET,
      prefix: `models/${JOB}/samples/`,
      count: 3,
      samplesJson: `models/${JOB}/samples/samples.json`,
      contactSheet: `models/${JOB}/samples/contact-sheet.png`,
      omitted: 0,
      prompt: 'a red pokemon',
      captionsWritten: 0,
      captionsKept: 0,
    });
    expect(await keys(`models/${JOB}/samples/`)).toEqual([`models/${JOB}/samples/contact-sheet.png`, `models/${JOB}/samples/pokemon e000001 00.png`, `models/${JOB}/samples/samples.json`]);
    // Nothing else written anywhere: not the nested or ".." entries, not the other job's samples.
    expect(await keys('')).toEqual([...(await keys(`models/${JOB}/samples/`)), `models/${JOB}-2/output/output.tar.gz`, `models/${JOB}/output/model.tar.gz`, `models/${JOB}/output/output.tar.gz`].sort());
    expect(await read(`models/${JOB}/samples/contact-sheet.png`)).toEqual(sheet);
    expect((await read(`models/${JOB}/samples/samples.json`)).toString()).toBe(samplesJson);
    expect((await read(`models/${JOB}/samples/pokemon e000001 00.png`)).toString()).toBe('image 1');
    const head = await aws.s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: `models/${JOB}/samples/contact-sheet.png` }));
    expect(head).toMatchObject({ ContentType: 'image/png', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: KEY_ARN });
  });

  test('no output.tar.gz, or one without a sample folder: count 0, nothing written', async () => {
    await put(`models/${JOB}/output/model.tar.gz`, 'model');
    expect(await publishSamples({ trainingJobName: JOB }, aws.s3, STORAGE)).toEqual({ bucket: BUCKET, prefix: `models/${JOB}/samples/`, count: 0, omitted: 0, captionsWritten: 0, captionsKept: 0 });
    await put(`models/${JOB}/output/output.tar.gz`, gzipSync(tarArchive([{ path: 'logs/train.log', body: Buffer.from('log') }])));
    expect(await publishSamples({ trainingJobName: JOB }, aws.s3, STORAGE)).toEqual({ bucket: BUCKET, prefix: `models/${JOB}/samples/`, count: 0, omitted: 0, captionsWritten: 0, captionsKept: 0 });
    expect(await keys(`models/${JOB}/samples/`)).toEqual([]);
  });

  describe('captions the job generated, written back next to their images', () => {
    const DATASETS = 'datasets-bucket';
    const FOLDER = { bucket: DATASETS, prefix: 'datasets/pokemon/' };
    const datasetKeys = async () => ((await aws.s3.send(new ListObjectsV2Command({ Bucket: DATASETS }))).Contents ?? []).map((o) => o.Key).sort();
    const readDataset = async (key: string) => (await (await aws.s3.send(new GetObjectCommand({ Bucket: DATASETS, Key: key }))).Body!.transformToString());

    beforeEach(async () => {
      await aws.s3.send(new CreateBucketCommand({ Bucket: DATASETS }));
      await aws.s3.send(new PutObjectCommand({ Bucket: DATASETS, Key: 'datasets/pokemon/b.png', Body: 'image' }));
      // The user captioned c.png while the job ran: theirs is kept.
      await aws.s3.send(new PutObjectCommand({ Bucket: DATASETS, Key: 'datasets/pokemon/c.txt', Body: 'my own caption' }));
      const archive = tarArchive([
        { path: 'sample/a.png', body: Buffer.from('a') },
        { path: 'captions/b.txt', body: Buffer.from('ohwx, a red dog\n') },
        { path: 'captions/c.txt', body: Buffer.from('ohwx, a blue cat\n') },
        { path: './captions/sub/d.caption', body: Buffer.from('ohwx, a tree\n') },
        { path: 'captions/captions.json', body: Buffer.from('{"count": 3}') },
        { path: 'captions/e.png', body: Buffer.from('not a caption') },
        { path: 'captions/../escape.txt', body: Buffer.from('escape') },
        { path: 'captions/sub/../../escape.txt', body: Buffer.from('escape') },
        { path: 'captions/.txt', body: Buffer.from('no name') },
        { path: 'other/f.txt', body: Buffer.from('not in captions/') },
      ]);
      await put(`models/${JOB}/output/output.tar.gz`, gzipSync(archive));
    });

    test('each .txt/.caption under captions/ is written once, SSE-KMS; a caption already there is kept; nothing else', async () => {
      const result = await publishSamples({ trainingJobName: JOB, datasetFolder: FOLDER }, aws.s3, STORAGE);
      expect(result).toMatchObject({ count: 1, captionsWritten: 2, captionsKept: 1 });
      expect(await datasetKeys()).toEqual(['datasets/pokemon/b.png', 'datasets/pokemon/b.txt', 'datasets/pokemon/c.txt', 'datasets/pokemon/sub/d.caption']);
      expect(await readDataset('datasets/pokemon/b.txt')).toBe('ohwx, a red dog\n');
      expect(await readDataset('datasets/pokemon/c.txt')).toBe('my own caption');
      const head = await aws.s3.send(new HeadObjectCommand({ Bucket: DATASETS, Key: 'datasets/pokemon/b.txt' }));
      expect(head).toMatchObject({ ContentType: 'text/plain; charset=utf-8', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: KEY_ARN });
      // Nothing outside the folder, in either bucket.
      expect((await keys('')).filter((key) => !key!.startsWith(`models/${JOB}/`))).toEqual([]);
    });

    test('run again (a retried state): every caption is now kept, none overwritten', async () => {
      await publishSamples({ trainingJobName: JOB, datasetFolder: FOLDER }, aws.s3, STORAGE);
      await aws.s3.send(new PutObjectCommand({ Bucket: DATASETS, Key: 'datasets/pokemon/b.txt', Body: 'fixed by the user' }));
      const again = await publishSamples({ trainingJobName: JOB, datasetFolder: FOLDER }, aws.s3, STORAGE);
      expect(again).toMatchObject({ captionsWritten: 0, captionsKept: 3 });
      expect(await readDataset('datasets/pokemon/b.txt')).toBe('fixed by the user');
    });

    test('without a dataset folder in the event (an execution started before it was passed), no caption is written', async () => {
      expect(await publishSamples({ trainingJobName: JOB }, aws.s3, STORAGE)).toMatchObject({ count: 1, captionsWritten: 0, captionsKept: 0 });
      expect(await datasetKeys()).toEqual(['datasets/pokemon/b.png', 'datasets/pokemon/c.txt']);
    });
  });

  test('run twice (a retried state): the same files, overwritten, no error', async () => {
    await put(`models/${JOB}/output/output.tar.gz`, gzipSync(tarArchive([{ path: 'sample/a.png', body: Buffer.from('a') }])));
    await publishSamples({ trainingJobName: JOB }, aws.s3, STORAGE);
    await expect(publishSamples({ trainingJobName: JOB }, aws.s3, STORAGE)).resolves.toMatchObject({ count: 1 });
    expect(await keys(`models/${JOB}/samples/`)).toEqual([`models/${JOB}/samples/a.png`]);
  });
});
