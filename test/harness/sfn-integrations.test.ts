import { Template } from 'aws-cdk-lib/assertions';
import * as sagemaker from '@aws-sdk/client-sagemaker';
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

const describeWithMoto = motoAvailable() ? describe : describe.skip;

describeWithMoto('integrationHandlers against moto, through the real AWS SDK v3 clients', () => {
  let moto: MotoServer;
  let client: sagemaker.SageMakerClient;
  let service: SdkService;

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
    const handlers = integrationHandlers(definition, { services: { sagemaker: service }, lambdas: { CheckFn: prepare } });
    const run = await runLocally(definition, { dataset: 'pokemon' }, { handlers });
    expect(run.status).toBe('SUCCEEDED');
    expect(run.output).toMatchObject({ prepare: { ready: true, jobName: 'job-pokemon' }, training: { status: 'Completed' } });

    const job = await client.send(new sagemaker.DescribeTrainingJobCommand({ TrainingJobName: 'job-pokemon' }));
    expect(job.EnableManagedSpotTraining).toBe(true);
    expect(job.StoppingCondition).toEqual({ MaxRuntimeInSeconds: 3600, MaxWaitTimeInSeconds: 7200 });
    expect(job.CheckpointConfig?.S3Uri).toMatch(/^s3:\/\/[a-z0-9]+\/checkpoints\/job-pokemon\/$/);
  });

  test('a misspelt request field is dropped as in AWS, and reading the job back shows it', async () => {
    const misspelt = JSON.parse(JSON.stringify(definition).replace('"EnableManagedSpotTraining"', '"EnableManagedSpotTrainng"')) as StateMachineDefinition;
    const handlers = integrationHandlers(misspelt, { services: { sagemaker: service }, lambdas: { CheckFn: prepare } });
    expect((await runLocally(misspelt, { dataset: 'typo' }, { handlers })).status).toBe('SUCCEEDED');
    const job = await client.send(new sagemaker.DescribeTrainingJobCommand({ TrainingJobName: 'job-typo' }));
    expect(job.EnableManagedSpotTraining).not.toBe(true);
  });

  test('failFirst: a quota error twice is retried, then the job is created', async () => {
    const handlers = integrationHandlers(definition, { services: { sagemaker: service }, lambdas: { CheckFn: prepare } });
    handlers.Train = failFirst(2, taskError('SageMaker.ResourceLimitExceededException', 'ml.g4dn.xlarge for spot training job usage'), handlers.Train);
    const run = await runLocally(definition, { dataset: 'busy' }, { handlers });
    expect(run.status).toBe('SUCCEEDED');
    expect(run.retries).toEqual({ Train: 2 });
  });

  test('an SDK error is raised under its Step Functions name', async () => {
    const describeEndpoint: StateMachineDefinition = {
      StartAt: 'Describe',
      States: {
        Describe: {
          Type: 'Task',
          Resource: 'arn:aws:states:::aws-sdk:sagemaker:describeEndpoint',
          Parameters: { EndpointName: 'missing' },
          End: true,
        },
      },
    } as unknown as StateMachineDefinition;
    assertValidAsl(describeEndpoint);
    const run = await runLocally(describeEndpoint, {}, { handlers: integrationHandlers(describeEndpoint, { services: { sagemaker: service } }) });
    expect(run).toMatchObject({ status: 'FAILED', error: 'SageMaker.ValidationException' });
    expect(run.cause).toContain("Could not find endpoint");
  });
});

describe('integrationHandlers without a server', () => {
  test('a failed .sync job fails the task with States.TaskFailed and the job description as cause', async () => {
    const failing: SdkService = {
      errorPrefix: 'SageMaker',
      commands: sagemaker,
      client: {
        send: async (command: unknown) =>
          command instanceof sagemaker.DescribeTrainingJobCommand
            ? { TrainingJobStatus: 'Failed', FailureReason: 'AlgorithmError: no images in the dataset channel' }
            : { TrainingJobArn: 'arn:aws:sagemaker:us-east-1:123456789012:training-job/x' },
      },
    };
    const handlers = integrationHandlers(definition, { services: { sagemaker: failing }, lambdas: { CheckFn: prepare } });
    const run = await runLocally(definition, { dataset: 'broken' }, { handlers });
    expect(run).toMatchObject({ status: 'FAILED', error: 'TrainingFailed' });
    expect(JSON.parse(run.cause ?? '{}')).toMatchObject({ FailureReason: 'AlgorithmError: no images in the dataset channel' });
  });

  test("a Lambda function's error surfaces under its type, with the runtime's error document as cause", async () => {
    const invalid = () => {
      throw taskError('InvalidDataset', 'datasets/pokemon/ has no images');
    };
    const unreachable: SdkService = { errorPrefix: 'SageMaker', commands: sagemaker, client: { send: () => Promise.reject(new Error('not reached')) } };
    const handlers = integrationHandlers(definition, { services: { sagemaker: unreachable }, lambdas: { CheckFn: invalid } });
    const run = await runLocally(definition, { dataset: 'pokemon' }, { handlers });
    expect(run.error).toBe('InvalidDataset');
    expect(JSON.parse(run.cause ?? '{}')).toEqual({ errorType: 'InvalidDataset', errorMessage: 'datasets/pokemon/ has no images', trace: [] });
    expect(run.visited).toEqual(['Prepare']);
  });

  test('what cannot be answered locally is refused before anything runs', () => {
    expect(() => integrationHandlers(definition, { lambdas: { CheckFn: prepare } })).toThrow(/calls sagemaker:createTrainingJob, but no SDK service "sagemaker"/);
    const unknownResource = { StartAt: 'X', States: { X: { Type: 'Task', Resource: 'arn:aws:states:::glue:startJobRun.waitForTaskToken', End: true } } };
    expect(() => integrationHandlers(unknownResource as unknown as StateMachineDefinition, {})).toThrow(/no local integration for Resource/);
  });

  test('a Lambda function with no local code, or with two, is an error naming the function', async () => {
    const train = { errorPrefix: 'SageMaker', commands: sagemaker, client: { send: async () => ({}) } };
    const noneOrTwo: Array<Record<string, typeof prepare>> = [{}, { Check: prepare, CheckF: prepare }];
    for (const lambdas of noneOrTwo) {
      const handlers = integrationHandlers(definition, { services: { sagemaker: train }, lambdas });
      await expect(runLocally(definition, { dataset: 'x' }, { handlers })).resolves.toMatchObject({
        status: 'FAILED',
        cause: expect.stringMatching(/invokes arn:aws:lambda:.*CheckFn.*: expected one local function/),
      });
    }
  });
});
