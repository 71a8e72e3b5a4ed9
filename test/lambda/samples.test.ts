import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { mockClient } from 'aws-sdk-client-mock';
import 'aws-sdk-client-mock-jest';
import { MAX_SAMPLE_FILE_BYTES, MAX_SAMPLE_OBJECTS, publishSamples } from '../../lambda/samples/publish';
import { contentType, sampleName } from '../../lambda/samples/sample-name';
import { captionPath, MAX_CAPTION_BYTES } from '../../lambda/samples/captions';
import { tarArchive, type TarFile } from '../support/tar-archive';

const s3Mock = mockClient(S3Client);
const s3 = new S3Client({ region: 'eu-west-1' });
const JOB = 'lora-pokemon-20250101120000-abc123';
const STORAGE = { bucket: 'artifacts', modelsPrefix: 'models/', keyArn: 'arn:aws:kms:eu-west-1:123456789012:key/k' };
const ARCHIVE = `models/${JOB}/output/output.tar.gz`;
const TARGET = `models/${JOB}/samples/`;

const file = (path: string, body: string | Buffer = path): TarFile => ({ path, body: Buffer.isBuffer(body) ? body : Buffer.from(body) });
const samplesJson = (contactSheet: string | null = 'contact-sheet.png') => JSON.stringify({ prompts: [{ index: 0, prompt: 'a green pokemon', seed: 1234 }], images: [], contact_sheet: contactSheet });

/** The archive listed and served as S3 would (a fresh stream per GetObject). */
function serve(archive: Buffer): void {
  s3Mock.on(ListObjectsV2Command).resolves({ Contents: [{ Key: ARCHIVE }], IsTruncated: false });
  s3Mock.on(GetObjectCommand).callsFake(() => ({ Body: Readable.from([archive]) }));
}
const puts = () => s3Mock.commandCalls(PutObjectCommand).map((c) => c.args[0].input);

beforeEach(() => {
  s3Mock.reset();
  s3Mock.on(PutObjectCommand).resolves({});
});

test('writes every sample/ file of output.tar.gz to models/<job>/samples/ with the pipeline key, and answers where samples.json and the sheet are', async () => {
  serve(gzipSync(tarArchive([file('sample/pokemon_e000001_00.png', 'png 1'), file('sample/samples.json', samplesJson()), file('sample/contact-sheet.png', 'sheet'), file('sample/pokemon_e000002_00.png', 'png 2')])));
  const result = await publishSamples({ trainingJobName: JOB }, s3, STORAGE);
  expect(result).toEqual({ bucket: 'artifacts', prefix: TARGET, count: 4, samplesJson: `${TARGET}samples.json`, contactSheet: `${TARGET}contact-sheet.png`, omitted: 0, prompt: 'a green pokemon', captionsWritten: 0, captionsKept: 0 });
  expect(s3Mock).toHaveReceivedCommandWith(ListObjectsV2Command, { Bucket: 'artifacts', Prefix: ARCHIVE });
  expect(s3Mock).toHaveReceivedCommandWith(GetObjectCommand, { Bucket: 'artifacts', Key: ARCHIVE });
  expect(puts().map((p) => [p.Key, Buffer.from(p.Body as Buffer).toString(), p.ContentType])).toEqual([
    [`${TARGET}pokemon_e000001_00.png`, 'png 1', 'image/png'],
    [`${TARGET}samples.json`, samplesJson(), 'application/json'],
    [`${TARGET}contact-sheet.png`, 'sheet', 'image/png'],
    [`${TARGET}pokemon_e000002_00.png`, 'png 2', 'image/png'],
  ]);
  for (const put of puts()) expect(put).toMatchObject({ Bucket: 'artifacts', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: STORAGE.keyArn });
});

test('only plain files directly in sample/: the model, logs, nested folders, "..", links and hidden files are ignored', async () => {
  serve(
    gzipSync(
      tarArchive([
        file('pokemon.safetensors', 'lora'),
        file('logs/train.log', 'log'),
        { path: 'sample/', type: '5' },
        file('./sample/a.png', 'a'),
        file('sample/nested/b.png', 'nested'),
        file('sample/../escape.png', 'escape'),
        file('../sample/up.png', 'up'),
        file('/sample/absolute.png', 'absolute'),
        file('sample/.hidden', 'hidden'),
        { path: 'sample/link.png', type: '2', linkTarget: '/etc/passwd' },
        file('other/sample/c.png', 'c'),
      ]),
    ),
  );
  const result = await publishSamples({ trainingJobName: JOB }, s3, STORAGE);
  expect(result).toEqual({ bucket: 'artifacts', prefix: TARGET, count: 1, omitted: 0, captionsWritten: 0, captionsKept: 0 });
  expect(puts().map((p) => p.Key)).toEqual([`${TARGET}a.png`]);
});

test('sampling off: no output.tar.gz, or one without sample/, is 0 samples, not a failure', async () => {
  s3Mock.on(ListObjectsV2Command).resolves({ IsTruncated: false, KeyCount: 0 });
  expect(await publishSamples({ trainingJobName: JOB }, s3, STORAGE)).toEqual({ bucket: 'artifacts', prefix: TARGET, count: 0, omitted: 0, captionsWritten: 0, captionsKept: 0 });
  expect(s3Mock).not.toHaveReceivedCommand(GetObjectCommand);

  serve(gzipSync(tarArchive([file('logs/train.log')])));
  expect(await publishSamples({ trainingJobName: JOB }, s3, STORAGE)).toEqual({ bucket: 'artifacts', prefix: TARGET, count: 0, omitted: 0, captionsWritten: 0, captionsKept: 0 });
  expect(s3Mock).not.toHaveReceivedCommand(PutObjectCommand);
});

test('a listed key that only starts like the archive is not it (control for the exact match)', async () => {
  s3Mock.on(ListObjectsV2Command).resolves({ Contents: [{ Key: `${ARCHIVE}.bak` }] });
  expect(await publishSamples({ trainingJobName: JOB }, s3, STORAGE)).toMatchObject({ count: 0 });
  expect(s3Mock).not.toHaveReceivedCommand(GetObjectCommand);
});

test('samples.json with contact_sheet null (no sheet drawn), or not the container\'s: no sheet, no prompt, still written', async () => {
  serve(gzipSync(tarArchive([file('sample/samples.json', samplesJson(null)), file('sample/a.png')])));
  expect(await publishSamples({ trainingJobName: JOB }, s3, STORAGE)).toEqual({ bucket: 'artifacts', prefix: TARGET, count: 2, samplesJson: `${TARGET}samples.json`, omitted: 0, prompt: 'a green pokemon', captionsWritten: 0, captionsKept: 0 });
  serve(gzipSync(tarArchive([file('sample/samples.json', 'not json')])));
  const result = await publishSamples({ trainingJobName: JOB }, s3, STORAGE);
  expect(result).toMatchObject({ count: 1, samplesJson: `${TARGET}samples.json` });
  expect(result).not.toHaveProperty('prompt');
});

test('beyond the count bound, images are omitted but samples.json and the contact sheet (last in the archive) are kept', async () => {
  const images = Array.from({ length: MAX_SAMPLE_OBJECTS + 10 }, (_, i) => file(`sample/img_${String(i).padStart(4, '0')}.png`, 'x'));
  serve(gzipSync(tarArchive([...images, file('sample/samples.json', samplesJson()), file('sample/contact-sheet.png', 'sheet')])));
  const result = await publishSamples({ trainingJobName: JOB }, s3, STORAGE);
  expect(result).toMatchObject({ count: MAX_SAMPLE_OBJECTS, omitted: 12, samplesJson: `${TARGET}samples.json`, contactSheet: `${TARGET}contact-sheet.png` });
  expect(puts()).toHaveLength(MAX_SAMPLE_OBJECTS);
});

test('a file over the per-file bound is omitted; one at the bound is written (control)', async () => {
  serve(gzipSync(tarArchive([file('sample/big.png', Buffer.alloc(MAX_SAMPLE_FILE_BYTES + 1)), file('sample/fits.png', Buffer.alloc(MAX_SAMPLE_FILE_BYTES))])));
  expect(await publishSamples({ trainingJobName: JOB }, s3, STORAGE)).toMatchObject({ count: 1, omitted: 1 });
  expect(puts().map((p) => [p.Key, (p.Body as Buffer).length])).toEqual([[`${TARGET}fits.png`, MAX_SAMPLE_FILE_BYTES]]);
});

test('a corrupt or truncated archive is SamplesArchiveInvalid, naming it; an S3 error keeps its name for the retry', async () => {
  serve(Buffer.from('not gzip at all'));
  await expect(publishSamples({ trainingJobName: JOB }, s3, STORAGE)).rejects.toMatchObject({ name: 'SamplesArchiveInvalid', message: expect.stringContaining(`s3://artifacts/${ARCHIVE} is not a readable tar.gz`) });
  serve(gzipSync(tarArchive([file('sample/a.png')], { end: false })));
  await expect(publishSamples({ trainingJobName: JOB }, s3, STORAGE)).rejects.toMatchObject({ name: 'SamplesArchiveInvalid' });
  s3Mock.on(ListObjectsV2Command).rejects(Object.assign(new Error('Please reduce your request rate.'), { name: 'SlowDown' }));
  await expect(publishSamples({ trainingJobName: JOB }, s3, STORAGE)).rejects.toMatchObject({ name: 'SlowDown' });
});

test('an archive cut short inside a sample (its gzip intact) writes no zero-padded copy of it', async () => {
  const whole = tarArchive([file('sample/a.png', Buffer.alloc(2000, 7))]);
  serve(gzipSync(whole.subarray(0, 512 + 1000)));
  await expect(publishSamples({ trainingJobName: JOB }, s3, STORAGE)).rejects.toMatchObject({ name: 'SamplesArchiveInvalid', message: expect.stringContaining('sample/a.png') });
  expect(s3Mock).not.toHaveReceivedCommand(PutObjectCommand);
});

test('a failed PUT fails the function (the state retries it)', async () => {
  serve(gzipSync(tarArchive([file('sample/a.png'), file('sample/b.png')])));
  s3Mock.on(PutObjectCommand).rejects(Object.assign(new Error('Access Denied'), { name: 'AccessDenied' }));
  await expect(publishSamples({ trainingJobName: JOB }, s3, STORAGE)).rejects.toMatchObject({ name: 'AccessDenied' });
});

test('an event without a job name, or one that could leave the folder, is refused before any S3 call', async () => {
  await expect(publishSamples({}, s3, STORAGE)).rejects.toThrow('expected {trainingJobName}');
  await expect(publishSamples({ trainingJobName: '../models' }, s3, STORAGE)).rejects.toThrow('trainingJobName');
  expect(s3Mock).not.toHaveReceivedAnyCommand();
});

test('a dataset folder that is the bucket root or climbs out of it is refused before any S3 call', async () => {
  for (const prefix of ['', '/', 'datasets/../', '/datasets/x/', 'datasets/x', 'datasets//x/', './x/']) {
    await expect(publishSamples({ trainingJobName: JOB, datasetFolder: { bucket: 'datasets', prefix } }, s3, STORAGE)).rejects.toThrow('datasetFolder');
  }
  await expect(publishSamples({ trainingJobName: JOB, datasetFolder: { bucket: 'Not_A_Bucket', prefix: 'datasets/x/' } }, s3, STORAGE)).rejects.toThrow('datasetFolder');
  expect(s3Mock).not.toHaveReceivedAnyCommand();
});

test('a caption is put with If-None-Match and the pipeline key; a 412 counts as kept, another error fails the state', async () => {
  serve(gzipSync(tarArchive([file('captions/a.txt', 'a caption'), file('captions/b.txt', 'b caption')])));
  const folder = { bucket: 'datasets', prefix: 'datasets/pokemon/' };
  s3Mock.on(PutObjectCommand, { Key: 'datasets/pokemon/b.txt' }).rejects(Object.assign(new Error('At least one of the pre-conditions you specified did not hold'), { name: 'PreconditionFailed', $metadata: { httpStatusCode: 412 } }));
  expect(await publishSamples({ trainingJobName: JOB, datasetFolder: folder }, s3, STORAGE)).toMatchObject({ count: 0, captionsWritten: 1, captionsKept: 1 });
  expect(puts().find((input) => input.Key === 'datasets/pokemon/a.txt')).toMatchObject({ Bucket: 'datasets', IfNoneMatch: '*', ServerSideEncryption: 'aws:kms', SSEKMSKeyId: STORAGE.keyArn });
  s3Mock.on(PutObjectCommand, { Key: 'datasets/pokemon/b.txt' }).rejects(Object.assign(new Error('denied'), { name: 'AccessDenied', $metadata: { httpStatusCode: 403 } }));
  await expect(publishSamples({ trainingJobName: JOB, datasetFolder: folder }, s3, STORAGE)).rejects.toMatchObject({ name: 'AccessDenied' });
});

describe('captionPath', () => {
  const entry = (path: string, type: 'file' | 'directory' | 'symlink' = 'file', size = 10) => ({ path, type, size });
  test.each([
    ['captions/a.txt', 'a.txt'],
    ['./captions/sub/a b.caption', 'sub/a b.caption'],
    ['captions/2_sks/x.y.txt', '2_sks/x.y.txt'],
  ])('%s is written as %s', (path, written) => expect(captionPath(entry(path))).toBe(written));
  test.each(['captions/captions.json', 'captions/a.png', 'captions/.txt', 'captions/sub/.a.txt', 'captions/.hidden/a.txt', 'captions/../a.txt', 'captions/x/../../a.txt', 'captions//a.txt', '/captions/a.txt', 'captions/a\\b.txt', 'captions/a\u0001.txt', 'a.txt', 'sample/a.txt'])(
    '%s is not written',
    (path) => expect(captionPath(entry(path))).toBeUndefined(),
  );
  test('a link, a folder or a file larger than a caption is not written', () => {
    expect(captionPath(entry('captions/a.txt', 'symlink'))).toBeUndefined();
    expect(captionPath(entry('captions/a.txt', 'directory'))).toBeUndefined();
    expect(captionPath(entry('captions/a.txt', 'file', MAX_CAPTION_BYTES + 1))).toBeUndefined();
  });
});

describe('sampleName', () => {
  const entry = (path: string, type: 'file' | 'directory' | 'symlink' = 'file') => ({ path, type, size: 1 });
  test.each([
    ['sample/a.png', 'a.png'],
    ['./sample/a b+1.png', 'a b+1.png'],
    ['sample/samples.json', 'samples.json'],
  ])('%s is published as %s', (path, name) => expect(sampleName(entry(path))).toBe(name));
  test.each(['sample/', 'sample/x/y.png', 'sample/..', 'sample/../a.png', '../sample/a.png', '/sample/a.png', 'sample/.a', 'sample/a\\b.png', 'sample/a\u0001.png', 'a.png', 'samples/a.png'])(
    '%s is not a sample',
    (path) => expect(sampleName(entry(path))).toBeUndefined(),
  );
  test('a directory or a link is not a sample, even at a sample path', () => {
    expect(sampleName(entry('sample/a.png', 'symlink'))).toBeUndefined();
    expect(sampleName(entry('sample/a.png', 'directory'))).toBeUndefined();
  });
  test('content types', () => {
    expect([contentType('a.PNG'), contentType('samples.json'), contentType('x.jpeg'), contentType('noext')]).toEqual(['image/png', 'application/json', 'image/jpeg', 'application/octet-stream']);
  });
});
