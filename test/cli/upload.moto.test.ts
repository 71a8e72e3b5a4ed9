import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { mockClient } from 'aws-sdk-client-mock';
import { motoAvailable, type MotoServer, startMoto } from '../support/moto';
import { cli as runCli, type FakeIo, fakeIo } from './fake-io';

/** The SDK reads credentials from the process's env, not the CLI's: give them as client settings. */
const cli = (argv: string[], env: NodeJS.ProcessEnv, options: { io?: FakeIo; signal?: AbortSignal } = {}) =>
  runCli(argv, env, { ...options, clientOverrides: { credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' }, maxAttempts: 1 } });

/**
 * `upload` through the real AWS SDK (S3 client and lib-storage) against moto's S3: every file
 * arrives, the trigger is written last and only after every other upload ended, and a refused
 * folder, a failed file or Ctrl-C leave no trigger behind. Only the status function (Lambda, which
 * moto runs only in Docker) is mocked, for the follow.
 */

const BUCKET = 'lora-datasets';
const FIXTURES = path.resolve(__dirname, '..', 'fixtures', 'datasets');
const PNG = fs.readFileSync(path.join(FIXTURES, 'clean', 'a.png'));
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-upload-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

const describeWithMoto = motoAvailable() ? describe : describe.skip;

function folder(name: string, files: Record<string, string | Buffer>): string {
  const root = path.join(fs.mkdtempSync(path.join(scratch, 'f-')), name);
  for (const [file, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    fs.writeFileSync(path.join(root, file), content);
  }
  return root;
}

/** What a recording wrapper of S3Client.send saw: "start <key>" when a write began, "end <key>" when it completed. */
type Recorded = string[];

describeWithMoto('upload against moto S3', () => {
  let moto: MotoServer;
  let s3: S3Client;
  let env: NodeJS.ProcessEnv;
  let writes: Recorded;
  const lambda = mockClient(LambdaClient);
  const originalSend = S3Client.prototype.send;
  /** The unrecorded, real send, for the test's own setup and reads. */
  const real = <T = unknown>(command: unknown): Promise<T> => (originalSend as unknown as (c: unknown) => Promise<T>).call(s3, command);

  beforeAll(async () => {
    moto = await startMoto();
    s3 = new S3Client(moto.clientConfig);
    env = {
      LORA_PIPELINE_ENDPOINT_URL: moto.endpoint,
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      AWS_CONFIG_FILE: '/nonexistent',
      AWS_SHARED_CREDENTIALS_FILE: '/nonexistent',
      LORA_PIPELINE_DATASETS_BUCKET: BUCKET,
      LORA_PIPELINE_DATASET_PREFIX: 'datasets/',
      LORA_PIPELINE_TRIGGER_FILE_NAME: 'dataset.toml',
      LORA_PIPELINE_STATUS_FUNCTION: 'status-fn',
    };
  });
  afterAll(async () => {
    lambda.restore();
    s3?.destroy();
    await moto?.stop();
  });
  beforeEach(async () => {
    await moto.reset();
    await real(new CreateBucketCommand({ Bucket: BUCKET }));
    lambda.reset();
    writes = [];
    record();
  });
  afterEach(() => jest.restoreAllMocks());

  /** Wraps the real send: records writes, and lets a test fail or interrupt one (`hook` runs before it is sent). */
  function record(hook: (name: string, key: string) => void = () => undefined) {
    jest.spyOn(S3Client.prototype, 'send').mockImplementation(async function (this: S3Client, command: any, ...rest: any[]) {
      const name: string = command.constructor.name;
      const key: string | undefined = command.input?.Key;
      const begins = name === 'PutObjectCommand' || name === 'CreateMultipartUploadCommand';
      if (begins) writes.push(`start ${key}`);
      hook(name, key ?? '');
      const result = await (originalSend as any).call(this, command, ...rest);
      if (name === 'PutObjectCommand' || name === 'CompleteMultipartUploadCommand') writes.push(`end ${key}`);
      return result;
    } as never);
  }

  async function objects(): Promise<Map<string, Buffer>> {
    const listed = await real<{ Contents?: { Key: string }[] }>(new ListObjectsV2Command({ Bucket: BUCKET }));
    const result = new Map<string, Buffer>();
    for (const { Key } of listed.Contents ?? []) {
      const body = await real<{ Body: { transformToByteArray(): Promise<Uint8Array> } }>(new GetObjectCommand({ Bucket: BUCKET, Key }));
      result.set(Key, Buffer.from(await body.Body.transformToByteArray()));
    }
    return result;
  }

  /** The trigger's write began only after every other write had ended, and nothing was written after it. */
  function expectTriggerLast(trigger: string) {
    const started = writes.indexOf(`start ${trigger}`);
    expect(started).toBeGreaterThan(0);
    const others = writes.filter((w) => !w.endsWith(` ${trigger}`));
    for (const write of others) expect(writes.indexOf(write)).toBeLessThan(started);
    expect(writes.slice(started)).toEqual([`start ${trigger}`, `end ${trigger}`]);
  }

  test('uploads every file with its content, nested and empty ones too, a large one in parts, and the folder\'s dataset.toml last', async () => {
    const big = Buffer.alloc(6 * 1024 * 1024 + 123, 7);
    const toml = "[general]\ncaption_extension = '.txt'\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = '.'\n";
    const files = { 'a.png': PNG, 'a.txt': 'a photo', 'b.png': PNG, 'b.txt': 'b photo', 'notes/big.bin': big, 'notes/empty.md': '', 'dataset.toml': toml };
    const root = folder('pets', files);
    const { code, err } = await cli(['upload', root, '--no-follow'], env);
    expect([code, err]).toEqual([0, expect.stringContaining('Uploading: 100% (')]);
    const stored = await objects();
    expect([...stored.keys()].sort()).toEqual(Object.keys(files).map((f) => `datasets/pets/${f}`).sort());
    for (const [file, content] of Object.entries(files)) expect(stored.get(`datasets/pets/${file}`)!.equals(Buffer.from(content))).toBe(true);
    expectTriggerLast('datasets/pets/dataset.toml');
    expect(writes).toContain('start datasets/pets/notes/big.bin');
    expect(err).toContain(`Uploading 7 files (6.3 MB) to s3://${BUCKET}/datasets/pets/, dataset.toml last`);
    expect(err).toContain('Follow it with: lora-pipeline status pets --watch');
  });

  test('a folder without the trigger file gets an empty one, last; --name names the S3 folder; another trigger name is honoured', async () => {
    const root = folder('local-name', { 'a.png': PNG, 'a.txt': 'x' });
    const { code } = await cli(['upload', root, '--name', 'cats', '--no-follow'], { ...env, LORA_PIPELINE_TRIGGER_FILE_NAME: 'go.txt' });
    expect(code).toBe(0);
    const stored = await objects();
    expect([...stored.keys()].sort()).toEqual(['datasets/cats/a.png', 'datasets/cats/a.txt', 'datasets/cats/go.txt']);
    expect(stored.get('datasets/cats/go.txt')!.length).toBe(0);
    expectTriggerLast('datasets/cats/go.txt');
  });

  test('on a terminal the progress is one line redrawn in place, ending at 100% with a newline, never wider than the terminal', async () => {
    const root = folder('tty', { 'a.png': PNG, 'a.txt': 'x', 'big.bin': Buffer.alloc(11 * 1024 * 1024, 1) });
    const io = fakeIo({ isTty: true, columns: 60 });
    expect((await cli(['upload', root, '--no-follow'], env, { io })).code).toBe(0);
    const redraws = io.errWrites.filter((w) => w.startsWith('\r'));
    expect(redraws.length).toBeGreaterThanOrEqual(1);
    for (const redraw of redraws) expect(redraw.replace(/^\r/, '').split('\x1b[K')[0].length).toBeLessThanOrEqual(59);
    const last = redraws[redraws.length - 1];
    expect(last.endsWith('\x1b[K\n')).toBe(true);
    expect(last).toMatch(/^\rUploading 100% .*11\.5 MB \/ 11\.5 MB /);
    expect(redraws.slice(0, -1).every((w) => !w.endsWith('\n'))).toBe(true);
  });

  test('a folder validate refuses uploads nothing (exit 1); --force uploads it', async () => {
    const root = folder('refused', { 'a.png': PNG, 'b.png': PNG, 'b.txt': 'x' });
    const refused = await cli(['upload', root, '--no-follow'], env);
    expect(refused.code).toBe(1);
    expect(refused.err).toContain('REFUSED: 1 problem');
    expect(refused.err).toContain('Nothing was uploaded. Fix the folder, or pass --force to upload it anyway.');
    expect(writes).toEqual([]);
    expect((await objects()).size).toBe(0);
    const forced = await cli(['upload', root, '--no-follow', '--force'], env);
    expect(forced.code).toBe(0);
    expect((await objects()).size).toBe(4);
  });

  test("the checks assume the stack's training.captionMissing (its CaptionMissing output): true uploads a captionless folder", async () => {
    const root = folder('captioned', { 'a.png': PNG, 'b.png': PNG, 'b.txt': 'x' });
    const captioned = await cli(['upload', root, '--no-follow'], { ...env, LORA_PIPELINE_CAPTION_MISSING: 'true' });
    expect(captioned.code).toBe(0);
    expect((await objects()).size).toBe(4);
    const off = await cli(['upload', root, '--no-follow'], { ...env, LORA_PIPELINE_CAPTION_MISSING: 'false' });
    expect([off.code, off.err]).toEqual([1, expect.stringContaining('1 of 2 image(s) have no caption: a.png')]);
  });

  test("the checks assume the stack's own base model (its BaseModel output), not the model type's default", async () => {
    const root = folder('based', { 'a.png': PNG, 'a.txt': 'a caption' });
    const stackBase = await cli(['upload', root, '--no-follow'], { ...env, LORA_PIPELINE_MODEL_TYPE: 'sd15', LORA_PIPELINE_BASE_MODEL: 'acme/house-style' });
    expect(stackBase.code).toBe(0);
    expect(stackBase.err + stackBase.out).toContain('base acme/house-style');
    const defaulted = await cli(['upload', root, '--no-follow'], { ...env, LORA_PIPELINE_MODEL_TYPE: 'sd15' });
    expect(defaulted.err + defaulted.out).not.toContain('acme/house-style');
  });

  test('a file that fails to upload stops the upload: no trigger is written, exit 1 naming the file', async () => {
    const root = folder('broken', { 'a.png': PNG, 'a.txt': 'x', 'b.png': PNG, 'b.txt': 'y', 'c.png': PNG, 'c.txt': 'z', 'dataset.toml': '' });
    jest.restoreAllMocks();
    record((name, key) => {
      if (name === 'PutObjectCommand' && key.endsWith('/b.txt')) throw Object.assign(new Error('We encountered an internal error. Please try again.'), { name: 'InternalError', $metadata: {} });
    });
    const { code, err } = await cli(['upload', root, '--no-follow'], env);
    expect(code).toBe(1);
    expect(err).toContain('Upload failed at b.txt: InternalError: We encountered an internal error.');
    expect(err).toContain('the trigger file was not written, so no run started');
    expect(writes.some((w) => w.includes('dataset.toml'))).toBe(false);
    expect([...(await objects()).keys()]).not.toContain('datasets/broken/dataset.toml');
  });

  test('Ctrl-C during the upload aborts it without writing the trigger (exit 130)', async () => {
    const root = folder('stopped', { 'a.png': PNG, 'a.txt': 'x', 'b.png': PNG, 'b.txt': 'y', 'c.png': PNG, 'c.txt': 'z' });
    const interrupt = new AbortController();
    jest.restoreAllMocks();
    record((name) => {
      if (name === 'PutObjectCommand' && writes.filter((w) => w.startsWith('start')).length === 2) interrupt.abort();
    });
    const { code, err } = await cli(['upload', root, '--no-follow'], env, { signal: interrupt.signal });
    expect(code).toBe(130);
    expect(err).toContain('Interrupted: ');
    expect(err).toContain('the trigger file was not written, so no run started');
    expect(writes.some((w) => w.includes('dataset.toml'))).toBe(false);
    expect([...(await objects()).keys()]).not.toContain('datasets/stopped/dataset.toml');
  });

  test('objects already in the S3 folder that the local one lacks: refused, --sync deletes them, --keep-extra keeps them', async () => {
    await real(new PutObjectCommand({ Bucket: BUCKET, Key: 'datasets/dogs/old.png', Body: PNG }));
    const root = folder('dogs', { 'a.png': PNG, 'a.txt': 'x' });
    const refused = await cli(['upload', root, '--no-follow'], env);
    expect(refused.code).toBe(1);
    expect(refused.err).toContain(`s3://${BUCKET}/datasets/dogs/ already has 1 object(s) the folder does not have, which a run would train on too:\n  datasets/dogs/old.png`);
    expect(writes).toEqual([]);
    const kept = await cli(['upload', root, '--no-follow', '--keep-extra'], env);
    expect(kept.code).toBe(0);
    expect([...(await objects()).keys()].sort()).toEqual(['datasets/dogs/a.png', 'datasets/dogs/a.txt', 'datasets/dogs/dataset.toml', 'datasets/dogs/old.png']);
    writes.length = 0;
    const synced = await cli(['upload', root, '--no-follow', '--sync'], env);
    expect(synced.code).toBe(0);
    expect([...(await objects()).keys()].sort()).toEqual(['datasets/dogs/a.png', 'datasets/dogs/a.txt', 'datasets/dogs/dataset.toml']);
    expectTriggerLast('datasets/dogs/dataset.toml');
  });

  test('a dataset prefix or trigger name that no run would look at is refused before any upload (exit 3)', async () => {
    const root = folder('fish', { 'a.png': PNG, 'a.txt': 'x' });
    const prefix = await cli(['upload', root, '--no-follow', '--dataset-prefix', 'datasets'], env);
    expect([prefix.code, prefix.err]).toEqual([3, expect.stringContaining(`DatasetPrefix "datasets" must be empty or end with '/'`)]);
    const trigger = await cli(['upload', root, '--no-follow'], { ...env, LORA_PIPELINE_TRIGGER_FILE_NAME: 'a/b.toml' });
    expect([trigger.code, trigger.err]).toEqual([3, expect.stringContaining('TriggerFileName "a/b.toml" must be a file name')]);
    expect(writes).toEqual([]);
    // Negative control: the flag's good form is used.
    expect((await cli(['upload', root, '--no-follow', '--dataset-prefix', 'in/'], env)).code).toBe(0);
    expect([...(await objects()).keys()].sort()).toEqual(['in/fish/a.png', 'in/fish/a.txt', 'in/fish/dataset.toml']);
  });

  test('then follows the run the trigger started, through the status function, to its end: exit 0 in service, 1 failed', async () => {
    const root = folder('birds', { 'a.png': PNG, 'a.txt': 'x' });
    const run = (phase: string, status: string) => ({
      executionArn: 'arn:aws:states:us-east-1:123456789012:execution:Workflow:birds-1',
      executionName: 'birds-1',
      dataset: 'birds',
      phase,
      status,
      startedAt: new Date(Date.now() + 1000).toISOString(),
    });
    const answer = (body: unknown) => ({ StatusCode: 200, Payload: new TextEncoder().encode(JSON.stringify(body)) });
    lambda.on(InvokeCommand).callsFake((input: { Payload: Uint8Array }) => {
      const query = JSON.parse(Buffer.from(input.Payload).toString());
      return answer(query.dataset !== undefined ? { runs: [run('IN_SERVICE', 'SUCCEEDED')] } : run('IN_SERVICE', 'SUCCEEDED'));
    });
    const io = fakeIo();
    const done = await cli(['upload', root], env, { io });
    expect(done.code).toBe(0);
    const asked = lambda.commandCalls(InvokeCommand).map((c) => [c.args[0].input.FunctionName, JSON.parse(Buffer.from(c.args[0].input.Payload as Uint8Array).toString())]);
    expect(asked[0]).toEqual(['status-fn', { dataset: 'birds' }]);
    expect(done.err).toContain('Following ');

    lambda.reset();
    lambda.on(InvokeCommand).callsFake((input: { Payload: Uint8Array }) => {
      const query = JSON.parse(Buffer.from(input.Payload).toString());
      return answer(query.dataset !== undefined ? { runs: [run('FAILED', 'FAILED')] } : run('FAILED', 'FAILED'));
    });
    expect((await cli(['upload', root], env)).code).toBe(1);
  });
});
