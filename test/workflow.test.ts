import { Match } from 'aws-cdk-lib/assertions';
import { STATES } from '../lambda/shared/contract';
import { ENDPOINT_POLL_LIMIT, ENDPOINT_POLL_SECONDS } from '../lib/run-definition';
import { ServingContainer } from '../lib/serving-container';
import { synthPipeline } from './support/app';
import { extractDefinition, resolveIntrinsics } from './support/asl';
import { actionsOf, roleStatements, type PolicyStatement } from './support/iam';

/** The workflow's constructs in the synthesized template: what they may do, where they log, what triggers them. */

const pipeline = synthPipeline();
const { stack, template } = pipeline;
const resources = template.toJSON().Resources as Record<string, { Type: string; Properties?: any }>;
const resolved = (value: unknown) => JSON.stringify(resolveIntrinsics(value, resources as never));
const workflowRole = roleStatements(stack, template, stack.workflow.stateMachine.role);
const definition = extractDefinition(template);

/** Every statement of a role that allows one of `actions`, resolved to plain ARNs. */
function allowing(statements: PolicyStatement[], action: string) {
  return statements.filter((s) => actionsOf(s).includes(action)).map((s) => ({ ...s, Resource: JSON.parse(resolved(s.Resource)) }));
}

describe('the state machine', () => {
  test('is a standard JSONPath state machine, logging every event to a vended-logs group, traced by X-Ray', () => {
    template.hasResourceProperties('AWS::StepFunctions::StateMachine', {
      StateMachineType: 'STANDARD',
      LoggingConfiguration: { Level: 'ALL', IncludeExecutionData: true, Destinations: [{ CloudWatchLogsLogGroup: { LogGroupArn: Match.anyValue() } }] },
      TracingConfiguration: { Enabled: true },
    });
    template.hasResourceProperties('AWS::Logs::LogGroup', { LogGroupName: Match.stringLikeRegexp('^/aws/vendedlogs/states/'), RetentionInDays: 90 });
    expect((definition as { QueryLanguage?: string }).QueryLanguage ?? 'JSONPath').toBe('JSONPath');
  });

  test('trains on managed spot with checkpoints under the job name, KMS-encrypted output and encrypted traffic', () => {
    const train = (definition.States[STATES.train] as any).Parameters;
    expect(train).toMatchObject({
      'EnableManagedSpotTraining.$': '$.run.training.spot',
      'StoppingCondition.$': '$.run.training.stoppingCondition',
      'EnableNetworkIsolation.$': '$.run.training.networkIsolation',
      EnableInterContainerTrafficEncryption: true,
      OutputDataConfig: { S3OutputPath: expect.stringMatching(/^s3:\/\/[a-z0-9]+\/models\/$/), KmsKeyId: expect.stringMatching(/^arn:aws:kms:/) },
      CheckpointConfig: { 'S3Uri.$': expect.stringMatching(/^States\.Format\('s3:\/\/[a-z0-9]+\/checkpoints\/\{\}\/', \$\.run\.training\.jobName\)$/) },
    });
    expect(train.AlgorithmSpecification.MetricDefinitions).toEqual(stack.training.metricDefinitions);
  });

  test('retries quota errors for up to half an hour, other errors briefly, and a training job only for quota', () => {
    const retriers = (name: string) => ((definition.States[name] as any).Retry ?? []) as Array<{ ErrorEquals: string[]; IntervalSeconds: number; BackoffRate: number; MaxAttempts: number }>;
    /** Seconds a retrier may wait in all, its jitter aside. */
    const patience = (r: { IntervalSeconds: number; BackoffRate: number; MaxAttempts: number }) =>
      Array.from({ length: r.MaxAttempts }, (_, i) => r.IntervalSeconds * r.BackoffRate ** i).reduce((a, b) => a + b, 0);
    const sagemakerTasks = Object.entries(definition.States).filter(([, state]) => /:sagemaker:/.test((state as any).Resource ?? ''));
    expect(sagemakerTasks.length).toBe(13);
    for (const [name, state] of sagemakerTasks) {
      const [first, ...rest] = retriers(name);
      const generic = (state as any).Resource.includes(':aws-sdk:') ? 'SageMaker.SageMakerException' : 'SageMaker.AmazonSageMakerException';
      if (name !== STATES.findEndpoint) {
        expect([name, first.ErrorEquals]).toEqual([name, ['SageMaker.ResourceLimitExceededException']]);
        expect(patience(first)).toBeGreaterThan(1800);
      }
      // Names SageMaker never gives would be dead retriers; States.ALL would retry mistakes.
      for (const r of rest) expect([name, r.ErrorEquals]).toEqual([name, [generic]]);
      // Replacing a failed endpoint waits for its deletion, which takes minutes.
      const limit = name === STATES.replaceEndpoint ? 600 : 300;
      for (const r of rest) expect([name, patience(r) <= limit]).toEqual([name, true]);
      for (const r of retriers(name)) expect(r.BackoffRate).toBeGreaterThanOrEqual(2);
    }
    expect(retriers(STATES.train).flatMap((r) => r.ErrorEquals)).toEqual(['SageMaker.ResourceLimitExceededException']);
    expect(retriers(STATES.describeEndpoint).flatMap((r) => r.ErrorEquals)).toContain('SageMaker.SageMakerException');
    expect(retriers(STATES.createEndpoint).flatMap((r) => r.ErrorEquals)).toContain('SageMaker.AmazonSageMakerException');
    const prepareRetry = retriers(STATES.prepare) as Array<{ ErrorEquals: string[]; MaxAttempts: number }>;
    // Retriers are tried in order: a refused input or dataset stops at the first, which allows no attempt.
    expect(prepareRetry[0]).toEqual({ ErrorEquals: ['InvalidInput', 'InvalidDataset'], MaxAttempts: 0 });
  });

  test('polls the endpoint every 30-60 s, long enough for the model download and the container start-up', () => {
    expect(ENDPOINT_POLL_SECONDS).toBeGreaterThanOrEqual(30);
    expect(ENDPOINT_POLL_SECONDS).toBeLessThanOrEqual(60);
    expect((definition.States[STATES.waitForEndpoint] as any).Seconds).toBe(ENDPOINT_POLL_SECONDS);
    expect(ENDPOINT_POLL_LIMIT * ENDPOINT_POLL_SECONDS).toBeGreaterThan(
      ServingContainer.MODEL_DATA_DOWNLOAD_TIMEOUT_SECONDS + ServingContainer.STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS,
    );
  });

  test('every failure path ends in the Fail state through Report failure and Notify failure', () => {
    const failed = definition.States[STATES.failed] as any;
    expect(failed).toEqual({ Type: 'Fail', ErrorPath: '$.report.error', CausePath: '$.report.cause' });
    const catches = Object.entries(definition.States).flatMap(([name, state]) => ((state as any).Catch ?? []).map((c: any) => [name, c.Next]));
    const failureStates: string[] = [
      STATES.preparationFailed,
      STATES.trainingFailed,
      STATES.deploymentFailed,
      STATES.endpointFailed,
      STATES.endpointFound,
      STATES.reportFailurePlainly,
      STATES.reportSuccessPlainly,
      STATES.checkEndpoint,
    ];
    const ends = [STATES.succeeded, STATES.failed, STATES.notifyFailure, STATES.deleteEndpointConfig, STATES.deleteModel];
    for (const [name, next] of catches) expect([name, [...failureStates, ...ends].includes(next)]).toEqual([name, true]);
    for (const name of [STATES.preparationFailed, STATES.trainingFailed, STATES.deploymentFailed, STATES.endpointFailed, STATES.endpointNotInService, STATES.endpointTimedOut]) {
      expect([name, (definition.States[name] as any).Next]).toEqual([name, STATES.reportFailure]);
    }
  });
});

describe('the state machine role: least privilege', () => {
  const { statements } = workflowRole;

  test('grants no wildcard action', () => {
    for (const statement of statements) for (const action of actionsOf(statement)) expect(action).not.toMatch(/\*/);
  });

  test('touches only SageMaker resources named with the stack prefix', () => {
    const sagemaker = statements.filter((s) => actionsOf(s).some((a) => a.startsWith('sagemaker:')));
    expect(sagemaker.length).toBeGreaterThan(0);
    for (const statement of sagemaker) {
      const arns = [JSON.parse(resolved(statement.Resource))].flat() as string[];
      for (const arn of arns) expect(arn).toMatch(/^arn:aws:sagemaker:us-east-1:123456789012:(training-job|model|endpoint-config|endpoint)\/lora-\*$/);
    }
  });

  test('a stack with another prefix gets permissions for that prefix only (control)', () => {
    const other = synthPipeline({ namePrefix: 'team2' });
    const { statements: otherStatements } = roleStatements(other.stack, other.template, other.stack.workflow.stateMachine.role);
    const created = otherStatements.find((s) => actionsOf(s).includes('sagemaker:CreateTrainingJob'));
    expect(JSON.stringify(created?.Resource)).toContain('training-job/team2-*');
    expect(JSON.stringify(created?.Resource)).not.toContain('lora-');
  });

  test('passes only the training and endpoint roles, and only to SageMaker', () => {
    const [pass, ...more] = allowing(statements, 'iam:PassRole');
    expect(more).toEqual([]);
    expect(pass.Condition).toEqual({ StringEquals: { 'iam:PassedToService': 'sagemaker.amazonaws.com' } });
    const roleArn = (role: any) => JSON.parse(resolved(stack.resolve(role.roleArn)));
    expect([...pass.Resource].sort()).toEqual([roleArn(stack.training.role), roleArn(stack.serving.role)].sort());
  });

  test('may manage the EventBridge rule that .sync training jobs need, and no other rule', () => {
    const [rule] = allowing(statements, 'events:PutRule');
    expect(actionsOf(rule).sort()).toEqual(['events:DescribeRule', 'events:PutRule', 'events:PutTargets']);
    expect(rule.Resource).toBe('arn:aws:events:us-east-1:123456789012:rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule');
  });

  test('uses the pipeline key only through SNS, and lets SageMaker create grants on it only for AWS resources', () => {
    const kms = statements.filter((s) => actionsOf(s).some((a) => a.startsWith('kms:')));
    expect(kms.map((s) => actionsOf(s).sort())).toEqual([
      ['kms:CreateGrant', 'kms:DescribeKey'],
      ['kms:Decrypt', 'kms:GenerateDataKey'],
    ]);
    expect(kms[0].Condition).toEqual({ Bool: { 'kms:GrantIsForAWSResource': 'true' } });
    expect(kms[1].Condition).toEqual({ StringEquals: { 'kms:ViaService': { 'Fn::Join': ['', ['sns.', { Ref: 'AWS::Region' }, '.amazonaws.com']] } } });
  });
});

describe('the functions', () => {
  test('run Node.js 24 on ARM64 with tracing and their own log group', () => {
    const functions = template.findResources('AWS::Lambda::Function', { Properties: { Runtime: 'nodejs24.x' } });
    expect(Object.keys(functions).sort()).toEqual([
      expect.stringMatching(/^StatusFunction/),
      expect.stringMatching(/^TriggerKickoffFunction/),
      expect.stringMatching(/^WorkflowPrepareFunction/),
      expect.stringMatching(/^WorkflowReportFunction/),
    ]);
    for (const fn of Object.values(functions) as any[]) {
      expect(fn.Properties).toMatchObject({ Architectures: ['arm64'], TracingConfig: { Mode: 'Active' }, LoggingConfig: { LogGroup: { Ref: expect.any(String) } } });
    }
  });

  test('Prepare gets the deploy-time settings, which Prepare itself validates', () => {
    const prepareId = stack.getLogicalId(stack.workflow.prepareFunction.function.node.defaultChild as never);
    const settings = JSON.parse(JSON.parse(resolved(resources[prepareId].Properties.Environment.Variables.SETTINGS)));
    expect(settings).toMatchObject({
      datasetPrefix: 'datasets/',
      triggerFileName: 'dataset.toml',
      settleSeconds: 60,
      namePrefix: 'lora',
      modelType: 'sd15',
      training: { instanceType: 'ml.g4dn.xlarge', spot: true, maxRuntimeSeconds: 3600, maxWaitSeconds: 7200, volumeSizeGb: 50 },
      endpoint: { instanceType: 'ml.g4dn.xlarge', instanceCount: 1, startupHealthCheckTimeoutSeconds: 1200, modelDataDownloadTimeoutSeconds: 1800, loraScale: 1 },
      checkpointExpirationDays: 7,
    });
  });

  test('Prepare reads only the dataset folders', () => {
    const { statements } = roleStatements(stack, template, stack.workflow.prepareFunction.role);
    const s3 = statements.filter((s) => actionsOf(s).some((a) => a.startsWith('s3:')));
    expect(s3.map((s) => actionsOf(s))).toEqual([['s3:ListBucket'], ['s3:ListBucketMultipartUploads'], ['s3:GetObject']]);
    expect(s3[0].Condition).toEqual({ StringLike: { 's3:prefix': ['datasets/*'] } });
    expect(resolved(s3[2].Resource)).toMatch(/\/datasets\/\*"$/);
  });

  test('the status function only reads executions, jobs and endpoints', () => {
    const { statements } = roleStatements(stack, template, stack.status.status.role);
    const actions = statements.flatMap(actionsOf).filter((a) => !a.startsWith('logs:') && !a.startsWith('xray:'));
    expect(actions.sort()).toEqual(['sagemaker:DescribeEndpoint', 'sagemaker:DescribeTrainingJob', 'states:DescribeExecution', 'states:GetExecutionHistory', 'states:ListExecutions']);
  });
});

describe('the S3 trigger', () => {
  test('invokes the kickoff function only for <datasetPrefix>…/<triggerFileName> creations', () => {
    template.hasResourceProperties('Custom::S3BucketNotifications', {
      NotificationConfiguration: {
        LambdaFunctionConfigurations: [
          {
            Events: ['s3:ObjectCreated:*'],
            Filter: { Key: { FilterRules: [{ Name: 'suffix', Value: '/dataset.toml' }, { Name: 'prefix', Value: 'datasets/' }] } },
          },
        ],
      },
    });
  });

  test('follows the configured prefix and trigger file name (control)', () => {
    const other = synthPipeline({ datasetPrefix: 'in/', triggerFileName: 'go.toml' });
    other.template.hasResourceProperties('Custom::S3BucketNotifications', {
      NotificationConfiguration: {
        LambdaFunctionConfigurations: [Match.objectLike({ Filter: { Key: { FilterRules: [{ Name: 'suffix', Value: '/go.toml' }, { Name: 'prefix', Value: 'in/' }] } } })],
      },
    });
  });

  test('keeps the events it could not handle in an encrypted dead-letter queue', () => {
    const queues = template.findResources('AWS::SQS::Queue');
    expect(Object.values(queues)).toHaveLength(1);
    const keyId = stack.getLogicalId(stack.storage.key.node.defaultChild as never);
    expect((Object.values(queues)[0] as any).Properties).toMatchObject({ KmsMasterKeyId: { 'Fn::GetAtt': [keyId, 'Arn'] }, MessageRetentionPeriod: 14 * 24 * 3600 });
    template.hasResourceProperties('AWS::Lambda::Function', { DeadLetterConfig: { TargetArn: Match.anyValue() } });
    // Lambda sends to the queue as the function: its role must be able to encrypt with the queue's key.
    const { statements } = roleStatements(stack, template, stack.trigger.kickoff.role);
    const kms = statements.filter((s) => actionsOf(s).some((a) => a.startsWith('kms:')));
    expect(kms.map((s) => [actionsOf(s).sort(), resolved(s.Condition)])).toEqual([[['kms:Decrypt', 'kms:GenerateDataKey'], '{"StringEquals":{"kms:ViaService":"sqs.us-east-1.amazonaws.com"}}']]);
    expect(statements.some((s) => actionsOf(s).includes('sqs:SendMessage'))).toBe(true);
  });
});

describe('notifications', () => {
  test('the topic is encrypted with the pipeline key and refuses plain HTTP', () => {
    template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: Match.anyValue() });
    template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]) },
    });
  });

  test('an e-mail address in the configuration is subscribed; none, none is', () => {
    expect(Object.keys(template.findResources('AWS::SNS::Subscription'))).toHaveLength(0);
    const withEmail = synthPipeline({ notificationEmail: 'ml-team@example.com' });
    withEmail.template.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'ml-team@example.com' });
  });
});

test('the stack outputs what a user needs to start and follow runs', () => {
  const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
  expect(Object.keys(outputs)).toEqual(expect.arrayContaining(['DatasetsBucketName', 'ArtifactsBucketName', 'StateMachineArn', 'StatusFunctionName', 'ConsoleInput', 'NotificationTopicArn']));
  expect(JSON.parse(String(outputs.ConsoleInput.Value))).toEqual({ dataset: 'pokemon' });
});
