import { Template } from 'aws-cdk-lib/assertions';
import { extractDefinition } from '../support/asl';
import { createTestApp } from '../support/app';
import { runLocally, taskError } from '../support/local-sfn';
import type { TaskHandler } from '../support/local-sfn';
import { buildFixtureStack } from '../fixtures/fixture-state-machine';

const definition = extractDefinition(Template.fromStack(buildFixtureStack(createTestApp())));

/** What the Lambda service integration returns around a function's result. */
const lambdaResponse = (payload: Record<string, unknown>) => ({ StatusCode: 200, ExecutedVersion: '$LATEST', Payload: payload as any });

function handlers(overrides: Partial<Record<'Prepare' | 'Train', TaskHandler>> = {}): Record<string, TaskHandler> {
  return {
    Prepare: () => lambdaResponse({ ready: true, jobName: 'job-1' }),
    Train: () => ({ TrainingJobStatus: 'Completed' }),
    ...overrides,
  };
}

describe('runLocally on the synthesized fixture definition', () => {
  test('Promise.withResolvers, which aws-local-stepfunctions 3 needs, is available on this Node.js', () => {
    expect(typeof (Promise as unknown as { withResolvers?: unknown }).withResolvers).toBe('function');
  });

  test('happy path: handlers receive the effective input and the output carries their results', async () => {
    const seen: unknown[] = [];
    const run = await runLocally(definition, { dataset: 'pokemon' }, {
      handlers: handlers({
        Prepare: (input) => {
          seen.push(input);
          return lambdaResponse({ ready: true, jobName: 'job-1' });
        },
        Train: (input) => {
          seen.push(input);
          return { TrainingJobStatus: 'Completed' };
        },
      }),
    });
    expect(run.status).toBe('SUCCEEDED');
    expect(run.visited).toEqual(['Prepare', 'IsReady', 'Train', 'Done']);
    expect(seen[0]).toEqual({ FunctionName: expect.stringMatching(/^arn:aws:lambda:/), Payload: { dataset: 'pokemon' } });
    expect(seen[1]).toMatchObject({ TrainingJobName: 'job-1', RoleArn: expect.stringMatching(/^arn:aws:iam::/) });
    expect(run.output).toEqual({ dataset: 'pokemon', prepare: { ready: true, jobName: 'job-1' }, training: { status: 'Completed' } });
  });

  test('a definition copied with structuredClone (another realm inside jest) still resolves its paths', async () => {
    const seen: unknown[] = [];
    const run = await runLocally(structuredClone(definition), structuredClone({ dataset: 'pokemon' }), {
      handlers: handlers({
        Prepare: (input) => {
          seen.push(input);
          return lambdaResponse({ ready: true, jobName: 'job-1' });
        },
      }),
    });
    expect(run.status).toBe('SUCCEEDED');
    expect(seen[0]).toMatchObject({ Payload: { dataset: 'pokemon' } });
  });

  test('a Choice/Wait loop runs until its condition holds, without waiting in real time', async () => {
    let calls = 0;
    const started = Date.now();
    const run = await runLocally(definition, { dataset: 'pokemon' }, {
      handlers: handlers({ Prepare: () => lambdaResponse({ ready: ++calls >= 3, jobName: 'job-1' }) }),
    });
    expect(run.status).toBe('SUCCEEDED');
    expect(run.visited.filter((s) => s === 'WaitForUpload')).toHaveLength(2);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  test('Retry: errors named in a retrier are retried, then the state succeeds', async () => {
    let attempts = 0;
    const run = await runLocally(definition, { dataset: 'pokemon' }, {
      handlers: handlers({
        Train: () => {
          if (++attempts <= 2) throw taskError('SageMaker.ResourceLimitExceededException', 'quota');
          return { TrainingJobStatus: 'Completed' };
        },
      }),
    });
    expect(run.status).toBe('SUCCEEDED');
    expect(run.retries).toEqual({ Train: 2 });
  });

  test('Retry gives up after MaxAttempts and Catch leads to the Fail state with the cause', async () => {
    const run = await runLocally(definition, { dataset: 'pokemon' }, {
      handlers: handlers({ Train: () => { throw taskError('SageMaker.ResourceLimitExceededException', 'no ml.g4dn.xlarge quota'); } }),
    });
    expect(run.retries).toEqual({ Train: 3 });
    expect(run).toMatchObject({ status: 'FAILED', error: 'TrainingFailed', cause: 'no ml.g4dn.xlarge quota' });
    expect(run.visited.at(-1)).toBe('TrainingFailed');
  });

  test('an error no retrier names is not retried', async () => {
    const run = await runLocally(definition, { dataset: 'pokemon' }, {
      handlers: handlers({ Train: () => { throw taskError('SageMaker.ValidationException', 'bad RoleArn'); } }),
    });
    expect(run.retries).toEqual({});
    expect(run).toMatchObject({ status: 'FAILED', error: 'TrainingFailed', cause: 'bad RoleArn' });
  });

  test('an uncaught error fails the execution with its own name and cause', async () => {
    const run = await runLocally(definition, { dataset: 'pokemon' }, {
      handlers: handlers({ Prepare: () => { throw taskError('InvalidDataset', 'no images in datasets/pokemon/'); } }),
    });
    expect(run).toMatchObject({ status: 'FAILED', error: 'InvalidDataset', cause: 'no images in datasets/pokemon/' });
  });

  test('a Task state without a handler is refused before anything runs, so nothing calls AWS', async () => {
    const { Train: _omitted, ...withoutTrain } = handlers();
    await expect(runLocally(definition, {}, { handlers: withoutTrain })).rejects.toThrow(/missing \["Train"\]/);
    await expect(runLocally(definition, {}, { handlers: { ...handlers(), Typo: () => null } })).rejects.toThrow(/unknown \["Typo"\]/);
  });
});
