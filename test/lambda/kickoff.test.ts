import * as path from 'node:path';
import { ExecutionAlreadyExists, ExecutionLimitExceeded, SFNClient, StartExecutionCommand } from '@aws-sdk/client-sfn';
import type { S3Event, S3EventRecord } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import 'aws-sdk-client-mock-jest';
import { decide, decodeS3Key, kickoff, settingsFromEnvironment, startRequest, type KickoffSettings, type Start } from '../../lambda/kickoff/kickoff';
import { requireWithEnv } from '../support/isolated';

const HANDLER = path.resolve(__dirname, '../../lambda/kickoff/index');
const SETTINGS: KickoffSettings = {
  stateMachineArn: 'arn:aws:states:us-east-1:123456789012:stateMachine:LoraPipeline',
  datasetsBucket: 'lora-datasets',
  datasetPrefix: 'datasets/',
  triggerFileName: 'dataset.toml',
};
const ENV = {
  STATE_MACHINE_ARN: SETTINGS.stateMachineArn,
  DATASETS_BUCKET: SETTINGS.datasetsBucket,
  DATASET_PREFIX: SETTINGS.datasetPrefix,
  TRIGGER_FILE_NAME: SETTINGS.triggerFileName,
};
const EXECUTION_NAME = /^[a-z0-9](?:-?[a-z0-9])*$/;

interface RecordOptions {
  readonly eventName?: string;
  readonly bucket?: string;
  readonly sequencer?: string;
  readonly versionId?: string;
  readonly eTag?: string;
  readonly eventTime?: string;
}

/** An S3 notification record as S3 sends it; `key` is given encoded, as it arrives. */
function record(key: string, options: RecordOptions = {}): S3EventRecord {
  const { eventName = 'ObjectCreated:Put', bucket = SETTINGS.datasetsBucket, sequencer = '0066D2B5A3F1C0E2A1', versionId, eTag = 'd41d8cd98f00b204e9800998ecf8427e' } = options;
  return {
    eventVersion: '2.1',
    eventSource: 'aws:s3',
    awsRegion: 'us-east-1',
    eventTime: options.eventTime ?? '2025-06-01T12:00:00.000Z',
    eventName,
    userIdentity: { principalId: 'AWS:AIDAEXAMPLE' },
    requestParameters: { sourceIPAddress: '192.0.2.1' },
    responseElements: { 'x-amz-request-id': 'REQ', 'x-amz-id-2': 'ID2' },
    s3: {
      s3SchemaVersion: '1.0',
      configurationId: 'kickoff',
      bucket: { name: bucket, ownerIdentity: { principalId: 'OWNER' }, arn: `arn:aws:s3:::${bucket}` },
      object: { key, size: 12, eTag, ...(versionId ? { versionId } : {}), sequencer },
    },
  };
}

function started(r: S3EventRecord): Start {
  const decision = decide(r, SETTINGS);
  if (decision.action !== 'start') throw new Error(`expected a start, got: ${decision.reason}`);
  return decision;
}

function folderOf(start: Start): string {
  return start.input.dataset.slice(`s3://${SETTINGS.datasetsBucket}/${SETTINGS.datasetPrefix}`.length, -1);
}

let consoleSpies: jest.SpyInstance[];
beforeEach(() => {
  consoleSpies = (['log', 'warn', 'error'] as const).map((level) => jest.spyOn(console, level).mockImplementation(() => undefined));
});
afterEach(() => consoleSpies.forEach((spy) => spy.mockRestore()));

/** The JSON log lines written at `level` ('log' for INFO). */
function logged(level: 'log' | 'warn' | 'error'): Array<Record<string, unknown>> {
  return (console[level] as jest.Mock).mock.calls.map(([line]) => JSON.parse(line as string) as Record<string, unknown>);
}

describe('decide: an upload of a trigger file', () => {
  test('starts a run on its folder, with the upload in the input', () => {
    const start = started(record('datasets/pokemon/dataset.toml', { versionId: 'v1' }));
    expect(start.name).toMatch(/^pokemon-[0-9a-f]{16}$/);
    expect(start.input).toEqual({
      dataset: 's3://lora-datasets/datasets/pokemon/',
      trigger: {
        bucket: 'lora-datasets',
        key: 'datasets/pokemon/dataset.toml',
        versionId: 'v1',
        sequencer: '0066D2B5A3F1C0E2A1',
        eventTime: '2025-06-01T12:00:00.000Z',
      },
    });
    expect(startRequest(start, SETTINGS)).toEqual({ stateMachineArn: SETTINGS.stateMachineArn, name: start.name, input: JSON.stringify(start.input) });
  });

  test('an unversioned upload has no versionId in its trigger', () => {
    expect(started(record('datasets/pokemon/dataset.toml')).input.trigger).not.toHaveProperty('versionId');
  });
});

describe('decide: key decoding', () => {
  test('"+" is a space, as S3 form-encodes keys', () => {
    const start = started(record('datasets/my+data/dataset.toml'));
    expect(start.input.dataset).toBe('s3://lora-datasets/datasets/my data/');
    expect(start.input.trigger?.key).toBe('datasets/my data/dataset.toml');
    expect(start.name).toMatch(/^my-data-[0-9a-f]{16}$/);
    // Control: plain URI decoding would look for a folder that does not exist.
    expect(decodeURIComponent('my+data')).toBe('my+data');
  });

  test('"%2B" is a literal "+", a different folder from the one "+" stands for', () => {
    const plus = started(record('datasets/c%2B%2B/dataset.toml'));
    const spaces = started(record('datasets/c++/dataset.toml'));
    expect(folderOf(plus)).toBe('c++');
    expect(folderOf(spaces)).toBe('c  ');
    expect(plus.name).not.toBe(spaces.name);
  });

  test('UTF-8 escapes decode; NFC and NFD keys stay the distinct objects they are in S3', () => {
    const nfc = started(record('datasets/pok%C3%A9mon/dataset.toml'));
    const nfd = started(record('datasets/poke%CC%81mon/dataset.toml'));
    expect(folderOf(nfc)).toBe('pok\u00e9mon');
    expect(folderOf(nfd)).toBe('poke\u0301mon');
    expect(nfc.name).toMatch(/^pokemon-[0-9a-f]{16}$/);
    expect(nfd.name).toMatch(/^pokemon-[0-9a-f]{16}$/);
    expect(nfc.name).not.toBe(nfd.name);
  });

  test('a Japanese folder name gets a hashed execution name within the limits', () => {
    const pokemon = started(record(`datasets/${encodeURIComponent('ポケモン')}/dataset.toml`));
    const pikachu = started(record(`datasets/${encodeURIComponent('ピカチュウ')}/dataset.toml`));
    expect(pokemon.input.dataset).toBe('s3://lora-datasets/datasets/ポケモン/');
    for (const { name } of [pokemon, pikachu]) {
      expect(name).toMatch(/^dataset-[0-9a-f]{16}$/);
      expect(name.length).toBeLessThanOrEqual(80);
    }
    expect(pokemon.name).not.toBe(pikachu.name);
  });

  test('a malformed escape ignores that record only, with a warning, and does not throw', async () => {
    expect(decodeS3Key('datasets/%E0%A4%A/dataset.toml')).toBeUndefined();
    expect(() => decodeURIComponent('%E0%A4%A')).toThrow(URIError);
    const summary = await kickoff(
      { Records: [record('datasets/%E0%A4%A/dataset.toml'), record('datasets/pokemon/dataset.toml')] },
      SETTINGS,
      () => Promise.resolve(),
    );
    expect(summary.ignored).toEqual([{ key: 'datasets/%E0%A4%A/dataset.toml', reason: 'the key is not valid URL encoding' }]);
    expect(summary.started).toHaveLength(1);
    expect(logged('warn')).toEqual([expect.objectContaining({ level: 'WARN', message: 'Upload ignored', key: 'datasets/%E0%A4%A/dataset.toml' })]);
  });
});

describe('decide: one run per upload', () => {
  test('the same upload delivered twice gets the same name and the same request', () => {
    const first = started(record('datasets/pokemon/dataset.toml', { versionId: 'v1' }));
    const again = started(record('datasets/pokemon/dataset.toml', { versionId: 'v1' }));
    // Step Functions counts a StartExecution as a repeat only when name and input are both equal.
    expect(startRequest(again, SETTINGS)).toEqual(startRequest(first, SETTINGS));
  });

  test('a re-upload (another sequencer) gets another name', () => {
    const first = started(record('datasets/pokemon/dataset.toml', { sequencer: '0066D2B5A3F1C0E2A1' }));
    const reupload = started(record('datasets/pokemon/dataset.toml', { sequencer: '0066D2B5C9D3E4F5B2' }));
    expect(reupload.name).not.toBe(first.name);
  });

  test('without a sequencer the version id tells uploads apart, and without both the ETag and time do', () => {
    const name = (options: RecordOptions) => started(record('datasets/pokemon/dataset.toml', { sequencer: '', ...options })).name;
    expect(name({ versionId: 'v1' })).toBe(name({ versionId: 'v1' }));
    expect(name({ versionId: 'v1' })).not.toBe(name({ versionId: 'v2' }));
    expect(name({})).toBe(name({}));
    expect(name({})).not.toBe(name({ eventTime: '2025-06-01T12:05:00.000Z' }));
    expect(name({})).not.toBe(name({ eTag: '0cc175b9c0f1b6a831c399e269772661' }));
  });

  test('the same upload id in two folders gives two names', () => {
    expect(started(record('datasets/a/dataset.toml')).name).not.toBe(started(record('datasets/b/dataset.toml')).name);
  });
});

describe('decide: long folder names', () => {
  const shared = 'a-very-long-dataset-name-'.repeat(4); // 100 characters
  const long1 = started(record(`datasets/${shared}first-variant-of-it/dataset.toml`));
  const long2 = started(record(`datasets/${shared}second-variant-of-it/dataset.toml`));

  test('fit in 80 characters of [a-z0-9-], ending in a hash', () => {
    for (const { name } of [long1, long2]) {
      expect(name.length).toBeLessThanOrEqual(80);
      expect(name).toMatch(EXECUTION_NAME);
      expect(name).toMatch(/-[0-9a-f]{16}$/);
    }
  });

  test('that share their first 100 characters stay distinct', () => {
    // Control: what is left of each folder's own text in its name is the same for both.
    expect(long1.name.slice(0, 50)).toBe(long2.name.slice(0, 50));
    expect(long1.name).not.toBe(long2.name);
  });
});

describe('decide: what is ignored', () => {
  const good = 'datasets/pokemon/dataset.toml';
  test('control: the unchanged record starts a run', () => {
    expect(decide(record(good), SETTINGS).action).toBe('start');
  });

  test.each([
    ['a key outside the prefix', record('other/pokemon/dataset.toml'), 'not under datasets/', 'INFO'],
    ['a prefix that only starts the same', record('datasets-old/pokemon/dataset.toml'), 'not under datasets/', 'INFO'],
    ['a trigger directly under the prefix', record('datasets/dataset.toml'), 'not in a dataset folder under datasets/', 'WARN'],
    ['a nested folder', record('datasets/a/b/dataset.toml'), 'nested more than one folder below the dataset prefix', 'WARN'],
    ['another file', record('datasets/pokemon/0001.png'), 'not a dataset.toml', 'INFO'],
    ['the trigger name in another case', record('datasets/pokemon/DATASET.TOML'), 'not a dataset.toml', 'INFO'],
    ['an empty folder name', record('datasets//dataset.toml'), 'not a usable dataset folder name: ""', 'WARN'],
    ['the folder "."', record('datasets/./dataset.toml'), 'not a usable dataset folder name: "."', 'WARN'],
    ['the folder ".."', record('datasets/../dataset.toml'), 'not a usable dataset folder name: ".."', 'WARN'],
    ['another bucket', record(good, { bucket: 'someone-elses-bucket' }), 'not the datasets bucket (someone-elses-bucket)', 'WARN'],
    ['a deletion', record(good, { eventName: 'ObjectRemoved:Delete' }), 'not an object creation (ObjectRemoved:Delete)', 'INFO'],
    ['a restore', record(good, { eventName: 'ObjectRestore:Completed' }), 'not an object creation (ObjectRestore:Completed)', 'INFO'],
  ])('%s', (_, r, reason, level) => {
    expect(decide(r, SETTINGS)).toEqual({ action: 'ignore', key: decodeS3Key(r.s3.object.key), reason, level });
  });

  test.each(['ObjectCreated:Put', 'ObjectCreated:Post', 'ObjectCreated:Copy', 'ObjectCreated:CompleteMultipartUpload'])(
    '%s starts a run',
    (eventName) => {
      expect(decide(record(good, { eventName }), SETTINGS).action).toBe('start');
    },
  );

  test('a nested trigger is logged as a warning and starts nothing', async () => {
    const startExecution = jest.fn(() => Promise.resolve());
    const summary = await kickoff({ Records: [record('datasets/a/b/dataset.toml')] }, SETTINGS, startExecution);
    expect(startExecution).not.toHaveBeenCalled();
    expect(summary).toEqual({ started: [], duplicates: [], ignored: [{ key: 'datasets/a/b/dataset.toml', reason: 'nested more than one folder below the dataset prefix' }] });
    expect(logged('warn')).toEqual([expect.objectContaining({ message: 'Upload ignored', key: 'datasets/a/b/dataset.toml' })]);
  });
});

describe('settings from the environment', () => {
  test('are read from the four variables', () => {
    expect(settingsFromEnvironment(ENV)).toEqual(SETTINGS);
  });

  test('a missing or empty variable is named', () => {
    expect(() => settingsFromEnvironment({ ...ENV, DATASETS_BUCKET: undefined, TRIGGER_FILE_NAME: '' })).toThrow(
      'kickoff: missing environment variable(s) DATASETS_BUCKET, TRIGGER_FILE_NAME',
    );
  });

  test('a prefix without its trailing "/" is refused', () => {
    expect(() => settingsFromEnvironment({ ...ENV, DATASET_PREFIX: 'datasets' })).toThrow(/DATASET_PREFIX must end with '\/'/);
  });
});

describe('handler', () => {
  const sfn = mockClient(SFNClient);
  let handler: (event: S3Event) => Promise<unknown>;
  const previous = Object.fromEntries(Object.keys(ENV).map((key) => [key, process.env[key]]));

  beforeAll(() => {
    Object.assign(process.env, ENV);
    // Loaded in this test's module registry, so that its SFNClient is the one mocked above.
    ({ handler } = jest.requireActual<typeof import('../../lambda/kickoff/index')>(HANDLER));
  });
  afterAll(() => {
    for (const [key, value] of Object.entries(previous)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
    sfn.restore();
  });
  beforeEach(() => {
    sfn.reset();
    sfn.on(StartExecutionCommand).callsFake((input: { name: string }) => ({
      executionArn: `arn:aws:states:us-east-1:123456789012:execution:LoraPipeline:${input.name}`,
      startDate: new Date(),
    }));
  });

  const alreadyExists = () => new ExecutionAlreadyExists({ message: 'Execution Already Exists', $metadata: {} });

  test('starts one execution per trigger upload', async () => {
    const r = record('datasets/pokemon/dataset.toml');
    const { name, input } = started(r);
    await expect(handler({ Records: [r] })).resolves.toEqual({ started: [name], duplicates: [], ignored: [] });
    expect(sfn).toHaveReceivedCommandTimes(StartExecutionCommand, 1);
    expect(sfn).toHaveReceivedCommandWith(StartExecutionCommand, { stateMachineArn: SETTINGS.stateMachineArn, name, input: JSON.stringify(input) });
  });

  test('a repeated delivery Step Functions refuses as ExecutionAlreadyExists is a success', async () => {
    const r = record('datasets/pokemon/dataset.toml');
    await handler({ Records: [r] });
    sfn.on(StartExecutionCommand).rejects(alreadyExists());
    await expect(handler({ Records: [r] })).resolves.toEqual({ started: [], duplicates: [started(r).name], ignored: [] });
    expect(sfn).toHaveReceivedCommandTimes(StartExecutionCommand, 2);
    expect(sfn.commandCalls(StartExecutionCommand).map((call) => call.args[0].input.name)).toEqual([started(r).name, started(r).name]);
  });

  test('a repeated delivery while the first run is still open: Step Functions returns that run, counted as a duplicate', async () => {
    const r = record('datasets/pokemon/dataset.toml');
    const firstStart = new Date(Date.now() - 5 * 60_000);
    sfn.on(StartExecutionCommand).resolves({ executionArn: 'arn:aws:states:us-east-1:123456789012:execution:LoraPipeline:x', startDate: firstStart });
    await expect(handler({ Records: [r] })).resolves.toEqual({ started: [], duplicates: [started(r).name], ignored: [] });
    // Control: a start date of now is a run this delivery started.
    sfn.on(StartExecutionCommand).resolves({ executionArn: 'arn:aws:states:us-east-1:123456789012:execution:LoraPipeline:x', startDate: new Date() });
    await expect(handler({ Records: [r] })).resolves.toEqual({ started: [started(r).name], duplicates: [], ignored: [] });
  });

  test('ignored records start nothing', async () => {
    await expect(handler({ Records: [record('datasets/pokemon/0001.png')] })).resolves.toEqual({
      started: [],
      duplicates: [],
      ignored: [{ key: 'datasets/pokemon/0001.png', reason: 'not a dataset.toml' }],
    });
    expect(sfn).toHaveReceivedCommandTimes(StartExecutionCommand, 0);
  });

  test('a batch with one failing start still attempts the others, then throws naming the failed one', async () => {
    const records = ['alpha', 'beta', 'gamma'].map((folder) => record(`datasets/${folder}/dataset.toml`));
    const [alpha, beta, gamma] = records.map((r) => started(r).name);
    sfn.on(StartExecutionCommand, { name: beta }).rejects(new ExecutionLimitExceeded({ message: 'Too many executions', $metadata: {} }));

    const run = handler({ Records: records });
    await expect(run).rejects.toThrow(`Could not start 1 of 3 run(s): ${beta} (datasets/beta/dataset.toml): ExecutionLimitExceeded: Too many executions`);
    await expect(run).rejects.not.toThrow(new RegExp(`${alpha}|${gamma}`));
    expect(sfn).toHaveReceivedCommandTimes(StartExecutionCommand, 3);
    for (const name of [alpha, gamma]) expect(sfn).toHaveReceivedCommandWith(StartExecutionCommand, { name });
    expect(logged('error')).toEqual([expect.objectContaining({ level: 'ERROR', execution: beta })]);
  });

  test('after that failure, the retried event starts the failed run and counts the others as duplicates', async () => {
    const records = ['alpha', 'beta', 'gamma'].map((folder) => record(`datasets/${folder}/dataset.toml`));
    const [alpha, beta, gamma] = records.map((r) => started(r).name);
    sfn.on(StartExecutionCommand, { name: alpha }).rejects(alreadyExists()).on(StartExecutionCommand, { name: gamma }).rejects(alreadyExists());
    await expect(handler({ Records: records })).resolves.toEqual({ started: [beta], duplicates: [alpha, gamma], ignored: [] });
  });

  test('a missing environment variable fails at load', () => {
    expect(() => requireWithEnv(HANDLER, { ...ENV, STATE_MACHINE_ARN: undefined })).toThrow(
      'kickoff: missing environment variable(s) STATE_MACHINE_ARN',
    );
    // Control: the same load with every variable set succeeds.
    expect(requireWithEnv<{ handler: unknown }>(HANDLER, ENV).handler).toBeInstanceOf(Function);
  });
});
