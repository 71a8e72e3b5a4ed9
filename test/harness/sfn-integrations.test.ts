import { Template } from 'aws-cdk-lib/assertions';
import * as sagemaker from '@aws-sdk/client-sagemaker';
import * as sns from '@aws-sdk/client-sns';
import type { StateMachineDefinition } from 'aws-local-stepfunctions';
import { assertValidAsl, extractDefinition } from '../support/asl';
import { createTestApp } from '../support/app';
import { runLocally, taskError } from '../support/local-sfn';
import { motoAvailable, startMoto } from '../support/moto';
import type { MotoServer } from '../support/moto';
import { failFirst, integrationHandlers } from '../support/sfn-integrations';
import type { SdkService } from '../support/sfn-integrations';
import { buildFixtureStack } from '../fixtures/fixture-state-machine';

const definition = extractDefinition(Template.fromStack(buildFixtureStack(createTestApp())));
const prepare = (payload: any) => ({ ready: true, jobName: `job-${payload.dataset}` });

/** The fixture definition with one change made to its JSON text. */
function edited(from: string, to: string): StateMachineDefinition {
  const text = JSON.stringify(definition);
  expect(text).toContain(from);
  return JSON.parse(text.replace(from, to)) as StateMachineDefinition;
}

/** A one-state definition calling one integration with fixed parameters. */
function single(resource: string, parameters: Record<string, unknown>, catchAll = false): StateMachineDefinition {
  const call = { Type: 'Task', Resource: resource, Parameters: parameters, End: true, ...(catchAll ? { Catch: [{ ErrorEquals: ['States.ALL'], Next: 'Caught' }] } : {}) };
  const built = { StartAt: 'Call', States: { Call: call, ...(catchAll ? { Caught: { Type: 'Pass', End: true } } : {}) } };
  assertValidAsl(built);
  return built as unknown as StateMachineDefinition;
}

const describeWithMoto = motoAvailable() ? describe : describe.skip;

describeWithMoto('integrationHandlers against moto, through the real AWS SDK v3 clients', () => {
  let moto: MotoServer;
  let client: sagemaker.SageMakerClient;
  let service: SdkService;
  const run = (d: StateMachineDefinition, input: Record<string, unknown> = {}) =>
    runLocally(d, input as never, { handlers: integrationHandlers(d, { services: { sagemaker: service }, lambdas: { CheckFn: prepare } }) });

  beforeAll(async () => {
    moto = await startMoto();
    client = new sagemaker.SageMakerClient(moto.clientConfig);
    service = { client, commands: sagemaker, errorPrefix: 'SageMaker' };
  });
  afterAll(async () => {
    client?.destroy();
    await moto?.stop();
  });
  beforeEach(() => moto.reset());

  test('runs Lambda tasks with local code and a .sync training job on moto; the job reads back as requested', async () => {
    const result = await run(definition, { dataset: 'pokemon' });
    expect(result.status).toBe('SUCCEEDED');
    expect(result.output).toMatchObject({ prepare: { ready: true, jobName: 'job-pokemon' }, training: { status: 'Completed' } });

    const job = await client.send(new sagemaker.DescribeTrainingJobCommand({ TrainingJobName: 'job-pokemon' }));
    expect(job.EnableManagedSpotTraining).toBe(true);
    expect(job.StoppingCondition).toEqual({ MaxRuntimeInSeconds: 3600, MaxWaitTimeInSeconds: 7200 });
    expect(job.CheckpointConfig?.S3Uri).toMatch(/^s3:\/\/[a-z0-9]+\/checkpoints\/job-pokemon\/$/);
  });

  describe('requests Step Functions refuses fail with States.Runtime, which no Catch handles', () => {
    test.each([
      ['a misspelt field', '"EnableManagedSpotTraining"', '"EnableManagedSpotTrainng"', /The field "EnableManagedSpotTrainng" is not supported by Step Functions/],
      ['a string for a number', '"MaxRuntimeInSeconds":3600', '"MaxRuntimeInSeconds":"3600"', /StoppingCondition\.MaxRuntimeInSeconds must be a number/],
      ['an object for a string', '"InstanceType":"ml.g4dn.xlarge"', '"InstanceType":{"name":"ml.g4dn.xlarge"}', /ResourceConfig\.InstanceType must be a string/],
    ])('%s', async (_, from, to, message) => {
      const result = await run(edited(from, to), { dataset: 'typo' });
      expect(result).toMatchObject({ status: 'FAILED', error: 'States.Runtime', cause: expect.stringMatching(message) });
      expect(result.visited).not.toContain('TrainingFailed');
    });
  });

  describe('requests SageMaker refuses, though moto accepts them, fail as SageMaker would', () => {
    test('a missing required member', async () => {
      const withoutRole = JSON.parse(JSON.stringify(definition)) as any;
      delete withoutRole.States.Train.Parameters.RoleArn;
      const result = await run(withoutRole, { dataset: 'norole' });
      expect(result).toMatchObject({ status: 'FAILED', error: 'TrainingFailed', cause: 'Parameters.RoleArn is required' });
    });

    test('a job name SageMaker does not allow', async () => {
      const result = await run(definition, { dataset: 'under_score' });
      expect(result).toMatchObject({ status: 'FAILED', error: 'TrainingFailed' });
      const caught = result.events.find((e) => e?.type === 'StateFailed');
      expect(caught && 'Error' in caught ? caught.Error : undefined).toBe('SageMaker.AmazonSageMakerException');
      expect(result.cause).toContain("Value 'job-under_score' at 'TrainingJobName' failed to satisfy constraint");
    });

    test('a spot job whose MaxWait is below its MaxRuntime', async () => {
      const result = await run(edited('"MaxWaitTimeInSeconds":7200', '"MaxWaitTimeInSeconds":60'), { dataset: 'short' });
      expect(result).toMatchObject({ status: 'FAILED', error: 'TrainingFailed', cause: expect.stringContaining('MaxWaitTimeInSeconds must be greater than or equal to MaxRuntimeInSeconds') });
    });

    test('a second training job of the same name', async () => {
      expect((await run(definition, { dataset: 'again' })).status).toBe('SUCCEEDED');
      const second = await run(definition, { dataset: 'again' });
      expect(second).toMatchObject({ status: 'FAILED', error: 'TrainingFailed', cause: expect.stringContaining('Training job names must be unique') });
      const failed = second.events.find((e) => e?.type === 'StateFailed');
      expect(failed && 'Error' in failed ? failed.Error : undefined).toBe('SageMaker.ResourceInUseException');
    });
  });

  test('failFirst: a quota error twice is retried, then the job is created', async () => {
    const handlers = integrationHandlers(definition, { services: { sagemaker: service }, lambdas: { CheckFn: prepare } });
    handlers.Train = failFirst(2, taskError('SageMaker.ResourceLimitExceededException', 'ml.g4dn.xlarge for spot training job usage'), handlers.Train);
    const result = await runLocally(definition, { dataset: 'busy' }, { handlers });
    expect(result.status).toBe('SUCCEEDED');
    expect(result.retries).toEqual({ Train: 2 });
  });

  test('SDK errors get Step Functions names: modeled as <Service>.<Name>Exception, others as SageMakerException (aws-sdk) or AmazonSageMakerException (optimized)', async () => {
    const sdk = await run(single('arn:aws:states:::aws-sdk:sagemaker:describeEndpoint', { EndpointName: 'missing' }));
    expect(sdk).toMatchObject({ status: 'FAILED', error: 'SageMaker.SageMakerException', cause: expect.stringContaining('Could not find endpoint') });
    const optimized = await run(single('arn:aws:states:::sagemaker:createEndpoint', { EndpointName: 'e1', EndpointConfigName: 'missing' }));
    expect(optimized).toMatchObject({ status: 'FAILED', error: 'SageMaker.AmazonSageMakerException', cause: expect.stringContaining('Could not find endpoint configuration') });
  });

  test('UpdateEndpoint, which moto lacks, is emulated: the endpoint moves to the new config', async () => {
    const model = { ModelName: 'm1', ExecutionRoleArn: 'arn:aws:iam::123456789012:role/r', PrimaryContainer: { Image: 'image:1', ModelDataUrl: 's3://b/model.tar.gz' } };
    const config = (name: string) => ({ EndpointConfigName: name, ProductionVariants: [{ VariantName: 'AllTraffic', ModelName: 'm1', InstanceType: 'ml.g4dn.xlarge', InitialInstanceCount: 1 }] });
    for (const [resource, parameters] of [
      ['createModel', model],
      ['createEndpointConfig', config('c1')],
      ['createEndpointConfig', config('c2')],
      ['createEndpoint', { EndpointName: 'pokemon', EndpointConfigName: 'c1' }],
      ['updateEndpoint', { EndpointName: 'pokemon', EndpointConfigName: 'c2' }],
    ] as const) {
      expect([resource, (await run(single(`arn:aws:states:::sagemaker:${resource}`, parameters))).status]).toEqual([resource, 'SUCCEEDED']);
    }
    const endpoint = await client.send(new sagemaker.DescribeEndpointCommand({ EndpointName: 'pokemon' }));
    expect(endpoint.EndpointConfigName).toBe('c2');
    const again = await run(single('arn:aws:states:::sagemaker:createEndpoint', { EndpointName: 'pokemon', EndpointConfigName: 'c1' }));
    expect(again).toMatchObject({ status: 'FAILED', error: 'SageMaker.AmazonSageMakerException', cause: expect.stringContaining('Cannot create already existing endpoint') });
    const missing = await run(single('arn:aws:states:::sagemaker:updateEndpoint', { EndpointName: 'other', EndpointConfigName: 'c2' }));
    expect(missing).toMatchObject({ status: 'FAILED', error: 'SageMaker.AmazonSageMakerException' });
  });
});

describe('integrationHandlers without a server', () => {
  const unreachable: SdkService = { errorPrefix: 'SageMaker', commands: sagemaker, client: { send: () => Promise.reject(new Error('not reached')) } };

  test('a failed .sync job fails the task with States.TaskFailed and the job description as cause', async () => {
    let created = false;
    const failing: SdkService = {
      errorPrefix: 'SageMaker',
      commands: sagemaker,
      client: {
        send: async (command: unknown) => {
          if (command instanceof sagemaker.DescribeTrainingJobCommand) {
            if (created) return { TrainingJobStatus: 'Failed', FailureReason: 'AlgorithmError: no images in the dataset channel' };
            throw new sagemaker.SageMakerServiceException({ name: 'ValidationException', $fault: 'client', $metadata: {}, message: 'Requested resource not found.' });
          }
          created = true;
          return { TrainingJobArn: 'arn:aws:sagemaker:us-east-1:123456789012:training-job/job-broken' };
        },
      },
    };
    const handlers = integrationHandlers(definition, { services: { sagemaker: failing }, lambdas: { CheckFn: prepare } });
    const result = await runLocally(definition, { dataset: 'broken' }, { handlers });
    expect(result).toMatchObject({ status: 'FAILED', error: 'TrainingFailed' });
    expect(JSON.parse(result.cause ?? '{}')).toMatchObject({ FailureReason: 'AlgorithmError: no images in the dataset channel' });
  });

  test("a Lambda function's error surfaces under its type, with the runtime's error document as cause", async () => {
    const invalid = () => {
      throw taskError('InvalidDataset', 'datasets/pokemon/ has no images');
    };
    const handlers = integrationHandlers(definition, { services: { sagemaker: unreachable }, lambdas: { CheckFn: invalid } });
    const result = await runLocally(definition, { dataset: 'pokemon' }, { handlers });
    expect(result.error).toBe('InvalidDataset');
    expect(JSON.parse(result.cause ?? '{}')).toEqual({ errorType: 'InvalidDataset', errorMessage: 'datasets/pokemon/ has no images', trace: [] });
    expect(result.visited).toEqual(['Prepare']);
  });

  test('sns:publish sends an object Message as its JSON text', async () => {
    const sent: unknown[] = [];
    const topic: SdkService = {
      errorPrefix: 'SNS',
      commands: sns,
      client: {
        send: async (command: unknown) => {
          sent.push((command as sns.PublishCommand).input);
          return { MessageId: 'm-1' };
        },
      },
    };
    const publish = single('arn:aws:states:::sns:publish', { TopicArn: 'arn:aws:sns:us-east-1:123456789012:runs', Message: { run: 'r1', status: 'FAILED' } });
    const result = await runLocally(publish, {}, { handlers: integrationHandlers(publish, { services: { sns: topic } }) });
    expect(result).toMatchObject({ status: 'SUCCEEDED', output: { MessageId: 'm-1' } });
    expect(sent).toEqual([{ TopicArn: 'arn:aws:sns:us-east-1:123456789012:runs', Message: '{"run":"r1","status":"FAILED"}' }]);
  });

  test('an answer the local server cannot give is a harness fault that no Catch hides', async () => {
    const broken: SdkService = { errorPrefix: 'SageMaker', commands: sagemaker, client: { send: () => Promise.reject(new SyntaxError('Unexpected token <')) } };
    const call = single('arn:aws:states:::aws-sdk:sagemaker:describeEndpoint', { EndpointName: 'e' }, true);
    const result = await runLocally(call, {}, { handlers: integrationHandlers(call, { services: { sagemaker: broken } }) });
    expect(result).toMatchObject({ status: 'FAILED', error: 'LocalHarnessError', cause: expect.stringContaining('could not answer describeEndpoint') });
    expect(result.visited).not.toContain('Caught');
  });

  test('what cannot be answered locally is refused before anything runs', () => {
    expect(() => integrationHandlers(definition, { lambdas: { CheckFn: prepare } })).toThrow(/calls sagemaker:createTrainingJob, but no SDK service "sagemaker"/);
    expect(() => integrationHandlers(single('arn:aws:states:::glue:startJobRun.waitForTaskToken', {}), {})).toThrow(/no local integration for Resource/);
    expect(() => integrationHandlers(single('arn:aws:states:::sagemaker:describeTrainingJob', {}), { services: { sagemaker: unreachable } })).toThrow(
      /not an optimized Step Functions integration; use arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob/,
    );
    expect(() => integrationHandlers(single('arn:aws:states:::sagemaker:createModel.sync', {}), { services: { sagemaker: unreachable } })).toThrow(/no \.sync support/);
  });

  test.each([
    ['no local code', {}],
    ['a key that only prefixes the name', { Check: prepare }],
  ])('a Lambda function with %s is refused before anything runs, naming it', (_, lambdas) => {
    expect(() => integrationHandlers(definition, { services: { sagemaker: unreachable }, lambdas })).toThrow(/State Prepare invokes arn:aws:lambda:.*:function:CheckFn[0-9A-F]{8}: expected one local function/);
  });
});
