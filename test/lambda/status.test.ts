import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { DescribeEndpointCommand, DescribeTrainingJobCommand, SageMakerClient } from '@aws-sdk/client-sagemaker';
import { DescribeExecutionCommand, type HistoryEvent, GetExecutionHistoryCommand, ListExecutionsCommand, SFNClient } from '@aws-sdk/client-sfn';
import { DynamoDBDocumentClient, GetCommand } from '@aws-sdk/lib-dynamodb';
import { mockClient } from 'aws-sdk-client-mock';
import 'aws-sdk-client-mock-jest';
import { RegistryTable } from '../../lambda/registry/table';
import { type Phase, STATES } from '../../lambda/shared/contract';
import { HISTORY_PAGE_SIZE } from '../../lambda/status/history';
import { InvalidRequest } from '../../lambda/status/request';
import { type RunList, type RunStatus, status } from '../../lambda/status/status';
import { preparedRunFixture, sharedRunFixture, trainingJobFixture } from '../support/runs';

const stateMachineArn = 'arn:aws:states:eu-west-1:123456789012:stateMachine:LoraPipelineWorkflow';
const executionArn = (name: string) => `arn:aws:states:eu-west-1:123456789012:execution:LoraPipelineWorkflow:${name}`;
const run = preparedRunFixture();
const unsettled = { settled: false, waitSeconds: 60, reason: 'datasets/pokemon/0001.png changed 12 s ago' };

const sfnMock = mockClient(SFNClient);
const sageMakerMock = mockClient(SageMakerClient);
const registryMock = mockClient(DynamoDBDocumentClient);
const REGISTRY_TABLE = 'LoraRegistryTable';
const context = {
  stateMachineArn,
  sfn: new SFNClient({}),
  sagemaker: new SageMakerClient({}),
  registry: new RegistryTable(DynamoDBDocumentClient.from(new DynamoDBClient({})), REGISTRY_TABLE),
};

/**
 * A history as Step Functions writes it: each state's Entered and Exited events (Task states with
 * their scheduled/succeeded events between), the last state only entered while it runs.
 */
function history(states: string[], options: { prepareAnswers?: unknown[]; running?: boolean; outputs?: Record<string, unknown> } = {}): HistoryEvent[] {
  const answers = [...(options.prepareAnswers ?? [unsettled, run])];
  const events: HistoryEvent[] = [{ id: 1, type: 'ExecutionStarted', timestamp: new Date('2025-01-01T11:55:00Z') }];
  const add = (event: Omit<HistoryEvent, 'id' | 'timestamp'>) => events.push({ ...event, id: events.length + 1, timestamp: new Date('2025-01-01T11:55:00Z') });
  states.forEach((name, index) => {
    const kind = name.endsWith('?') ? 'Choice' : name.startsWith('Wait') ? 'Wait' : name === STATES.readInput ? 'Pass' : 'Task';
    add({ type: `${kind}StateEntered`, stateEnteredEventDetails: { name, input: '{}' } });
    if (index === states.length - 1 && options.running !== false) return;
    if (kind === 'Task') add({ type: 'TaskSucceeded', taskSucceededEventDetails: { resourceType: 'lambda', resource: 'invoke', output: '{}' } });
    const output = name === STATES.prepare ? { request: { dataset: 'pokemon' }, run: answers.shift() } : (options.outputs?.[name] ?? {});
    add({ type: `${kind}StateExited`, stateExitedEventDetails: { name, output: JSON.stringify(output) } });
  });
  return events;
}

const SETTLE = [STATES.readInput, STATES.prepare, STATES.settled, STATES.waitForUpload, STATES.prepare, STATES.settled];
const DEPLOY = [STATES.createModel, STATES.createEndpointConfig, STATES.findEndpoint, STATES.endpointFound, STATES.createEndpoint];
const POLL = [STATES.waitForEndpoint, STATES.describeEndpoint, STATES.endpointReady, STATES.countPoll];
const SHARED = [STATES.servingMode, STATES.registerLora, STATES.tryLora, STATES.makeLoraCurrent];

/** Answers GetExecutionHistory with `events`, newest first when asked, a page at a time. */
function serveHistory(events: HistoryEvent[]): void {
  sfnMock.on(GetExecutionHistoryCommand).callsFake((input: { reverseOrder?: boolean; maxResults?: number; nextToken?: string }) => {
    const ordered = input.reverseOrder ? [...events].reverse() : events;
    const start = Number(input.nextToken ?? 0);
    const end = start + (input.maxResults ?? 100);
    return { events: ordered.slice(start, end), nextToken: end < ordered.length ? String(end) : undefined };
  });
}

function serveExecution(name: string, statusValue: string, extra: Record<string, unknown> = {}): void {
  sfnMock.on(DescribeExecutionCommand, { executionArn: executionArn(name) }).resolves({
    executionArn: executionArn(name),
    stateMachineArn,
    name,
    status: statusValue as 'RUNNING',
    startDate: new Date('2025-01-01T11:55:00Z'),
    input: JSON.stringify({ dataset: 'pokemon' }),
    ...extra,
  });
}

function sdkError(name: string, message: string): Error {
  return Object.assign(new Error(message), { name, $metadata: {} });
}

function serveTrainingJob(overrides: Record<string, unknown> = {}): void {
  const job = trainingJobFixture({ TrainingJobStatus: 'InProgress', SecondaryStatus: 'Training', BillableTimeInSeconds: undefined, TrainingTimeInSeconds: undefined, ModelArtifacts: undefined, TrainingEndTime: undefined, ...overrides });
  sageMakerMock.on(DescribeTrainingJobCommand).resolves({
    ...job,
    TrainingStartTime: new Date('2025-01-01T12:03:20Z'),
    SecondaryStatusTransitions: [
      { Status: 'Starting', StartTime: new Date('2025-01-01T12:01:40Z'), EndTime: new Date('2025-01-01T12:03:20Z'), StatusMessage: 'Preparing the instances for training' },
      { Status: 'Training', StartTime: new Date('2025-01-01T12:03:20Z'), StatusMessage: 'Training image download completed. Training in progress.' },
    ],
  } as never);
}

beforeEach(() => {
  sfnMock.reset();
  sageMakerMock.reset();
  registryMock.reset();
  // Any item not served by a test is missing.
  registryMock.on(GetCommand).resolves({});
  sageMakerMock.on(DescribeEndpointCommand).rejects(sdkError('ValidationException', 'Could not find endpoint "lora-pokemon".'));
  sageMakerMock.on(DescribeTrainingJobCommand).rejects(sdkError('ValidationException', 'Requested resource not found.'));
});

async function statusOf(name: string): Promise<RunStatus> {
  return (await status({ executionArn: executionArn(name) }, context)) as RunStatus;
}

describe('the phase of a running execution, from the state it is in', () => {
  // Written out rather than read from PHASE_OF_STATE, so a wrong entry there fails here.
  const cases: Array<[string, string[], Phase]> = [
    ['reading its input', [STATES.readInput], 'VALIDATING'],
    ['in Prepare the first time', [STATES.readInput, STATES.prepare], 'VALIDATING'],
    ['deciding whether it settled', [STATES.readInput, STATES.prepare, STATES.settled], 'VALIDATING'],
    ['waiting for the upload', [STATES.readInput, STATES.prepare, STATES.settled, STATES.waitForUpload], 'WAITING_FOR_UPLOAD'],
    ['training', [...SETTLE, STATES.train], 'TRAINING'],
    ['publishing the samples', [...SETTLE, STATES.train, STATES.publishSamples], 'TRAINING'],
    ['smoke-testing the endpoint', [...SETTLE, STATES.train, ...DEPLOY, ...POLL, STATES.smokeTest], 'DEPLOYING'],
    ['a smoke test that failed', [...SETTLE, STATES.train, ...DEPLOY, ...POLL, STATES.smokeTest, STATES.smokeTestFailed], 'FAILED'],
    ...DEPLOY.map((state, index): [string, string[], Phase] => [`in ${state}`, [...SETTLE, STATES.train, ...DEPLOY.slice(0, index + 1)], 'DEPLOYING']),
    ['updating an existing endpoint', [...SETTLE, STATES.train, ...DEPLOY.slice(0, 4), STATES.updateEndpoint], 'DEPLOYING'],
    ...POLL.map((state, index): [string, string[], Phase] => [`polling, in ${state}`, [...SETTLE, STATES.train, ...DEPLOY, ...POLL, ...POLL.slice(0, index + 1)], 'DEPLOYING']),
    ['reporting success', [...SETTLE, STATES.train, ...DEPLOY, ...POLL, STATES.reportSuccess], 'DEPLOYING'],
    ['notifying success', [...SETTLE, STATES.train, ...DEPLOY, ...POLL, STATES.reportSuccess, STATES.notifySuccess], 'DEPLOYING'],
    ['reporting a failure', [...SETTLE, STATES.train, STATES.reportFailure], 'FAILED'],
    ['cleaning up', [...SETTLE, STATES.train, ...DEPLOY, ...POLL, STATES.reportFailure, STATES.cleanUp], 'FAILED'],
    ['notifying a failure', [...SETTLE, STATES.train, STATES.reportFailure, STATES.notifyFailure], 'FAILED'],
    ['in a state this function does not know', [...SETTLE, 'A state added later'], 'VALIDATING'],
    ['choosing how to serve', [...SETTLE, STATES.train, STATES.servingMode], 'DEPLOYING'],
    ['registering the LoRA', [...SETTLE, STATES.train, ...SHARED.slice(0, 2)], 'DEPLOYING'],
    ['trying the LoRA on the shared endpoint', [...SETTLE, STATES.train, ...SHARED.slice(0, 3)], 'DEPLOYING'],
    ['making the LoRA current', [...SETTLE, STATES.train, ...SHARED], 'DEPLOYING'],
    ['a registration that failed', [...SETTLE, STATES.train, ...SHARED.slice(0, 2), STATES.registrationFailed], 'FAILED'],
    ['a LoRA check that failed', [...SETTLE, STATES.train, ...SHARED.slice(0, 3), STATES.loraCheckFailed], 'FAILED'],
    ['a promotion that failed', [...SETTLE, STATES.train, ...SHARED, STATES.promotionFailed], 'FAILED'],
    ['marking the version failed', [...SETTLE, STATES.train, ...SHARED.slice(0, 3), STATES.loraCheckFailed, STATES.reportFailure, STATES.cleanUp, STATES.rejectLora], 'FAILED'],
    ['rolling an updated endpoint back after a failed smoke test', [...SETTLE, STATES.train, ...DEPLOY, ...POLL, STATES.smokeTest, STATES.smokeTestFailed, STATES.reportFailure, STATES.cleanUp, STATES.rollBackEndpoint], 'FAILED'],
    ['a roll-back that failed', [...SETTLE, STATES.train, ...DEPLOY, ...POLL, STATES.smokeTest, STATES.smokeTestFailed, STATES.reportFailure, STATES.cleanUp, STATES.rollBackEndpoint, STATES.rollBackFailed], 'FAILED'],
  ];

  test.each(cases)('%s', async (_, states, phase) => {
    serveExecution('run-1', 'RUNNING');
    serveHistory(history(states));
    const result = await statusOf('run-1');
    expect(result.phase).toBe(phase);
    expect(result.status).toBe('RUNNING');
    expect(result.currentState).toBe(states[states.length - 1]);
  });
});

describe("Prepare's answer", () => {
  test('while the upload settles there is no run yet, the reason is given, and SageMaker is not asked', async () => {
    serveExecution('run-1', 'RUNNING');
    serveHistory(history([STATES.readInput, STATES.prepare, STATES.settled, STATES.waitForUpload]));
    const result = await statusOf('run-1');
    expect(result).toMatchObject({ phase: 'WAITING_FOR_UPLOAD', dataset: 'pokemon', waitingFor: unsettled.reason });
    expect(result.run).toBeUndefined();
    expect(result.training).toBeUndefined();
    expect(sageMakerMock).not.toHaveReceivedAnyCommand();
  });

  test('once settled, the run is the settled answer, and its job and endpoint are described', async () => {
    serveExecution('run-1', 'RUNNING');
    serveHistory(history([...SETTLE, STATES.train]));
    const result = await statusOf('run-1');
    expect(result.run).toBe(run.run);
    expect(result.waitingFor).toBeUndefined();
    expect(sageMakerMock).toHaveReceivedCommandWith(DescribeTrainingJobCommand, { TrainingJobName: run.training.jobName });
    expect(sageMakerMock).toHaveReceivedCommandWith(DescribeEndpointCommand, { EndpointName: 'lora-pokemon' });
  });

  test('a Prepare that failed after waiting: its stale "waiting" answer is not shown as where the run is', async () => {
    serveExecution('run-1', 'RUNNING');
    const events = history([STATES.readInput, STATES.prepare, STATES.settled, STATES.waitForUpload, STATES.prepare, STATES.preparationFailed, STATES.reportFailure]);
    // The second Prepare failed: it exits with its caught error beside the first pass's answer.
    const exits = events.filter((e) => e.stateExitedEventDetails?.name === STATES.prepare);
    exits[1].stateExitedEventDetails!.output = JSON.stringify({ request: { dataset: 'pokemon' }, run: unsettled, error: { Error: 'InvalidDataset', Cause: '{}' } });
    serveHistory(events);
    const result = await statusOf('run-1');
    expect(result.phase).toBe('FAILED');
    expect(result.waitingFor).toBeUndefined();
    // Control: without the error, the same answer is where the run is.
    exits[1].stateExitedEventDetails!.output = JSON.stringify({ request: { dataset: 'pokemon' }, run: unsettled });
    serveHistory(events);
    expect((await statusOf('run-1')).waitingFor).toBe(unsettled.reason);
  });

  test('the files the training skips, their count and the notes, from the settled answer; nothing when there are none (control)', async () => {
    const skipped = ['a.Png: mixed-case extension, kohya ignores it; rename it to .png', 'notes.docx: not an image kohya trains, nor the caption of one'];
    const checked = { ...run, dataset: { ...run.dataset, skipped, skippedCount: 25, notes: ['1 caption file(s) were not read'] } };
    serveExecution('run-1', 'RUNNING');
    serveHistory(history([...SETTLE, STATES.train], { prepareAnswers: [unsettled, checked] }));
    expect((await statusOf('run-1')).datasetCheck).toEqual({ skipped, skippedCount: 25, notes: ['1 caption file(s) were not read'] });

    serveHistory(history([...SETTLE, STATES.train], { prepareAnswers: [unsettled, { ...run, dataset: { ...run.dataset, skipped: [], skippedCount: 0, notes: [] } }] }));
    expect(await statusOf('run-1')).not.toHaveProperty('datasetCheck');
    // A run prepared before these fields: nothing either.
    serveHistory(history([...SETTLE, STATES.train]));
    expect(await statusOf('run-1')).not.toHaveProperty('datasetCheck');
  });

  test('the images Prepare found to caption, from the settled answer', async () => {
    const toCaption = { ...run, dataset: { ...run.dataset, skipped: [], skippedCount: 0, notes: [], captionsToWrite: 3 } };
    serveExecution('run-1', 'RUNNING');
    serveHistory(history([...SETTLE, STATES.train], { prepareAnswers: [unsettled, toCaption] }));
    expect((await statusOf('run-1')).datasetCheck).toEqual({ skipped: [], skippedCount: 0, notes: [], captionsToWrite: 3 });
  });

  test('the history is read newest first, only as far as needed', async () => {
    // Hundreds of endpoint polls put Prepare's answer on the third page.
    const states = [...SETTLE, STATES.train, ...DEPLOY, ...Array.from({ length: 40 }, () => POLL).flat(), STATES.waitForEndpoint];
    const events = history(states);
    expect(events.length).toBeGreaterThan(2 * HISTORY_PAGE_SIZE);
    expect(events.length).toBeLessThan(3 * HISTORY_PAGE_SIZE);
    serveExecution('run-1', 'RUNNING');
    serveHistory(events);
    const result = await statusOf('run-1');
    expect(result).toMatchObject({ run: run.run, currentState: STATES.waitForEndpoint, phase: 'DEPLOYING' });
    expect(sfnMock).toHaveReceivedCommandTimes(GetExecutionHistoryCommand, 3);
    const pages = sfnMock.commandCalls(GetExecutionHistoryCommand).map((call) => call.args[0].input);
    expect(pages.map((page) => [page.reverseOrder, page.nextToken])).toEqual([
      [true, undefined],
      [true, String(HISTORY_PAGE_SIZE)],
      [true, String(2 * HISTORY_PAGE_SIZE)],
    ]);

    sfnMock.resetHistory();
    serveHistory(history([...SETTLE, STATES.train]));
    await statusOf('run-1');
    expect(sfnMock).toHaveReceivedCommandTimes(GetExecutionHistoryCommand, 1);
  });
});

test('a run in training: the job, its transitions and savings so far; the endpoint not created', async () => {
  serveExecution('run-1', 'RUNNING');
  serveHistory(history([...SETTLE, STATES.train]));
  serveTrainingJob();
  const result = await statusOf('run-1');
  expect(result).toEqual({
    executionArn: executionArn('run-1'),
    executionName: 'run-1',
    dataset: 'pokemon',
    run: run.run,
    phase: 'TRAINING',
    status: 'RUNNING',
    startedAt: '2025-01-01T11:55:00.000Z',
    stoppedAt: undefined,
    currentState: STATES.train,
    waitingFor: undefined,
    training: {
      jobName: run.run,
      status: 'InProgress',
      secondaryStatus: 'Training',
      transitions: [
        { status: 'Starting', startTime: '2025-01-01T12:01:40.000Z', endTime: '2025-01-01T12:03:20.000Z', message: 'Preparing the instances for training' },
        { status: 'Training', startTime: '2025-01-01T12:03:20.000Z', endTime: undefined, message: 'Training image download completed. Training in progress.' },
      ],
      trainingSeconds: 0,
      billableSeconds: 0,
      spotSavingsPercent: 0,
      modelArtifact: undefined,
      failureReason: undefined,
      logsUrl: expect.stringContaining(`logStreamNameFilter$3D${run.run}`),
    },
    servingMode: 'dedicated',
    endpoint: { name: 'lora-pokemon', status: 'NotCreated' },
    error: undefined,
    cause: undefined,
  });
  expect(result.lora).toBeUndefined();
});

test('a training job that does not exist yet is NotStarted', async () => {
  serveExecution('run-1', 'RUNNING');
  serveHistory(history([...SETTLE, STATES.train]));
  const result = await statusOf('run-1');
  expect(result.training).toEqual({ jobName: run.run, status: 'NotStarted' });
});

test('a SageMaker error other than not found is reported, not thrown', async () => {
  serveExecution('run-1', 'RUNNING');
  serveHistory(history([...SETTLE, STATES.train]));
  sageMakerMock.on(DescribeTrainingJobCommand).rejects(sdkError('AccessDeniedException', 'not authorized'));
  const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
  const result = await statusOf('run-1');
  expect(JSON.parse(String(warn.mock.calls[0][0]))).toMatchObject({ level: 'WARN', message: 'Training job not readable', error: 'AccessDeniedException' });
  warn.mockRestore();
  expect(result.training).toEqual({ jobName: run.run, status: 'Unknown', error: 'AccessDeniedException: not authorized' });
  expect(result.phase).toBe('TRAINING');
});

test('a succeeded run is IN_SERVICE, and its endpoint serves it', async () => {
  serveExecution('run-1', 'SUCCEEDED', { stopDate: new Date('2025-01-01T12:40:00Z') });
  serveHistory(history([...SETTLE, STATES.train, ...DEPLOY, ...POLL, STATES.reportSuccess, STATES.notifySuccess, STATES.succeeded], { running: false }));
  serveTrainingJob({ TrainingJobStatus: 'Completed', SecondaryStatus: 'Completed', TrainingTimeInSeconds: 1000, BillableTimeInSeconds: 370 });
  sageMakerMock.on(DescribeEndpointCommand).resolves({ EndpointName: 'lora-pokemon', EndpointStatus: 'InService', EndpointConfigName: run.run } as never);
  const result = await statusOf('run-1');
  expect(result).toMatchObject({ phase: 'IN_SERVICE', stoppedAt: '2025-01-01T12:40:00.000Z', training: { spotSavingsPercent: 63 } });
  expect(result.endpoint).toEqual({ name: 'lora-pokemon', status: 'InService', endpointConfigName: run.run, servesThisRun: true, failureReason: undefined });
  expect(result.currentState).toBeUndefined();
});

test.each([
  ['FAILED', 'FAILED'],
  ['TIMED_OUT', 'FAILED'],
  ['ABORTED', 'ABORTED'],
])('an execution %s is %s, with its error and cause', async (statusValue, phase) => {
  const cause = 'The training job lora-pokemon-20250101120000-abc123 failed: AlgorithmError: CUDA out of memory.';
  serveExecution('run-1', statusValue, { stopDate: new Date('2025-01-01T12:30:00Z'), error: 'TrainingFailed', cause });
  serveHistory(history([...SETTLE, STATES.train, STATES.reportFailure, STATES.notifyFailure, STATES.failed], { running: false }));
  const result = await statusOf('run-1');
  expect(result).toMatchObject({ phase, status: statusValue, error: 'TrainingFailed', cause, run: run.run, stoppedAt: '2025-01-01T12:30:00.000Z' });
  expect(result.currentState).toBeUndefined();
});

test('an execution aborted before Prepare settled has no run', async () => {
  serveExecution('run-1', 'ABORTED', { stopDate: new Date('2025-01-01T12:00:00Z') });
  serveHistory(history([STATES.readInput, STATES.prepare, STATES.settled, STATES.waitForUpload]));
  const result = await statusOf('run-1');
  expect(result).toMatchObject({ phase: 'ABORTED', dataset: 'pokemon' });
  expect(result.run).toBeUndefined();
  expect(result.waitingFor).toBeUndefined();
});

describe('requests refused', () => {
  test.each([
    ['another state machine', 'arn:aws:states:eu-west-1:123456789012:execution:OtherWorkflow:run-1'],
    ['another account', 'arn:aws:states:eu-west-1:210987654321:execution:LoraPipelineWorkflow:run-1'],
    ['another region', 'arn:aws:states:us-east-1:123456789012:execution:LoraPipelineWorkflow:run-1'],
    ['a state machine whose name starts the same', 'arn:aws:states:eu-west-1:123456789012:execution:LoraPipelineWorkflowV2:run-1'],
    ['no execution name', 'arn:aws:states:eu-west-1:123456789012:execution:LoraPipelineWorkflow:'],
    ['not a string', 42],
  ])('an executionArn of %s', async (_, arn) => {
    await expect(status({ executionArn: arn }, context)).rejects.toThrow(InvalidRequest);
    await expect(status({ executionArn: arn }, context)).rejects.toThrow(/must be an execution of this workflow, arn:aws:states:eu-west-1:123456789012:execution:LoraPipelineWorkflow:<execution name>/);
    expect(sfnMock).not.toHaveReceivedAnyCommand();
  });

  test('an unknown field, with a suggestion', async () => {
    await expect(status({ datset: 'pokemon' }, context)).rejects.toThrow('Unknown field "datset" (did you mean "dataset"?)');
    await expect(status({ runId: 'x' }, context)).rejects.toMatchObject({ name: 'InvalidRequest', message: expect.stringContaining('Send {"executionArn"') });
  });

  test.each([
    ['both fields', { dataset: 'pokemon', executionArn: executionArn('x') }, /either executionArn or dataset/],
    ['an empty dataset', { dataset: ' ' }, /dataset must be a folder name/],
    ['a bucket without a folder', { dataset: 's3://bucket/' }, /dataset must be a folder name/],
    ['not an object', 'pokemon', /must be a JSON object/],
  ])('%s', async (_, request, message) => {
    await expect(status(request, context)).rejects.toThrow(message);
  });
});

describe('the latest runs', () => {
  const inputs: Record<string, string> = {
    a: 'pokemon',
    b: 's3://datasets-bucket/datasets/other/',
    c: 's3://datasets-bucket/datasets/pokemon/',
    d: 'pokemon-v2',
    e: '{not json',
  };

  beforeEach(() => {
    sfnMock.on(ListExecutionsCommand).resolves({
      executions: Object.keys(inputs).map((name) => ({ executionArn: executionArn(name), stateMachineArn, name, status: 'SUCCEEDED', startDate: new Date() })),
    });
    for (const [name, dataset] of Object.entries(inputs)) {
      const input = name === 'e' ? dataset : JSON.stringify({ dataset });
      serveExecution(name, 'SUCCEEDED', { input });
    }
    serveHistory(history([...SETTLE, STATES.train, STATES.succeeded], { running: false, prepareAnswers: [unsettled, { ...run, dataset: { ...run.dataset, name: 'from-prepare' } }] }));
  });

  test.each(['pokemon', 's3://datasets-bucket/datasets/pokemon/', 's3://datasets-bucket/datasets/pokemon'])('of a dataset given as %s', async (dataset) => {
    const result = (await status({ dataset }, context)) as RunList;
    expect(result.runs.map((r) => r.executionName)).toEqual(['a', 'c']);
    expect(sfnMock).toHaveReceivedCommandWith(ListExecutionsCommand, { stateMachineArn, maxResults: 100 });
    expect(result.searchedExecutions).toBe(5);
  });

  test('of all datasets: the newest executions, each summarized', async () => {
    const result = (await status({}, context)) as RunList;
    expect(result.runs.map((r) => r.executionName)).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(result.runs.every((r) => r.phase === 'IN_SERVICE' && r.dataset === 'from-prepare')).toBe(true);
    expect(sfnMock).toHaveReceivedCommandWith(ListExecutionsCommand, { stateMachineArn, maxResults: 10 });
  });

  test('a dataset search stops describing once it has enough runs', async () => {
    const many = Array.from({ length: 30 }, (_, i) => `run-${i}`);
    sfnMock.on(ListExecutionsCommand).resolves({ executions: many.map((name) => ({ executionArn: executionArn(name), stateMachineArn, name, status: 'SUCCEEDED', startDate: new Date() })) });
    for (const name of many) serveExecution(name, 'SUCCEEDED');
    const result = (await status({ dataset: 'pokemon' }, context)) as RunList;
    expect(result.runs).toHaveLength(10);
    expect(result.searchedExecutions).toBe(10);
    expect(sfnMock).toHaveReceivedCommandTimes(DescribeExecutionCommand, 10);
  });
});

/** Serves version 7 of pokemon and the name's head item (version 0) from the registry; undefined: missing. */
function serveRegistry(version: Record<string, unknown> | undefined, head: Record<string, unknown> | undefined): void {
  const item = (key: number, attributes: Record<string, unknown> | undefined) => (attributes ? { Item: { name: 'pokemon', version: key, ...attributes } } : {});
  registryMock.on(GetCommand, { TableName: REGISTRY_TABLE, Key: { name: 'pokemon', version: 7 } }).resolves(item(7, version));
  registryMock.on(GetCommand, { TableName: REGISTRY_TABLE, Key: { name: 'pokemon', version: 0 } }).resolves(item(0, head));
}

describe('a shared run', () => {
  const shared = sharedRunFixture();
  const registered = { name: 'pokemon', version: 7, ref: 'pokemon@7', status: 'pending' };

  function serveShared(states: string[], outputs: Record<string, unknown> = {}): void {
    serveExecution('run-1', 'RUNNING');
    serveHistory(history(states, { prepareAnswers: [unsettled, shared], outputs }));
    sageMakerMock.on(DescribeEndpointCommand).resolves({ EndpointName: 'lora-shared-sd15', EndpointStatus: 'InService', EndpointConfigName: 'SharedConfig-abc' } as never);
  }

  test('before registering: the serving mode and the LoRA name, and the shared endpoint with its inference component', async () => {
    serveShared([...SETTLE, STATES.train]);
    const result = await statusOf('run-1');
    expect(result.servingMode).toBe('shared');
    expect(result.lora).toEqual({ name: 'pokemon' });
    expect(result.endpoint).toEqual({
      name: 'lora-shared-sd15',
      status: 'InService',
      endpointConfigName: 'SharedConfig-abc',
      inferenceComponentName: 'lora-shared-sd15',
      failureReason: undefined,
    });
    expect(result.endpoint).not.toHaveProperty('servesThisRun');
    // No version yet: nothing to read in the registry.
    expect(registryMock).not.toHaveReceivedAnyCommand();
  });

  test("once registered: the version from the Register LoRA state's output, and its registry state", async () => {
    serveShared([...SETTLE, STATES.train, ...SHARED.slice(0, 3)], { [STATES.registerLora]: { run: shared, lora: registered } });
    serveRegistry({ status: 'pending' }, { latest: 7, current: 6 });
    const result = await statusOf('run-1');
    expect(result.lora).toEqual({ name: 'pokemon', version: 7, ref: 'pokemon@7', status: 'pending', isCurrent: false, currentVersion: 6 });
    expect(result.phase).toBe('DEPLOYING');
  });

  test('once promoted: whether the version became current, and whether it is current now', async () => {
    const states = [...SETTLE, STATES.train, ...SHARED, STATES.reportSuccess];
    serveShared(states, { [STATES.registerLora]: { lora: registered }, [STATES.makeLoraCurrent]: { lora: registered, promotion: { name: 'pokemon', version: 7, current: false } } });
    serveRegistry({ status: 'ready' }, { latest: 8, current: 8 });
    expect((await statusOf('run-1')).lora).toEqual({ name: 'pokemon', version: 7, ref: 'pokemon@7', madeCurrent: false, status: 'ready', isCurrent: false, currentVersion: 8 });
  });

  test('a Register LoRA exit with a caught error gives no version, and the registry is not read', async () => {
    serveShared([...SETTLE, STATES.train, ...SHARED.slice(0, 2), STATES.registrationFailed], {
      [STATES.registerLora]: { lora: null, error: { Error: 'LoraFileInvalid', Cause: '{}' } },
    });
    expect((await statusOf('run-1')).lora).toEqual({ name: 'pokemon' });
    expect(registryMock).not.toHaveReceivedAnyCommand();
  });

  test('a dedicated run of a shared deployment says why it got its own endpoint', async () => {
    const fallback = preparedRunFixture();
    const because = 'The shared endpoint lora-shared-sd15 cannot serve this run: its modelType sdxl (execution input) is not the shared endpoint\'s sd15; it gets an endpoint of its own.';
    const withReason = { ...fallback, serving: { ...fallback.serving, dedicatedBecause: because } };
    serveExecution('run-1', 'RUNNING');
    serveHistory(history([...SETTLE, STATES.train], { prepareAnswers: [unsettled, withReason] }));
    const result = await statusOf('run-1');
    expect(result).toMatchObject({ servingMode: 'dedicated', dedicatedBecause: because });
    expect(result.lora).toBeUndefined();
    expect(registryMock).not.toHaveReceivedAnyCommand();
  });

  test('a run prepared before serving modes existed reads as dedicated', async () => {
    const { mode: _mode, ...legacyServing } = preparedRunFixture().serving as unknown as Record<string, unknown>;
    serveExecution('run-1', 'RUNNING');
    serveHistory(history([...SETTLE, STATES.train], { prepareAnswers: [unsettled, { ...preparedRunFixture(), serving: legacyServing }] }));
    const result = await statusOf('run-1');
    expect(result.servingMode).toBe('dedicated');
    expect(sageMakerMock).toHaveReceivedCommandWith(DescribeEndpointCommand, { EndpointName: 'lora-pokemon' });
  });
});

describe("a shared run's version in the registry now", () => {
  const shared = sharedRunFixture();
  const registered = { name: 'pokemon', version: 7, ref: 'pokemon@7', status: 'pending' };
  const promoted = { name: 'pokemon', version: 7, current: true };
  const fromHistory = { name: 'pokemon', version: 7, ref: 'pokemon@7', madeCurrent: true };

  /** A shared run that succeeded: registered, tried and made current as version 7. */
  async function succeededRun(): Promise<RunStatus> {
    serveExecution('run-1', 'SUCCEEDED', { stopDate: new Date('2025-01-01T12:40:00Z') });
    const states = [...SETTLE, STATES.train, ...SHARED, STATES.reportSuccess, STATES.notifySuccess, STATES.succeeded];
    const outputs = { [STATES.registerLora]: { lora: registered }, [STATES.makeLoraCurrent]: { lora: registered, promotion: promoted } };
    serveHistory(history(states, { running: false, prepareAnswers: [unsettled, shared], outputs }));
    sageMakerMock.on(DescribeEndpointCommand).resolves({ EndpointName: 'lora-shared-sd15', EndpointStatus: 'InService', EndpointConfigName: 'SharedConfig-abc' } as never);
    return statusOf('run-1');
  }

  /** The run's status, with console.warn silenced, and the WARN lines logged meanwhile. */
  async function succeededRunWarning(): Promise<{ result: RunStatus; warnings: unknown[] }> {
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    try {
      const result = await succeededRun();
      return { result, warnings: warn.mock.calls.map((call) => JSON.parse(String(call[0]))) };
    } finally {
      warn.mockRestore();
    }
  }

  test('current: ready, and the version the name is served with; one GetItem of the version and one of the head', async () => {
    serveRegistry({ status: 'ready', s3Uri: 's3://artifacts/loras/pokemon/7.safetensors' }, { latest: 7, current: 7 });
    const { result, warnings } = await succeededRunWarning();
    expect(warnings).toEqual([]);
    expect(result.lora).toEqual({ ...fromHistory, status: 'ready', isCurrent: true, currentVersion: 7 });
    expect(registryMock).toHaveReceivedCommandTimes(GetCommand, 2);
    expect(registryMock).toHaveReceivedCommandWith(GetCommand, { TableName: REGISTRY_TABLE, Key: { name: 'pokemon', version: 7 } });
    expect(registryMock).toHaveReceivedCommandWith(GetCommand, { TableName: REGISTRY_TABLE, Key: { name: 'pokemon', version: 0 } });
  });

  test('not current: a newer version is served now, although this one was made current', async () => {
    serveRegistry({ status: 'ready' }, { latest: 9, current: 9 });
    expect((await succeededRun()).lora).toEqual({ ...fromHistory, status: 'ready', isCurrent: false, currentVersion: 9 });
  });

  test('retired: when, and the version current since', async () => {
    serveRegistry({ status: 'retired', retiredAt: '2025-01-02T09:00:00Z' }, { latest: 7, current: 6 });
    expect((await succeededRun()).lora).toEqual({ ...fromHistory, status: 'retired', retiredAt: '2025-01-02T09:00:00Z', isCurrent: false, currentVersion: 6 });
  });

  test('failed: why, and no version of the name is current', async () => {
    serveRegistry({ status: 'failed', failure: 'sha256 mismatch' }, { latest: 7 });
    const result = await succeededRun();
    expect(result.lora).toEqual({ ...fromHistory, status: 'failed', failure: 'sha256 mismatch', isCurrent: false });
    expect(result.lora).not.toHaveProperty('currentVersion');
  });

  test('a missing version item is reported beside the rest of the answer', async () => {
    serveRegistry(undefined, { latest: 7, current: 7 });
    const { result, warnings } = await succeededRunWarning();
    expect(warnings).toEqual([expect.objectContaining({ level: 'WARN', message: 'Registry state incomplete', lora: 'pokemon@7', errors: [], missingItems: 1 })]);
    expect(result.lora).toEqual({ ...fromHistory, isCurrent: true, currentVersion: 7, registryError: expect.stringContaining(`pokemon@7 is not in the registry table ${REGISTRY_TABLE}`) });
    expect(result).toMatchObject({ phase: 'IN_SERVICE', endpoint: { status: 'InService' } });
  });

  test('a missing head item: nothing is current, and it is reported', async () => {
    serveRegistry({ status: 'ready' }, undefined);
    expect((await succeededRunWarning()).result.lora).toEqual({ ...fromHistory, status: 'ready', isCurrent: false, registryError: expect.stringContaining('pokemon has no head item (version 0)') });
  });

  test('a registry error is reported, not thrown: the history and the rest of the answer stand', async () => {
    registryMock.on(GetCommand).rejects(sdkError('AccessDeniedException', 'not authorized to perform dynamodb:GetItem'));
    const { result, warnings } = await succeededRunWarning();
    expect(warnings).toEqual([expect.objectContaining({ message: 'Registry state incomplete', errors: ['AccessDeniedException', 'AccessDeniedException'], missingItems: 0 })]);
    expect(result.lora).toEqual({ ...fromHistory, registryError: expect.stringContaining('AccessDeniedException: not authorized to perform dynamodb:GetItem') });
    expect(result).toMatchObject({ phase: 'IN_SERVICE', status: 'SUCCEEDED', endpoint: { status: 'InService' }, servingMode: 'shared' });
  });

  test('one read failing keeps what the other read', async () => {
    serveRegistry({ status: 'ready' }, undefined);
    registryMock.on(GetCommand, { Key: { name: 'pokemon', version: 0 } }).rejects(sdkError('ProvisionedThroughputExceededException', 'slow down'));
    const { result } = await succeededRunWarning();
    expect(result.lora).toEqual({ ...fromHistory, status: 'ready', registryError: expect.stringMatching(/^Reading the current version of pokemon .* failed: ProvisionedThroughputExceededException: slow down$/) });
    expect(result.lora).not.toHaveProperty('isCurrent');
  });
});

describe('samples, smoke test and links', () => {
  const job = run.training.jobName;
  const samples = { bucket: 'artifacts-bucket', prefix: `models/${job}/samples/`, count: 9, samplesJson: `models/${job}/samples/samples.json`, contactSheet: `models/${job}/samples/contact-sheet.png`, omitted: 0 };
  const smoke = {
    bucket: 'artifacts-bucket',
    withoutLora: `models/${job}/smoke/without-lora.png`,
    withLora: `models/${job}/smoke/with-lora.png`,
    sideBySide: `models/${job}/smoke/side-by-side.png`,
    meanAbsoluteDifference: 23.4,
    changedPixelShare: 0.8,
    minMeanAbsoluteDifference: 2,
  };
  const signer = new S3Client({ region: 'eu-west-1', credentials: { accessKeyId: 'ASIAEXAMPLE', secretAccessKey: 'secret', sessionToken: 'token' } });
  const withLinks = { ...context, s3: signer, now: () => Date.parse('2025-01-01T13:00:00Z') };
  const FINISH = [STATES.reportSuccess, STATES.notifySuccess, STATES.succeeded];

  test('a dedicated run: what Publish samples and Smoke test the endpoint answered, with fresh links valid an hour', async () => {
    serveExecution('run-1', 'SUCCEEDED');
    serveHistory(history([...SETTLE, STATES.train, STATES.publishSamples, ...DEPLOY, ...POLL, STATES.smokeTest, ...FINISH], { running: false, outputs: { [STATES.publishSamples]: { samples }, [STATES.smokeTest]: { samples, smoke } } }));
    const result = (await status({ executionArn: executionArn('run-1') }, withLinks)) as RunStatus;
    expect(result.samples).toEqual({ count: 9, location: `s3://artifacts-bucket/models/${job}/samples/`, contactSheet: `s3://artifacts-bucket/models/${job}/samples/contact-sheet.png` });
    expect(result.smoke).toEqual({ meanAbsoluteDifference: 23.4, changedPixelShare: 0.8, minMeanAbsoluteDifference: 2, location: `s3://artifacts-bucket/models/${job}/smoke/` });
    expect(Object.keys(result.links ?? {})).toEqual(['samplesJson', 'contactSheet', 'withoutLora', 'withLora', 'sideBySide']);
    const url = new URL(result.links!.sideBySide!);
    expect(url.pathname).toBe(`/models/${job}/smoke/side-by-side.png`);
    expect(url.searchParams.get('X-Amz-Expires')).toBe('3600');
    expect(result.linksExpireAt).toBe('2025-01-01T14:00:00.000Z');
  });

  test('the captions Publish samples wrote back and kept, in the dataset folder; none when it wrote none (control)', async () => {
    serveExecution('run-1', 'SUCCEEDED');
    const captioned = { ...samples, captionsWritten: 7, captionsKept: 2 };
    serveHistory(history([...SETTLE, STATES.train, STATES.publishSamples, ...DEPLOY], { running: false, outputs: { [STATES.publishSamples]: { samples: captioned } } }));
    expect(((await status({ executionArn: executionArn('run-1') }, context)) as RunStatus).captions).toEqual({ written: 7, kept: 2, folder: run.dataset.uri });
    serveHistory(history([...SETTLE, STATES.train, STATES.publishSamples, ...DEPLOY], { running: false, outputs: { [STATES.publishSamples]: { samples: { ...samples, captionsWritten: 0, captionsKept: 0 } } } }));
    expect(await status({ executionArn: executionArn('run-1') }, context)).not.toHaveProperty('captions');
  });

  test("a shared run's smoke test is read from Try LoRA's check", async () => {
    serveExecution('run-1', 'SUCCEEDED');
    serveHistory(
      history([...SETTLE, STATES.train, STATES.publishSamples, ...SHARED, ...FINISH], {
        prepareAnswers: [unsettled, sharedRunFixture()],
        running: false,
        outputs: { [STATES.tryLora]: { check: { lora: 'pokemon@1', smoke } } },
      }),
    );
    const result = (await status({ executionArn: executionArn('run-1') }, withLinks)) as RunStatus;
    expect(result.smoke?.meanAbsoluteDifference).toBe(23.4);
    expect(Object.keys(result.links ?? {})).toEqual(['withoutLora', 'withLora', 'sideBySide']);
  });

  test('publishing that failed: a note, no links; a run with neither: nothing (control: without a signer, numbers but no links)', async () => {
    serveExecution('run-1', 'SUCCEEDED');
    serveHistory(history([...SETTLE, STATES.train, STATES.publishSamples, ...DEPLOY], { running: false, outputs: { [STATES.publishSamples]: { samples: { Error: 'S3.AccessDenied', Cause: 'Access Denied' } } } }));
    const failed = (await status({ executionArn: executionArn('run-1') }, withLinks)) as RunStatus;
    expect(failed.samples).toEqual({ count: 0, note: expect.stringContaining('Publishing the samples failed (S3.AccessDenied)') });
    expect(failed.links).toBeUndefined();
    serveHistory(history([...SETTLE, STATES.train], { running: false }));
    const none = (await status({ executionArn: executionArn('run-1') }, withLinks)) as RunStatus;
    expect([none.samples, none.smoke, none.links]).toEqual([undefined, undefined, undefined]);
    serveHistory(history([...SETTLE, STATES.train, STATES.publishSamples, ...DEPLOY], { running: false, outputs: { [STATES.publishSamples]: { samples } } }));
    const unsigned = (await status({ executionArn: executionArn('run-1') }, context)) as RunStatus;
    expect(unsigned.samples?.count).toBe(9);
    expect(unsigned.links).toBeUndefined();
  });
});
