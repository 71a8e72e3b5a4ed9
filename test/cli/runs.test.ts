import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import 'aws-sdk-client-mock-jest';
import { cliEnv, executionArn, invokeAnswer, runCli, runFixture, sentPayload, STATE_MACHINE_ARN } from './read-side-support';

const lambdaMock = mockClient(LambdaClient);
const env = cliEnv({ 'status-function': 'StatusFn', 'state-machine-arn': STATE_MACHINE_ARN });

const runs = [
  runFixture(),
  runFixture({
    executionArn: executionArn('shared-1'),
    executionName: 'shared-1',
    dataset: 'watercolor',
    run: 'lora-watercolor-20250101100000-def456',
    phase: 'IN_SERVICE',
    status: 'SUCCEEDED',
    startedAt: '2025-01-01T10:00:00.000Z',
    stoppedAt: '2025-01-01T10:25:30.000Z',
    currentState: undefined,
    servingMode: 'shared',
    lora: { name: 'watercolor', version: 2, ref: 'watercolor@2', status: 'ready', isCurrent: true, currentVersion: 2 },
  }),
  runFixture({
    executionArn: executionArn('bad-1'),
    executionName: 'bad-1',
    dataset: 'broken',
    run: undefined,
    phase: 'FAILED',
    status: 'FAILED',
    startedAt: '2025-01-01T09:00:00.000Z',
    stoppedAt: '2025-01-01T09:00:40.000Z',
    currentState: undefined,
    training: undefined,
    servingMode: undefined,
    endpoint: undefined,
    error: 'InvalidDataset',
  }),
];

beforeEach(() => lambdaMock.reset());

describe('lora-pipeline runs', () => {
  test('the latest runs as a table, newest first: started, dataset, run, phase (with state), elapsed, LoRA or endpoint, error', async () => {
    lambdaMock.on(InvokeCommand).resolves(invokeAnswer({ runs, searchedExecutions: 10 }) as never);
    const { code, io } = await runCli(['runs'], env);
    expect(code).toBe(0);
    expect(sentPayload(lambdaMock.commandCalls(InvokeCommand)[0].args[0].input)).toEqual({});
    const lines = io.stdout().trimEnd().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/^STARTED\s+DATASET\s+RUN\s+PHASE\s+ELAPSED\s+LORA \/ ENDPOINT\s+ERROR$/);
    expect(lines[1]).toMatch(/^2025-01-01 12:00:00Z\s+pokemon\s+lora-pokemon-20250101120000-abc123\s+TRAINING \(Train LoRA\)\s+12m 05s\s+endpoint lora-pokemon$/);
    expect(lines[2]).toMatch(/watercolor\s+lora-watercolor-20250101100000-def456\s+IN_SERVICE\s+25m 30s\s+watercolor@2 \(current\)/);
    // A run refused before it was prepared has no run name: its execution stands in.
    expect(lines[3]).toMatch(/broken\s+bad-1\s+FAILED\s+40s\s+-\s+InvalidDataset$/);
    // Columns line up: each starts where its header does.
    const at = lines[0].indexOf('PHASE');
    for (const line of lines.slice(1)) expect(line.slice(at)).toMatch(/^(TRAINING|IN_SERVICE|FAILED)/);
  });

  test('runs <dataset> asks for that dataset; --json prints the answer as is', async () => {
    lambdaMock.on(InvokeCommand).resolves(invokeAnswer({ runs: [runs[1]], searchedExecutions: 37 }) as never);
    const { code, io } = await runCli(['runs', 'watercolor', '--json'], env);
    expect(code).toBe(0);
    expect(sentPayload(lambdaMock.commandCalls(InvokeCommand)[0].args[0].input)).toEqual({ dataset: 'watercolor' });
    expect(JSON.parse(io.stdout())).toEqual({ runs: [runs[1]], searchedExecutions: 37 });
  });

  test('no runs: says so on stderr, exit 0, nothing on stdout', async () => {
    lambdaMock.on(InvokeCommand).resolves(invokeAnswer({ runs: [], searchedExecutions: 100 }) as never);
    const { code, io } = await runCli(['runs', 'pokemon'], env);
    expect(code).toBe(0);
    expect(io.stdout()).toBe('');
    expect(io.stderr()).toContain('No runs of pokemon among the 100 newest executions.');
  });

  test('the status function refusing the dataset (InvalidRequest) is exit 3 with its message; access denied is exit 3 naming the call', async () => {
    lambdaMock.on(InvokeCommand).resolves(invokeAnswer({ errorType: 'InvalidRequest', errorMessage: 'dataset must be a folder name' }, 'Unhandled') as never);
    const refused = await runCli(['runs', 'a/b'], env);
    expect(refused.code).toBe(3);
    expect(refused.io.stderr()).toContain('InvalidRequest: dataset must be a folder name');
    lambdaMock.on(InvokeCommand).rejects(Object.assign(new Error('User is not authorized to perform: lambda:InvokeFunction'), { name: 'AccessDeniedException', $metadata: {} }));
    const denied = await runCli(['runs'], env);
    expect(denied.code).toBe(3);
    expect(denied.io.stderr()).toContain('Asking the status function failed: AccessDeniedException');
  });

  test('--help prints the usage (exit 0); two datasets are a usage error (exit 2)', async () => {
    const help = await runCli(['runs', '--help'], env);
    expect(help.code).toBe(0);
    expect(help.io.stdout()).toContain('lora-pipeline runs [<dataset>] [--json]');
    expect((await runCli(['runs', 'a', 'b'], env)).code).toBe(2);
    expect(lambdaMock).not.toHaveReceivedCommand(InvokeCommand);
  });
});
