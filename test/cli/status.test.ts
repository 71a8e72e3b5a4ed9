import { CloudWatchClient, GetMetricDataCommand } from '@aws-sdk/client-cloudwatch';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import 'aws-sdk-client-mock-jest';
import type { CliContext } from '../../cli/command';
import { createClients } from '../../cli/clients';
import { followRun, INTERRUPTED } from '../../cli/follow';
import { loadStackOutputs } from '../../cli/stack-outputs';
import { definedMetrics, progressLine, TRAINING_NAMESPACE } from '../../cli/training-progress';
import type { RunStatus } from '../../lambda/status/status';
import { capturedIo, cliEnv, executionArn, invokeAnswer, runCli, runFixture, sentPayload, STATE_MACHINE_ARN } from './read-side-support';

const lambdaMock = mockClient(LambdaClient);
const cloudwatchMock = mockClient(CloudWatchClient);
const FUNCTION = 'LoraPipeline-StatusFunction';
const env = cliEnv({ 'status-function': FUNCTION, 'state-machine-arn': STATE_MACHINE_ARN });

/** The status function: `byDataset` answers {dataset}, `byArn` {executionArn} (ExecutionDoesNotExist when missing), `latest` {}. */
function statusFunction(answers: { byDataset?: Record<string, RunStatus[]>; byArn?: Record<string, RunStatus | RunStatus[]>; latest?: RunStatus[] }): void {
  const served = new Map<string, number>();
  lambdaMock.on(InvokeCommand).callsFake((input: { Payload?: unknown }) => {
    const query = sentPayload(input) as { dataset?: string; executionArn?: string };
    if (query.dataset !== undefined) return invokeAnswer({ runs: answers.byDataset?.[query.dataset] ?? [], searchedExecutions: 100 });
    if (query.executionArn !== undefined) {
      const answer = answers.byArn?.[query.executionArn];
      if (answer === undefined) return invokeAnswer({ errorType: 'ExecutionDoesNotExist', errorMessage: `Execution Does Not Exist: '${query.executionArn}'` }, 'Unhandled');
      // A list answers each call with the next item (the last one repeats): a run moving on.
      if (!Array.isArray(answer)) return invokeAnswer(answer);
      const index = served.get(query.executionArn) ?? 0;
      served.set(query.executionArn, index + 1);
      return invokeAnswer(answer[Math.min(index, answer.length - 1)]);
    }
    return invokeAnswer({ runs: answers.latest ?? [], searchedExecutions: 10 });
  });
}

/** CloudWatch holding, per metric name, its values newest first. */
function metrics(values: Record<string, number[]>): void {
  cloudwatchMock.on(GetMetricDataCommand).callsFake((input: { MetricDataQueries: Array<{ Id: string; MetricStat: { Metric: { MetricName: string } } }> }) => ({
    MetricDataResults: input.MetricDataQueries.map((query) => ({ Id: query.Id, Values: values[query.MetricStat.Metric.MetricName] ?? [], Timestamps: [] })),
  }));
}

beforeEach(() => {
  lambdaMock.reset();
  cloudwatchMock.reset();
});

describe('lora-pipeline status', () => {
  test("a dataset's latest run: phase and state, elapsed time, the job's progress from its metrics, read from the job's own host dimension", async () => {
    statusFunction({ byDataset: { pokemon: [runFixture()] } });
    metrics({ 'train:step': [340, 300], 'train:epoch': [4, 3], 'train:loss': [0.0812, 0.09] });
    const { code, io } = await runCli(['status', 'pokemon'], env);
    expect(code).toBe(0);
    expect(sentPayload(lambdaMock.commandCalls(InvokeCommand)[0].args[0].input)).toEqual({ dataset: 'pokemon' });
    expect(lambdaMock).toHaveReceivedCommandWith(InvokeCommand, { FunctionName: FUNCTION });
    const out = io.stdout();
    expect(out).toContain('Phase     TRAINING (Train LoRA)');
    expect(out).toContain('12m 05s so far');
    expect(out).toContain('step 340, epoch 4, loss 0.081');
    expect(out).toContain("serves another run's config (lora-pokemon-20241201090000-fff111)");
    const query = cloudwatchMock.commandCalls(GetMetricDataCommand)[0].args[0].input;
    expect(query.MetricDataQueries?.[0].MetricStat?.Metric).toEqual({
      Namespace: TRAINING_NAMESPACE,
      MetricName: 'train:step',
      Dimensions: [{ Name: 'Host', Value: 'lora-pokemon-20250101120000-abc123/algo-1' }],
    });
    expect(query.ScanBy).toBe('TimestampDescending');
    // The window covers the run from its start.
    expect(query.StartTime!.getTime()).toBeLessThanOrEqual(Date.parse('2025-01-01T12:00:00Z'));
  });

  test('progress with totals when the container reports them: "step 340/1000 (34%), epoch 4/10"; only defined metrics are asked for', () => {
    expect(progressLine({ step: 340, totalSteps: 1000, epoch: 4, totalEpochs: 10, loss: 0.081 })).toBe('step 340/1000 (34%), epoch 4/10, loss 0.081');
    expect(progressLine({ step: 340 })).toBe('step 340');
    expect(progressLine({})).toBeUndefined();
    expect(definedMetrics([{ Name: 'train:step' }, { Name: 'train:total_steps' }])).toEqual(['step', 'totalSteps']);
    // The repository's definitions: step, epoch and loss are read.
    expect(definedMetrics()).toEqual(expect.arrayContaining(['step', 'epoch', 'loss']));
  });

  test('a shared run in service: its LoRA version and whether it is current, and every link the status function gives', async () => {
    const run = runFixture({
      phase: 'IN_SERVICE',
      status: 'SUCCEEDED',
      stoppedAt: '2025-01-01T12:30:00.000Z',
      currentState: undefined,
      servingMode: 'shared',
      training: { jobName: 'lora-pokemon-20250101120000-abc123', status: 'Completed', billableSeconds: 600, spotSavingsPercent: 40, logsUrl: 'https://console.aws.amazon.com/logs' },
      lora: { name: 'pokemon', version: 3, ref: 'pokemon@3', status: 'ready', isCurrent: false, currentVersion: 4 },
      endpoint: { name: 'lora-shared-sd15', status: 'InService', inferenceComponentName: 'lora-shared-sd15' },
      samples: { count: 12, location: 's3://artifacts/models/job/samples/' },
      smoke: { meanAbsoluteDifference: 23.456, changedPixelShare: 0.6123, minMeanAbsoluteDifference: 2, location: 's3://artifacts/models/job/smoke/' },
      links: {
        contactSheet: 'https://bucket.s3.amazonaws.com/models/job/samples/contact-sheet.png?X-Amz-Signature=1',
        sideBySide: 'https://bucket.s3.amazonaws.com/models/job/smoke/side-by-side.png?X-Amz-Signature=2',
      },
      linksExpireAt: '2025-01-01T13:30:00.000Z',
      // A link field this CLI does not know yet is shown too, by its path.
      ...({ extra: { gallery: ['https://example.com/gallery'] } } as object),
    });
    statusFunction({ byDataset: { pokemon: [run] } });
    metrics({ 'train:step': [1000], 'train:epoch': [10], 'train:loss': [0.05] });
    const { code, io } = await runCli(['status', 'pokemon'], env);
    expect(code).toBe(0);
    const out = io.stdout();
    expect(out).toContain('IN_SERVICE');
    expect(out).toContain('30m 00s,');
    expect(out).toContain('pokemon@3: ready, not current (current is 4)');
    expect(out).toContain('spot savings 40%');
    expect(out).toContain('Samples   12 images in s3://artifacts/models/job/samples/');
    expect(out).toContain('Smoke     passed: mean absolute difference 23.46 (at least 2 needed), 61.2% of pixels changed; images in s3://artifacts/models/job/smoke/');
    expect(out).toContain('Links (presigned ones valid until 2025-01-01 13:30:00Z)');
    expect(out).toContain('  contact sheet: https://bucket.s3.amazonaws.com/models/job/samples/contact-sheet.png?X-Amz-Signature=1');
    expect(out).toContain('  smoke test side by side: https://bucket.s3.amazonaws.com/models/job/smoke/side-by-side.png?X-Amz-Signature=2');
    expect(out).toContain('  training logs: https://console.aws.amazon.com/logs');
    expect(out).toContain('  extra.gallery[0]: https://example.com/gallery');
  });

  test("the files Prepare found kohya will not train are listed with its notes; nothing is said when there are none", async () => {
    const datasetCheck = { skipped: ['photo.Png: mixed-case extension, kohya ignores it; rename it to .png'], skippedCount: 3, notes: ['12 images past the first 5000 were not checked'] };
    statusFunction({ byDataset: { pokemon: [runFixture({ datasetCheck })], plain: [runFixture({})] } });
    metrics({});
    const { code, io } = await runCli(['status', 'pokemon'], env);
    expect(code).toBe(0);
    expect(io.stdout()).toContain('Not trained (3 files)\n  photo.Png: mixed-case extension, kohya ignores it; rename it to .png\n  and 2 more\nNote      12 images past the first 5000 were not checked');
    const control = await runCli(['status', 'plain'], env);
    expect(control.io.stdout()).not.toMatch(/Not trained|Note /);
  });

  test('--json prints the status function\'s answer with the training progress', async () => {
    statusFunction({ byDataset: { pokemon: [runFixture()] } });
    metrics({ 'train:step': [340], 'train:epoch': [4], 'train:loss': [0.081] });
    const { code, io } = await runCli(['status', 'pokemon', '--json'], env);
    expect(code).toBe(0);
    expect(JSON.parse(io.stdout())).toEqual({ ...runFixture(), trainingProgress: { step: 340, epoch: 4, loss: 0.081 } });
  });

  test('an execution name (not a dataset) is looked up by its ARN; an ARN directly; nothing given is the latest run', async () => {
    const run = runFixture({ executionName: 'pokemon-0a1b2c' });
    statusFunction({ byArn: { [executionArn('pokemon-0a1b2c')]: run }, latest: [runFixture({ executionName: 'latest-one' })] });
    metrics({});
    const byName = await runCli(['status', 'pokemon-0a1b2c'], env);
    expect(byName.code).toBe(0);
    expect(byName.io.stdout()).toContain('execution pokemon-0a1b2c');
    const byArn = await runCli(['status', executionArn('pokemon-0a1b2c')], env);
    expect(byArn.io.stdout()).toContain('execution pokemon-0a1b2c');
    const latest = await runCli(['status'], env);
    expect(latest.io.stdout()).toContain('execution latest-one');
  });

  test('a word that is no dataset, execution or run: exit 1 with what to do', async () => {
    statusFunction({ latest: [runFixture()] });
    const { code, io } = await runCli(['status', 'nothing-here'], env);
    expect(code).toBe(1);
    expect(io.stderr()).toContain('"nothing-here" is neither a dataset with runs, nor an execution of the workflow, nor one of the latest runs');
    expect(io.stdout()).toBe('');
  });

  test('a run name is found among the latest runs', async () => {
    statusFunction({ latest: [runFixture({ run: 'lora-other-20250101110000-aaa111', executionName: 'other' }), runFixture()] });
    metrics({});
    const { code, io } = await runCli(['status', 'lora-pokemon-20250101120000-abc123'], env);
    expect(code).toBe(0);
    expect(io.stdout()).toContain('execution pokemon-0a1b2c');
  });

  test('CloudWatch refusing the metrics does not hide the status: the line says why', async () => {
    statusFunction({ byDataset: { pokemon: [runFixture()] } });
    cloudwatchMock.on(GetMetricDataCommand).rejects(Object.assign(new Error('not allowed'), { name: 'AccessDenied' }));
    const { code, io } = await runCli(['status', 'pokemon'], env);
    expect(code).toBe(0);
    expect(io.stdout()).toContain('progress not readable (AccessDenied: not allowed)');
  });

  test('the status function failing is an AWS error (exit 3) that says what it answered; a missing output names its flag and env var', async () => {
    lambdaMock.on(InvokeCommand).resolves(invokeAnswer({ errorType: 'Error', errorMessage: 'STATE_MACHINE_ARN is not set' }, 'Unhandled') as never);
    const failed = await runCli(['status', 'pokemon'], env);
    expect(failed.code).toBe(3);
    expect(failed.io.stderr()).toContain('The status function failed: Error: STATE_MACHINE_ARN is not set');
    const cloudformationless = await runCli(['status', 'pokemon'], cliEnv({}, { LORA_PIPELINE_STACK: 'NoSuchStack', LORA_PIPELINE_ENDPOINT_URL: 'http://127.0.0.1:9' }));
    expect(cloudformationless.code).toBe(3);
    expect(cloudformationless.io.stderr()).toContain('--status-function <value> or env LORA_PIPELINE_STATUS_FUNCTION');
  });

  test('--help prints the usage (exit 0); a second positional and --interval without --watch are usage errors (exit 2)', async () => {
    const help = await runCli(['status', '--help'], env);
    expect(help.code).toBe(0);
    expect(help.io.stdout()).toContain('lora-pipeline status [<dataset> | <run>] [--json] [--watch');
    expect((await runCli(['status', 'a', 'b'], env)).code).toBe(2);
    const interval = await runCli(['status', 'pokemon', '--interval', '10'], env);
    expect(interval.code).toBe(2);
    expect(interval.io.stderr()).toContain('--interval applies only with --watch');
    expect(lambdaMock).not.toHaveReceivedCommand(InvokeCommand);
  });
});

/** A context for followRun with a fake clock that each sleep advances. */
function followContext(clock: { now: number }, signal: AbortSignal = new AbortController().signal): { ctx: CliContext; io: ReturnType<typeof capturedIo> } {
  const io = capturedIo(clock);
  const stack = { StackName: 'SageMakerLoraPipeline', StackStatus: 'CREATE_COMPLETE' as const, CreationTime: new Date(), Outputs: [{ OutputKey: 'StatusFunctionName', OutputValue: FUNCTION }, { OutputKey: 'StateMachineArn', OutputValue: STATE_MACHINE_ARN }] };
  const ctx: CliContext = {
    io,
    env: {},
    clients: createClients({ region: 'eu-west-1', env: {}, overrides: { credentials: { accessKeyId: 'a', secretAccessKey: 'b' } } }),
    outputs: (...needed) => loadStackOutputs({ stackName: 'SageMakerLoraPipeline', flags: {}, env: {}, cloudformation: () => { throw new Error('not used'); } }, needed, async () => ({ stack })),
    signal,
  };
  return { ctx, io };
}

const sleepOn = (clock: { now: number }) => async (ms: number) => {
  clock.now += ms;
};

describe('following a run (status --watch, upload)', () => {
  const arn = executionArn('pokemon-0a1b2c');
  const training = (step: number) => runFixture({ currentState: 'Train LoRA', phase: 'TRAINING', training: { jobName: 'job', status: 'InProgress', secondaryStatus: 'Training' }, ...({ step } as object) });

  test('prints a line when the phase, state or progress changes, then the final status; exit 0 once in service', async () => {
    const clock = { now: Date.parse('2025-01-01T12:01:00Z') };
    statusFunction({
      byDataset: { pokemon: [training(1)] },
      byArn: {
        [arn]: [
          training(2),
          training(3),
          runFixture({ phase: 'DEPLOYING', currentState: 'Wait for endpoint' }),
          runFixture({ phase: 'IN_SERVICE', status: 'SUCCEEDED', currentState: undefined, stoppedAt: '2025-01-01T12:20:00.000Z' }),
        ],
      },
    });
    let step = 100;
    cloudwatchMock.on(GetMetricDataCommand).callsFake((input: { MetricDataQueries: Array<{ Id: string; MetricStat: { Metric: { MetricName: string } } }> }) => {
      // The second and third polls see the same step: no new line for them.
      const value = step;
      if (step < 200) step += 100;
      return { MetricDataResults: input.MetricDataQueries.map((query) => ({ Id: query.Id, Values: query.MetricStat.Metric.MetricName === 'train:step' ? [value] : [] })) };
    });
    const { ctx, io } = followContext(clock);
    const code = await followRun(ctx, { dataset: 'pokemon' }, { sleep: sleepOn(clock), intervalSeconds: 20 });
    expect(code).toBe(0);
    const lines = io.stderr().trim().split('\n');
    expect(lines).toEqual([
      'Following lora-pokemon-20250101120000-abc123 (execution pokemon-0a1b2c); Ctrl-C stops following, not the run.',
      '[1m 00s]  TRAINING (Train LoRA)  step 100',
      '[1m 20s]  TRAINING (Train LoRA)  step 200',
      '[2m 00s]  DEPLOYING (Wait for endpoint)',
      '[20m 00s]  IN_SERVICE',
    ]);
    expect(io.stdout()).toContain('Phase     IN_SERVICE');
  });

  test('a run that fails gives exit 1, an aborted one too; the final status says why', async () => {
    const clock = { now: Date.parse('2025-01-01T12:01:00Z') };
    statusFunction({ byArn: { [arn]: [runFixture({ phase: 'FAILED', status: 'FAILED', currentState: undefined, error: 'TrainingFailed', cause: 'CUDA out of memory' })] } });
    metrics({});
    const { ctx, io } = followContext(clock);
    expect(await followRun(ctx, { run: arn }, { sleep: sleepOn(clock) })).toBe(1);
    expect(io.stdout()).toContain('Error     TrainingFailed: CUDA out of memory');
    statusFunction({ byArn: { [arn]: [runFixture({ phase: 'ABORTED', status: 'ABORTED', currentState: undefined })] } });
    expect(await followRun(followContext(clock).ctx, { run: arn }, { sleep: sleepOn(clock) })).toBe(1);
  });

  test("upload's follow waits for the run started after the upload, never taking the dataset's previous run for it", async () => {
    const clock = { now: Date.parse('2025-01-01T12:00:00Z') };
    const previous = runFixture({ executionName: 'old', executionArn: executionArn('old'), startedAt: '2025-01-01T11:00:00.000Z', phase: 'IN_SERVICE', status: 'SUCCEEDED', currentState: undefined });
    const next = runFixture({ startedAt: '2025-01-01T12:00:30.000Z', phase: 'IN_SERVICE', status: 'SUCCEEDED', currentState: undefined });
    let calls = 0;
    lambdaMock.on(InvokeCommand).callsFake(() => invokeAnswer({ runs: [calls++ < 2 ? previous : next], searchedExecutions: 100 }));
    metrics({});
    const { ctx, io } = followContext(clock);
    expect(await followRun(ctx, { dataset: 'pokemon' }, { startedAfterMs: clock.now, sleep: sleepOn(clock) })).toBe(0);
    expect(calls).toBe(3);
    expect(io.stderr()).toContain('Waiting for the run of pokemon to start');
    expect(io.stdout()).toContain('execution pokemon-0a1b2c');
    expect(io.stdout()).not.toContain('execution old');
  });

  test('a run that never appears: exit 1 after the wait, saying what to check', async () => {
    const clock = { now: Date.parse('2025-01-01T12:00:00Z') };
    statusFunction({ byDataset: { pokemon: [] } });
    const { ctx, io } = followContext(clock);
    expect(await followRun(ctx, { dataset: 'pokemon' }, { startedAfterMs: clock.now, appearTimeoutSeconds: 60, sleep: sleepOn(clock) })).toBe(1);
    expect(io.stderr()).toContain('No run of pokemon started within 60 s');
  });

  test('Ctrl-C stops following (exit 130) and says the run goes on', async () => {
    const clock = { now: Date.parse('2025-01-01T12:01:00Z') };
    statusFunction({ byArn: { [arn]: training(1) } });
    metrics({});
    const controller = new AbortController();
    const { ctx, io } = followContext(clock, controller.signal);
    const code = await followRun(ctx, { run: arn }, { sleep: async () => controller.abort() });
    expect(code).toBe(INTERRUPTED);
    expect(io.stderr()).toContain('Stopped following. The run goes on: lora-pipeline status pokemon-0a1b2c');
  });

  test('status --watch through the CLI: exit 1 for a failed run', async () => {
    statusFunction({ byArn: { [arn]: runFixture({ phase: 'FAILED', status: 'FAILED', currentState: undefined, error: 'InvalidDataset' }) } });
    metrics({});
    const { code, io } = await runCli(['status', arn, '--watch'], env);
    expect(code).toBe(1);
    expect(io.stderr()).toContain('FAILED');
    expect(io.stdout()).toContain('Error     InvalidDataset');
  });
});
