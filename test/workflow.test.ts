import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import { Match } from 'aws-cdk-lib/assertions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as sns from 'aws-cdk-lib/aws-sns';
import { parseRegistryEvent } from '../lambda/registry/event';
import { LORA_ERRORS, LORA_REFUSALS, PHASE_OF_STATE, SAMPLES_ARCHIVE_INVALID, STATES } from '../lambda/shared/contract';
import { CLAIM_LEASE_MS } from '../lambda/registry/register';
import { ENDPOINT_POLL_LIMIT, ENDPOINT_POLL_SECONDS, WARMING_RETRY } from '../lib/run-definition';
import { REGISTRY_BUSY_RETRY } from '../lib/run-stages/register-lora';
import { intrinsicLiteral } from '../lib/run-stages/publish-samples';
import { LoraWorkflow, type LoraWorkflowProps } from '../lib/lora-workflow';
import { PipelineStorage } from '../lib/pipeline-storage';
import { ServingContainer } from '../lib/serving-container';
import { TrainingContainer } from '../lib/training-container';
import { SamplesArchiveInvalid } from '../lambda/samples/publish';
import { createTestApp, synthPipeline } from './support/app';
import { PREPARE_SETTINGS } from './support/prepare';
import { extractDefinition, resolveIntrinsics } from './support/asl';
import { actionsOf, allows, roleStatements, type PolicyStatement } from './support/iam';
import { runLocally } from './support/local-sfn';

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

/** The states a run can reach from `from`, through Next, Choices, Default and Catch. */
function reachable(states: Record<string, any>, from: string): Set<string> {
  const seen = new Set<string>();
  const todo = [from];
  while (todo.length > 0) {
    const name = todo.pop()!;
    if (seen.has(name)) continue;
    seen.add(name);
    const state = states[name];
    todo.push(...[state.Next, state.Default, ...(state.Choices ?? []).map((c: any) => c.Next), ...(state.Catch ?? []).map((c: any) => c.Next)].filter(Boolean));
  }
  return seen;
}

/** The SageMaker calls that create or change a model, an endpoint config or an endpoint. */
const DEPLOYING = /:sagemaker:(createModel|createEndpointConfig|createEndpoint|updateEndpoint)$/;

const SHARED_ENDPOINT_ARN = 'arn:aws:sagemaker:us-east-1:123456789012:endpoint/lora-shared-sd15';
const SHARED_COMPONENT_ARN = 'arn:aws:sagemaker:us-east-1:123456789012:inference-component/lora-shared-sd15';

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
      CheckpointConfig: { 'S3Uri.$': expect.stringMatching(/^States\.Format\('s3:\/\/[a-z0-9]+\/checkpoints\/\{\}\/', \$\.run\.training\.jobName\)$/) },
    });
    expect(train.AlgorithmSpecification.MetricDefinitions).toEqual(stack.training.metricDefinitions);
    // Exactly these: every run gets the default GZIP model.tar.gz (the registry function copies the
    // LoRA out of it), and a field the optimized integration does not accept would fail the deploy.
    expect(train.OutputDataConfig).toEqual({ S3OutputPath: expect.stringMatching(/^s3:\/\/[a-z0-9]+\/models\/$/), KmsKeyId: expect.stringMatching(/^arn:aws:kms:/) });
  });

  test("passes the job Prepare's environment (HF_TOKEN_SECRET_ID when a token is configured), never a token of its own", () => {
    const train = (definition.States[STATES.train] as any).Parameters;
    expect(train['Environment.$']).toBe('$.run.training.environment');
    expect(train).not.toHaveProperty('Environment');
    expect(JSON.stringify(train)).not.toMatch(/HF_TOKEN|secretsmanager/i);
  });

  test('retries quota errors for up to half an hour, other errors briefly, and a training job only for quota', () => {
    const retriers = (name: string) => ((definition.States[name] as any).Retry ?? []) as Array<{ ErrorEquals: string[]; IntervalSeconds: number; BackoffRate: number; MaxAttempts: number }>;
    /** Seconds a retrier may wait in all, its jitter aside. */
    const patience = (r: { IntervalSeconds: number; BackoffRate: number; MaxAttempts: number }) =>
      Array.from({ length: r.MaxAttempts }, (_, i) => r.IntervalSeconds * r.BackoffRate ** i).reduce((a, b) => a + b, 0);
    const sagemakerTasks = Object.entries(definition.States).filter(([, state]) => /:sagemaker:/.test((state as any).Resource ?? ''));
    expect(sagemakerTasks.length).toBe(14);
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
      ServingContainer.MODEL_DATA_DOWNLOAD_TIMEOUT_SECONDS + ServingContainer.MAX_STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS,
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
      STATES.registrationFailed,
      STATES.loraCheckFailed,
      STATES.promotionFailed,
      STATES.smokeTestFailed,
      STATES.endpointFound,
      STATES.reportFailurePlainly,
      STATES.reportSuccessPlainly,
      STATES.checkEndpoint,
    ];
    const ends = [STATES.succeeded, STATES.failed, STATES.notifyFailure, STATES.deleteEndpointConfig, STATES.deleteModel, STATES.rollBackFailed];
    // Publish samples alone goes on after a failure: the run serves its LoRA without samples.
    const goesOn = catches.filter(([name]) => name === STATES.publishSamples);
    expect(goesOn).toEqual([[STATES.publishSamples, STATES.servingMode]]);
    for (const [name, next] of catches.filter(([n]) => n !== STATES.publishSamples)) expect([name, [...failureStates, ...ends].includes(next)]).toEqual([name, true]);
    const recorded = [STATES.preparationFailed, STATES.trainingFailed, STATES.deploymentFailed, STATES.endpointFailed, STATES.endpointNotInService, STATES.endpointTimedOut];
    for (const name of [...recorded, STATES.registrationFailed, STATES.loraCheckFailed, STATES.promotionFailed, STATES.smokeTestFailed]) {
      expect([name, (definition.States[name] as any).Next]).toEqual([name, STATES.reportFailure]);
    }
    expect(Object.fromEntries([STATES.registrationFailed, STATES.loraCheckFailed, STATES.promotionFailed, STATES.smokeTestFailed].map((name) => [name, (definition.States[name] as any).Parameters.stage]))).toEqual({
      [STATES.registrationFailed]: 'register',
      [STATES.loraCheckFailed]: 'check',
      [STATES.promotionFailed]: 'promote',
      [STATES.smokeTestFailed]: 'smoke',
    });
  });

  test('every state of the definition is named in STATES and has a phase, so the status function can place a run in it', () => {
    const phaseOf = (name: string) => (Object.prototype.hasOwnProperty.call(PHASE_OF_STATE, name) ? PHASE_OF_STATE[name as keyof typeof PHASE_OF_STATE] : undefined);
    const names = Object.keys(definition.States);
    expect(names.filter((name) => phaseOf(name) === undefined)).toEqual([]);
    expect([STATES.rollBackEndpoint, STATES.rollBackFailed].map(phaseOf)).toEqual(['FAILED', 'FAILED']);
    // Control: a state the contract does not name has none.
    expect(phaseOf('A state added later')).toBeUndefined();
  });

  test('a failed smoke test on an updated endpoint rolls it back to the previous config, retried, best effort, the failure still notified', () => {
    const rollBack = definition.States[STATES.rollBackEndpoint] as any;
    expect(rollBack).toMatchObject({
      Type: 'Task',
      Resource: 'arn:aws:states:::sagemaker:updateEndpoint',
      Parameters: { 'EndpointName.$': '$.report.cleanup.rollBack.EndpointName', 'EndpointConfigName.$': '$.report.cleanup.rollBack.EndpointConfigName' },
      ResultPath: null,
      Next: STATES.notifyFailure,
      Catch: [{ ErrorEquals: ['States.ALL'], ResultPath: '$.cleanupError', Next: STATES.rollBackFailed }],
    });
    // Quota, then throttling and internal errors: the optimized integration's generic name, a minute at most.
    expect(rollBack.Retry.map((r: any) => r.ErrorEquals)).toEqual([['SageMaker.ResourceLimitExceededException'], ['SageMaker.AmazonSageMakerException']]);
    expect(rollBack.Retry[1]).toEqual({ ErrorEquals: ['SageMaker.AmazonSageMakerException'], IntervalSeconds: 10, BackoffRate: 2, MaxAttempts: 3, JitterStrategy: 'FULL' });
    // Nothing of this run is deleted after a roll-back: the endpoint is still moving off its config.
    expect([...reachable(definition.States, STATES.rollBackEndpoint)].filter((name) => /:delete/.test((definition.States[name] as any).Resource ?? ''))).toEqual([]);
    // A failed roll-back keeps Report's subject, Error and Cause, puts the failure first in the message, and notifies.
    expect(definition.States[STATES.rollBackFailed]).toMatchObject({
      Type: 'Pass',
      ResultPath: '$.report',
      Parameters: { 'subject.$': '$.report.subject', 'error.$': '$.report.error', 'cause.$': '$.report.cause', 'message.$': expect.stringMatching(/^States\.Format\('THE ROLL-BACK FAILED: .*States\.JsonToString\(\$\.cleanupError\), \$\.report\.message\)$/) },
      Next: STATES.notifyFailure,
    });
    expect(reachable(definition.States, STATES.rollBackFailed).has(STATES.failed)).toBe(true);
  });

  test('the state machine may roll a run\'s endpoint back to a previous run\'s config, with no grant beyond the prefix', () => {
    const update = allowing(workflowRole.statements, 'sagemaker:UpdateEndpoint');
    const allowed = update.filter((s) => (s as { Effect?: string }).Effect !== 'Deny');
    const arn = (kind: string, name: string) => `arn:aws:sagemaker:us-east-1:123456789012:${kind}/${name}`;
    expect(allows(allowed, 'sagemaker:UpdateEndpoint', arn('endpoint', 'lora-pokemon'))).toBe(true);
    expect(allows(allowed, 'sagemaker:UpdateEndpoint', arn('endpoint-config', 'lora-pokemon-20241231000000-abcdef'))).toBe(true);
    // Negative controls: another team's endpoint or config is not covered.
    expect(allows(allowed, 'sagemaker:UpdateEndpoint', arn('endpoint', 'other-team'))).toBe(false);
    expect(allows(allowed, 'sagemaker:UpdateEndpoint', arn('endpoint-config', 'other-team-1'))).toBe(false);
  });
});

describe('the state machine role: least privilege', () => {
  const { statements } = workflowRole;

  test('grants no wildcard action', () => {
    for (const statement of statements) for (const action of actionsOf(statement)) expect(action).not.toMatch(/\*/);
  });

  test('touches only SageMaker resources named with the stack prefix', () => {
    const sagemaker = statements.filter((s) => (s as { Effect?: string }).Effect !== 'Deny' && actionsOf(s).some((a) => a.startsWith('sagemaker:')));
    expect(sagemaker.length).toBeGreaterThan(0);
    for (const statement of sagemaker) {
      const arns = [JSON.parse(resolved(statement.Resource))].flat() as string[];
      for (const arn of arns) expect(arn).toMatch(/^arn:aws:sagemaker:us-east-1:123456789012:(training-job|model|endpoint-config|endpoint)\/lora-\*$/);
    }
  });

  test('may never deploy to, replace or delete the shared endpoint, though its name has the prefix', () => {
    const denied = statements.filter((s) => (s as { Effect?: string }).Effect === 'Deny');
    expect(denied.map((s) => [actionsOf(s).sort(), JSON.parse(resolved(s.Resource))])).toEqual([
      [['sagemaker:CreateEndpoint', 'sagemaker:DeleteEndpoint', 'sagemaker:UpdateEndpoint'], SHARED_ENDPOINT_ARN],
    ]);
    // Named, not read from the endpoint: the role's policy, and so the state machine, do not wait for the endpoint's creation.
    expect(JSON.stringify(denied[0].Resource)).not.toContain('Fn::GetAtt');
    // The allow it overrides does cover the shared endpoint's name (control).
    const [deploy] = allowing(statements, 'sagemaker:UpdateEndpoint').filter((s) => (s as { Effect?: string }).Effect !== 'Deny');
    const covers = (pattern: string) => new RegExp(`^${pattern.replace(/\*/g, '.*')}$`).test(SHARED_ENDPOINT_ARN);
    expect(([deploy.Resource].flat() as string[]).some(covers)).toBe(true);
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
      expect.stringMatching(/^WorkflowLoraCheckFunction/),
      expect.stringMatching(/^WorkflowPrepareFunction/),
      expect.stringMatching(/^WorkflowRegistryFunction/),
      expect.stringMatching(/^WorkflowReportFunction/),
      expect.stringMatching(/^WorkflowSamplesFunction/),
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
      endpoint: {
        mode: 'shared',
        shared: { endpointName: 'lora-shared-sd15', inferenceComponentName: 'lora-shared-sd15' },
        instanceType: 'ml.g4dn.xlarge',
        instanceCount: 1,
        startupHealthCheckTimeoutSeconds: 1200,
        modelDataDownloadTimeoutSeconds: 1800,
        loraScale: 1,
      },
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

  test('the status function only reads executions, jobs, endpoints, the registry, and (for its links) samples and smoke images', () => {
    const { statements } = roleStatements(stack, template, stack.status.status.role);
    const actions = statements.flatMap(actionsOf).filter((a) => !a.startsWith('logs:') && !a.startsWith('xray:'));
    expect(actions.sort()).toEqual([
      'dynamodb:BatchGetItem',
      'dynamodb:GetItem',
      'dynamodb:Query',
      'kms:Decrypt',
      'kms:Decrypt',
      's3:GetObject',
      'sagemaker:DescribeEndpoint',
      'sagemaker:DescribeTrainingJob',
      'states:DescribeExecution',
      'states:GetExecutionHistory',
      'states:ListExecutions',
    ]);
  });

  test('the status function reads the registry table and nothing else of DynamoDB, and can write nothing', () => {
    const plain = (role: Parameters<typeof roleStatements>[2]) => roleStatements(stack, template, role).statements.map((s) => ({ ...s, Resource: JSON.parse(resolved(s.Resource)), Condition: s.Condition && JSON.parse(resolved(s.Condition)) }));
    const status = plain(stack.status.status.role);
    const tableArn = JSON.parse(resolved(stack.resolve(stack.registry.table.tableArn))) as string;
    const keyArn = JSON.parse(resolved(stack.resolve(stack.storage.key.keyArn))) as string;
    expect(status.filter((s) => actionsOf(s).some((a) => /^(dynamodb|kms):/.test(a))).map((s) => [actionsOf(s).sort(), s.Resource, s.Condition])).toEqual([
      [['dynamodb:BatchGetItem', 'dynamodb:GetItem', 'dynamodb:Query'], tableArn, undefined],
      [['kms:Decrypt'], keyArn, { StringEquals: { 'kms:ViaService': 'dynamodb.us-east-1.amazonaws.com' } }],
      // Its links to samples and smoke images.
      [['kms:Decrypt'], keyArn, { StringEquals: { 'kms:ViaService': 's3.us-east-1.amazonaws.com' } }],
    ]);
    const environment = template.toJSON().Resources[stack.getLogicalId(stack.status.status.function.node.defaultChild as never)].Properties.Environment.Variables;
    expect(JSON.parse(resolved(environment.LORA_REGISTRY_TABLE))).toBe(JSON.parse(resolved(stack.resolve(stack.registry.table.tableName))));
    const writes = ['dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem', 'dynamodb:BatchWriteItem', 'dynamodb:Scan'];
    expect(allows(status, 'dynamodb:GetItem', tableArn)).toBe(true);
    expect(writes.filter((action) => allows(status, action, tableArn))).toEqual([]);
    expect(['kms:Encrypt', 'kms:GenerateDataKey'].filter((action) => allows(status, action, keyArn))).toEqual([]);
    expect(allows(status, 'dynamodb:GetItem', tableArn.replace(/table\/.*/, 'table/AnotherTable'))).toBe(false);
    // Control: the registry function's role, which writes, passes the same write check.
    expect(allows(plain(stack.workflow.registryFunction.role), 'dynamodb:PutItem', tableArn)).toBe(true);
  });
});

describe('the shared path (endpoint.mode shared, the default)', () => {
  const states = definition.States as Record<string, any>;
  // payloadResponseOnly: the task's Resource is the function, its Parameters the payload.
  const invoked = (name: string) => states[name].Resource;
  const functionArn = (fn: { node: { defaultChild?: unknown } }) => `arn:aws:lambda:us-east-1:123456789012:function:${stack.getLogicalId(fn.node.defaultChild as never)}`;

  test('after training and Publish samples, Serving mode? sends a shared run to Register LoRA and any other to the dedicated deployment', () => {
    expect(states[STATES.train].Next).toBe(STATES.publishSamples);
    expect(states[STATES.publishSamples].Next).toBe(STATES.servingMode);
    expect(states[STATES.servingMode]).toEqual({
      Type: 'Choice',
      Choices: [{ Variable: '$.run.serving.mode', StringEquals: 'shared', Next: STATES.registerLora }],
      Default: STATES.createModel,
    });
  });

  test('register → try on the shared endpoint → make current → report success, each with the payload its function takes', () => {
    expect([STATES.registerLora, STATES.tryLora, STATES.makeLoraCurrent].map((name) => states[name].Next)).toEqual([STATES.tryLora, STATES.makeLoraCurrent, STATES.reportSuccess]);
    expect(states[STATES.registerLora]).toMatchObject({
      Parameters: {
        action: 'register',
        'run.$': '$.run',
        'training.$': '$.training',
        execution: { 'name.$': '$$.Execution.Name', 'startTime.$': '$$.Execution.StartTime', 'arn.$': '$$.Execution.Id' },
      },
      ResultPath: '$.lora',
    });
    expect(states[STATES.tryLora]).toMatchObject({
      Parameters: {
        'endpointName.$': '$.run.serving.endpointName',
        'inferenceComponentName.$': '$.run.serving.inferenceComponentName',
        lora: { 'name.$': '$.lora.name', 'version.$': '$.lora.version' },
        'modelType.$': '$.run.modelType',
      },
      ResultPath: '$.check',
    });
    expect(states[STATES.makeLoraCurrent]).toMatchObject({ Parameters: { action: 'promote', 'name.$': '$.lora.name', 'version.$': '$.lora.version' }, ResultPath: '$.promotion' });
    expect(invoked(STATES.registerLora)).toBe(functionArn(stack.workflow.registryFunction.function));
    expect(invoked(STATES.makeLoraCurrent)).toBe(functionArn(stack.workflow.registryFunction.function));
    expect(invoked(STATES.tryLora)).toBe(functionArn(stack.workflow.checkFunction!.function));
    // Report success hears from either mode; what the other mode makes is null from Read input on.
    expect(states[STATES.reportSuccess].Parameters).toMatchObject({ 'endpoint.$': '$.endpoint', 'lora.$': '$.lora', 'check.$': '$.check', 'promotion.$': '$.promotion' });
    expect(states[STATES.readInput].Parameters).toMatchObject({ endpoint: null, lora: null, check: null, promotion: null });
  });

  type Retrier = { ErrorEquals: string[]; IntervalSeconds?: number; MaxAttempts?: number; BackoffRate?: number; MaxDelaySeconds?: number; JitterStrategy?: string };
  /** The retrier Step Functions applies to `error`: the first that lists it, or States.ALL (no States.* error but Timeout and TaskFailed are ours). */
  const retrierFor = (state: string, error: string): Retrier | undefined =>
    (states[state].Retry as Retrier[]).find((r) => r.ErrorEquals.includes(error) || r.ErrorEquals.includes('States.ALL'));
  /** How many times `error` is retried at `state` (ASL's MaxAttempts defaults to 3). */
  const attempts = (state: string, error: string) => {
    const retrier = retrierFor(state, error);
    return retrier === undefined ? 0 : (retrier.MaxAttempts ?? 3);
  };
  // What the functions can throw beyond their own errors: the SDKs' (DynamoDB, S3 streams, SageMaker Runtime), Node's socket errors, Lambda's.
  const PASSING = [
    'ThrottlingException', 'ProvisionedThroughputExceededException', 'RequestLimitExceeded', 'InternalServerError', 'TransactionCanceledException',
    'SlowDown', 'InternalError', 'TimeoutError', 'Error', 'S3ServiceException',
    'ServiceUnavailable', 'InternalFailure', 'InternalDependencyException',
    'Lambda.ServiceException', 'Lambda.SdkClientException', 'Lambda.TooManyRequestsException', 'Lambda.Unknown',
  ];
  const OWN_PASSING = Object.values(LORA_ERRORS).filter((name) => !LORA_REFUSALS.includes(name));

  test.each([STATES.registerLora, STATES.makeLoraCurrent, STATES.rejectLora, STATES.tryLora, STATES.smokeTest])('%s: every error but a refusal is retried; a refusal never', (state) => {
    const retried = [...OWN_PASSING, ...PASSING].filter((error) => attempts(state, error) === 0);
    expect(retried).toEqual([]);
    expect(LORA_REFUSALS.filter((error) => attempts(state, error) > 0)).toEqual([]);
    // The smoke test's verdict is among the refusals: the same images would come again.
    expect(attempts(state, LORA_ERRORS.smokeTestFailed)).toBe(0);
    // Control: the refusals are among the names States.ALL would catch, so their own retrier must come first.
    expect((states[state].Retry as Retrier[]).some((r) => r.ErrorEquals.includes('States.ALL'))).toBe(true);
  });

  test('the check waits for a warming endpoint every minute for 20 minutes, and for a busy one with backoff; the registry waits out a claim', () => {
    expect(retrierFor(STATES.tryLora, 'SharedEndpointWarming')).toEqual({ ErrorEquals: ['SharedEndpointWarming'], IntervalSeconds: 60, MaxAttempts: 20, BackoffRate: 1 });
    expect(WARMING_RETRY.interval.toSeconds() * WARMING_RETRY.maxAttempts).toBe(1200);
    expect(retrierFor(STATES.tryLora, 'SharedEndpointBusy')).toMatchObject({ ErrorEquals: ['SharedEndpointBusy'], BackoffRate: 2, MaxAttempts: 8, JitterStrategy: 'FULL' });
    expect(retrierFor(STATES.registerLora, 'RegistryBusy')).toMatchObject({ ErrorEquals: ['RegistryBusy'], IntervalSeconds: 10, MaxAttempts: 12, MaxDelaySeconds: 120 });
    // A duplicate registration waits longer than a claim can last, so it sees the first one's version.
    const { interval, backoffRate, maxDelay, maxAttempts } = REGISTRY_BUSY_RETRY;
    const waits = Array.from({ length: maxAttempts }, (_, i) => Math.min(interval.toSeconds() * backoffRate ** i, maxDelay.toSeconds()));
    expect(waits.reduce((sum, w) => sum + w, 0) * 1000).toBeGreaterThan(CLAIM_LEASE_MS);
    // The smoke test's verdict is caught first, into its own stage; anything else is the check's.
    expect(states[STATES.tryLora].Catch).toEqual([
      { ErrorEquals: ['SmokeTestFailed'], ResultPath: '$.error', Next: STATES.smokeTestFailed },
      { ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: STATES.loraCheckFailed },
    ]);
  });

  test('the smoke test: Try LoRA and Smoke test the endpoint send the check function the run\'s model, job and samples; a dedicated run is smoke-tested once in service, then reported', () => {
    // The base model too: a FLUX.1 variant's steps and guidance follow it.
    const smokeFields = { 'modelType.$': '$.run.modelType', 'baseModel.$': '$.run.baseModel', 'trainingJobName.$': '$.run.training.jobName', 'samples.$': '$.samples' };
    expect(states[STATES.tryLora].Parameters).toEqual({
      mode: 'shared',
      'endpointName.$': '$.run.serving.endpointName',
      'inferenceComponentName.$': '$.run.serving.inferenceComponentName',
      lora: { 'name.$': '$.lora.name', 'version.$': '$.lora.version' },
      ...smokeFields,
    });
    expect(states[STATES.smokeTest]).toMatchObject({ Parameters: { mode: 'dedicated', 'endpointName.$': '$.run.serving.endpointName', ...smokeFields }, ResultPath: '$.smoke', Next: STATES.reportSuccess });
    expect(invoked(STATES.smokeTest)).toBe(functionArn(stack.workflow.checkFunction.function));
    const inService = states[STATES.endpointReady].Choices[0];
    expect(inService.Next).toBe(STATES.smokeTest);
    expect(states[STATES.smokeTest].Catch).toEqual([{ ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: STATES.smokeTestFailed }]);
    // Up to 12 minutes of back-off (15 s doubling, each wait capped at 2 min), as the README says.
    expect(retrierFor(STATES.smokeTest, 'EndpointBusy')).toEqual({ ErrorEquals: ['EndpointBusy'], IntervalSeconds: 15, BackoffRate: 2, MaxDelaySeconds: 120, MaxAttempts: 8, JitterStrategy: 'FULL' });
    expect(states[STATES.reportSuccess].Parameters).toMatchObject({ 'samples.$': '$.samples', 'smoke.$': '$.smoke' });
    expect(states[STATES.readInput].Parameters).toMatchObject({ samples: null, smoke: null });
  });

  test('Publish samples: the samples function with the job name, retried on anything, and any failure recorded at $.samples as the run goes on', () => {
    expect(states[STATES.publishSamples]).toMatchObject({ Parameters: { 'trainingJobName.$': '$.run.training.jobName' }, ResultPath: '$.samples' });
    // The run's dataset folder, where generated captions are written back: the datasets bucket and the folder under the prefix.
    expect(states[STATES.publishSamples].Parameters.datasetFolder).toEqual({
      bucket: JSON.parse(resolved(stack.resolve(stack.storage.datasetsBucket.bucketName))),
      'prefix.$': "States.Format('datasets/{}/', $.run.dataset.name)",
    });
    expect(invoked(STATES.publishSamples)).toBe(functionArn(stack.workflow.samplesFunction.function));
    expect(attempts(STATES.publishSamples, 'SlowDown')).toBe(3);
    // The function's own name for a corrupt archive, which no retry can mend.
    expect(new SamplesArchiveInvalid('x').name).toBe(SAMPLES_ARCHIVE_INVALID);
    expect(attempts(STATES.publishSamples, SAMPLES_ARCHIVE_INVALID)).toBe(0);
    expect(states[STATES.publishSamples].Catch).toEqual([{ ErrorEquals: ['States.ALL'], ResultPath: '$.samples', Next: STATES.servingMode }]);
  });

  test('a dataset prefix with quotes or parentheses gives the folder as is (the intrinsic string escaped)', async () => {
    const prefix = "team's-(data)/";
    const { template: other } = synthPipeline({ datasetPrefix: prefix });
    const parameters = (extractDefinition(other).States[STATES.publishSamples] as any).Parameters;
    const runPass = (params: unknown) =>
      runLocally({ StartAt: 'P', States: { P: { Type: 'Pass', Parameters: params, End: true } } } as never, { run: { training: { jobName: 'job-1' }, dataset: { name: 'poke' } } }, { handlers: {} });
    const result = await runPass(parameters);
    expect(result.output).toMatchObject({ trainingJobName: 'job-1', datasetFolder: { prefix: "team's-(data)/poke/" } });
    // Negative control: the prefix unescaped in the intrinsic fails the state.
    const unescaped = { ...parameters, datasetFolder: { ...parameters.datasetFolder, 'prefix.$': `States.Format('${prefix}{}/', $.run.dataset.name)` } };
    const broken = await runPass(unescaped).catch((error: Error) => ({ status: 'FAILED', output: undefined, message: error.message }));
    expect(broken).toMatchObject({ status: 'FAILED', output: undefined });
    expect(intrinsicLiteral(prefix)).toBe("team\\'s-(data)/");
    expect(intrinsicLiteral('a{b}\\')).toBe('a\\{b\\}\\\\');
  });

  test('no state a shared run can reach creates or changes a SageMaker model, endpoint config or endpoint', () => {
    const deploying = (from: string) => [...reachable(states, from)].filter((name) => DEPLOYING.test(states[name].Resource ?? ''));
    // Roll the endpoint back is reached through the clean-up shared by both modes, and only when
    // Report gives a rollBack, which it gives a dedicated run only (test/lambda/report-artifacts.test.ts).
    expect(deploying(STATES.registerLora)).toEqual([STATES.rollBackEndpoint]);
    // Control: the dedicated branch of the same Choice does reach them.
    expect(deploying(STATES.createModel).sort()).toEqual([STATES.createEndpoint, STATES.createEndpointConfig, STATES.createModel, STATES.replaceEndpoint, STATES.rollBackEndpoint, STATES.updateEndpoint].sort());
  });

  test('a failed run whose LoRA the server refused marks the version failed, best effort, before notifying; clean-ups of dedicated runs are unchanged', () => {
    // Only after the server refused the LoRA (LoraCheckFailed), whatever Report answers.
    expect(states[STATES.cleanUp].Choices).toEqual([
      {
        And: [
          { Variable: '$.report.cleanup.loraVersion', IsPresent: true },
          { Or: [{ Variable: '$.failure.error.Error', StringEquals: 'LoraCheckFailed' }, { Variable: '$.failure.error.Error', StringEquals: 'SmokeTestFailed' }] },
        ],
        Next: STATES.rejectLora,
      },
      { Variable: '$.report.cleanup.rollBack', IsPresent: true, Next: STATES.rollBackEndpoint },
      { Variable: '$.report.cleanup.endpointName', IsPresent: true, Next: STATES.deleteFailedEndpoint },
      { Variable: '$.report.cleanup.endpointConfigName', IsPresent: true, Next: STATES.deleteEndpointConfig },
    ]);
    expect(states[STATES.rejectLora]).toMatchObject({
      Parameters: { action: 'reject', 'name.$': '$.report.cleanup.loraVersion.name', 'version.$': '$.report.cleanup.loraVersion.version', 'reason.$': '$.report.cause' },
      Next: STATES.notifyFailure,
      Catch: [{ ErrorEquals: ['States.ALL'], ResultPath: '$.cleanupError', Next: STATES.notifyFailure }],
    });
  });
});

describe('the registry and check functions: least privilege', () => {
  const otherActions = (statements: PolicyStatement[]) => statements.flatMap(actionsOf).filter((a) => !a.startsWith('logs:') && !a.startsWith('xray:'));

  test('the state machine may invoke its five functions and no other', () => {
    const invoke = allowing(workflowRole.statements, 'lambda:InvokeFunction');
    const arns = new Set(invoke.flatMap((s) => [s.Resource].flat() as string[]).map((arn) => arn.replace(/:\*$/, '')));
    const fn = (f: { function: { node: { defaultChild?: unknown } } }) => `arn:aws:lambda:us-east-1:123456789012:function:${stack.getLogicalId(f.function.node.defaultChild as never)}`;
    const { workflow } = stack;
    expect([...arns].sort()).toEqual([workflow.prepareFunction, workflow.reportFunction, workflow.registryFunction, workflow.checkFunction, workflow.samplesFunction].map(fn).sort());
  });

  test('the registry function reads and writes the table\'s items (never deletes or scans), with its key through DynamoDB only', () => {
    const { statements } = roleStatements(stack, template, stack.workflow.registryFunction.role);
    const tableArn = resolved(stack.resolve(stack.registry.table.tableArn));
    const dynamodb = statements.filter((s) => actionsOf(s).some((a) => a.startsWith('dynamodb:')));
    expect(dynamodb.map((s) => [actionsOf(s).sort(), resolved(s.Resource)])).toEqual([
      [['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:Query', 'dynamodb:UpdateItem'], tableArn],
    ]);
    expect(otherActions(statements).filter((a) => !/^(dynamodb|kms|s3):/.test(a))).toEqual([]);
  });

  test('the registry function reads the training output under models/ and writes LoRA copies under loras/, and nothing else of S3', () => {
    const { statements } = roleStatements(stack, template, stack.workflow.registryFunction.role);
    const plain = statements.map((s) => ({ ...s, Resource: JSON.parse(resolved(s.Resource)) }));
    const bucket = resolved(stack.resolve(stack.storage.artifactsBucket.bucketName)).replace(/"/g, '');
    const object = (key: string) => `arn:aws:s3:::${bucket}/${key}`;
    const s3 = plain.filter((s) => actionsOf(s).some((a) => a.startsWith('s3:')));
    expect(s3.map((s) => [s.Sid, actionsOf(s), s.Resource])).toEqual([
      ['ReadTrainingOutputs', ['s3:GetObject'], object('models/*')],
      // CreateMultipartUpload, UploadPart and CompleteMultipartUpload are all s3:PutObject.
      ['WriteLoraCopies', ['s3:AbortMultipartUpload', 's3:PutObject'], object('loras/*')],
    ]);
    expect(allows(plain, 's3:GetObject', object('models/run-1/output/model.tar.gz'))).toBe(true);
    expect(allows(plain, 's3:PutObject', object('loras/pokemon/3.safetensors'))).toBe(true);
    // Negative controls: it never writes where training output is, never reads its own copies
    // (nor checkpoints), and never lists, deletes or touches the datasets.
    expect(allows(plain, 's3:PutObject', object('models/run-1/output/model.tar.gz'))).toBe(false);
    expect(allows(plain, 's3:GetObject', object('loras/pokemon/3.safetensors'))).toBe(false);
    expect(allows(plain, 's3:GetObject', object('checkpoints/run-1/state'))).toBe(false);
    expect(allows(plain, 's3:DeleteObject', object('loras/pokemon/3.safetensors'))).toBe(false);
    expect(allows(plain, 's3:ListBucket', `arn:aws:s3:::${bucket}`)).toBe(false);
    const kms = plain.filter((s) => actionsOf(s).some((a) => a.startsWith('kms:')));
    expect(kms.map((s) => [actionsOf(s).sort(), resolved(s.Condition)])).toEqual([
      [['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey'], '{"StringEquals":{"kms:ViaService":"dynamodb.us-east-1.amazonaws.com"}}'],
      // Reading the SSE-KMS archive, and writing SSE-KMS copies (each multipart part is encrypted).
      [['kms:Decrypt', 'kms:GenerateDataKey'], '{"StringEquals":{"kms:ViaService":"s3.us-east-1.amazonaws.com"}}'],
    ]);
    const environment = JSON.parse(resolved(template.toJSON().Resources[stack.getLogicalId(stack.workflow.registryFunction.function.node.defaultChild as never)].Properties.Environment.Variables));
    expect(environment).toMatchObject({ LORA_REGISTRY_TABLE: JSON.parse(resolved(stack.resolve(stack.registry.table.tableName))), LORA_BUCKET: bucket, MODELS_PREFIX: 'models/', LORA_PREFIX: 'loras/' });
  });

  test('the stack names the registry function in an output, saying how to retire a version', () => {
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown; Description: string }>;
    expect(outputs.RegistryFunctionName.Value).toEqual({ Ref: stack.getLogicalId(stack.workflow.registryFunction.function.node.defaultChild as never) });
    expect(outputs.RegistryFunctionName.Description).toContain('Retires a LoRA version');
    // The payload in the description is one the function accepts.
    const payload = JSON.parse(/--payload '([^']+)'/.exec(outputs.RegistryFunctionName.Description)![1]) as unknown;
    expect(parseRegistryEvent(payload)).toEqual({ action: 'retire', name: 'pokemon', version: 3 });
  });

  test('the check function may invoke the shared endpoint\'s inference component and the runs\' endpoints, and write smoke images, nothing else', () => {
    const { statements } = roleStatements(stack, template, stack.workflow.checkFunction.role);
    expect(otherActions(statements).sort()).toEqual(['kms:GenerateDataKey', 's3:PutObject', 'sagemaker:InvokeEndpoint', 'sagemaker:InvokeEndpoint']);
    const invoke = allowing(statements, 'sagemaker:InvokeEndpoint');
    expect(invoke.flatMap((s) => [s.Resource].flat()).sort()).toEqual([SHARED_ENDPOINT_ARN, SHARED_COMPONENT_ARN, 'arn:aws:sagemaker:us-east-1:123456789012:endpoint/lora-*'].sort());
    const plain = statements.map((s) => ({ ...s, Resource: JSON.parse(resolved(s.Resource)) }));
    const bucket = resolved(stack.resolve(stack.storage.artifactsBucket.bucketName)).replace(/"/g, '');
    const object = (key: string) => `arn:aws:s3:::${bucket}/${key}`;
    expect(allows(plain, 's3:PutObject', object('models/run-1/smoke/with-lora.png'))).toBe(true);
    // Negative controls: not the model, not the samples, not the checkpoints; no reads, no deletes; no other endpoint.
    expect(allows(plain, 's3:PutObject', object('models/run-1/output/model.tar.gz'))).toBe(false);
    expect(allows(plain, 's3:PutObject', object('models/run-1/samples/contact-sheet.png'))).toBe(false);
    expect(allows(plain, 's3:PutObject', object('checkpoints/run-1/smoke/x.png'))).toBe(false);
    expect(allows(plain, 's3:GetObject', object('models/run-1/smoke/with-lora.png'))).toBe(false);
    expect(allows(plain, 's3:DeleteObject', object('models/run-1/smoke/with-lora.png'))).toBe(false);
    expect(allows(plain, 'sagemaker:InvokeEndpoint', 'arn:aws:sagemaker:us-east-1:123456789012:endpoint/lora-pokemon')).toBe(true);
    expect(allows(plain, 'sagemaker:InvokeEndpoint', 'arn:aws:sagemaker:us-east-1:123456789012:endpoint/other-team')).toBe(false);
    // The runs' grant is on endpoints only: an inference component, even one named like a run's endpoint, only the shared one.
    expect(allows(plain, 'sagemaker:InvokeEndpoint', SHARED_COMPONENT_ARN)).toBe(true);
    for (const component of ['inference-component/lora-pokemon', 'inference-component/lora-shared-sd15-other', 'inference-component/other-team']) {
      expect([component, allows(plain, 'sagemaker:InvokeEndpoint', `arn:aws:sagemaker:us-east-1:123456789012:${component}`)]).toEqual([component, false]);
    }
    const kms = plain.filter((s) => actionsOf(s).some((a) => a.startsWith('kms:')));
    expect(kms.map((s) => [actionsOf(s), resolved(s.Condition)])).toEqual([[['kms:GenerateDataKey'], '{"StringEquals":{"kms:ViaService":"s3.us-east-1.amazonaws.com"}}']]);
  });

  test('the samples function finds and reads models/<job>/output/output.tar.gz only, writes models/<job>/samples/ and caption files under the dataset prefix, nothing else', () => {
    const { statements } = roleStatements(stack, template, stack.workflow.samplesFunction.role);
    expect(otherActions(statements).sort()).toEqual(['kms:Decrypt', 'kms:GenerateDataKey', 's3:GetObject', 's3:ListBucket', 's3:PutObject', 's3:PutObject']);
    const plain = statements.map((s) => ({ ...s, Resource: JSON.parse(resolved(s.Resource)), Condition: s.Condition && JSON.parse(resolved(s.Condition)) }));
    const bucket = resolved(stack.resolve(stack.storage.artifactsBucket.bucketName)).replace(/"/g, '');
    const datasets = resolved(stack.resolve(stack.storage.datasetsBucket.bucketName)).replace(/"/g, '');
    const dataset = (key: string) => `arn:aws:s3:::${datasets}/${key}`;
    // Generated captions go back next to their images: caption files under the dataset prefix, nothing else there.
    expect(allows(plain, 's3:PutObject', dataset('datasets/pokemon/0001.txt'))).toBe(true);
    expect(allows(plain, 's3:PutObject', dataset('datasets/pokemon/sub/0001.caption'))).toBe(true);
    for (const key of ['datasets/pokemon/0001.png', 'datasets/pokemon/dataset.toml', 'datasets/pokemon/train.json', 'other/pokemon/0001.txt', 'datasets/pokemon/0001.txt.png']) {
      expect([key, allows(plain, 's3:PutObject', dataset(key))]).toEqual([key, false]);
    }
    // Only with If-None-Match: never over a caption already there (S3 refuses the PUT without the header).
    expect(plain.filter((s) => s.Sid === 'WriteGeneratedCaptions').map((s) => s.Condition)).toEqual([{ Null: { 's3:if-none-match': 'false' } }]);
    expect(allows(plain, 's3:GetObject', dataset('datasets/pokemon/0001.txt'))).toBe(false);
    expect(allows(plain, 's3:DeleteObject', dataset('datasets/pokemon/0001.txt'))).toBe(false);
    const object = (key: string) => `arn:aws:s3:::${bucket}/${key}`;
    // Listing only to tell a missing archive from a denied one: the prefix is the archive's exact key.
    expect(allowing(statements, 's3:ListBucket').map((s) => [s.Resource, s.Condition])).toEqual([[`arn:aws:s3:::${bucket}`, { StringLike: { 's3:prefix': ['models/*/output/output.tar.gz'] } }]]);
    expect(allows(plain, 's3:GetObject', object('models/run-1/output/output.tar.gz'))).toBe(true);
    expect(allows(plain, 's3:PutObject', object('models/run-1/samples/contact-sheet.png'))).toBe(true);
    // Negative controls: not the model, not the checkpoints (no longer read), no writes to the output, no deletes.
    expect(allows(plain, 's3:GetObject', object('models/run-1/output/model.tar.gz'))).toBe(false);
    expect(allows(plain, 's3:GetObject', object('checkpoints/run-1/sample/contact-sheet.png'))).toBe(false);
    expect(allows(plain, 's3:GetObject', object('checkpoints/run-1/last-state/model.safetensors'))).toBe(false);
    expect(allows(plain, 's3:GetObject', object('models/run-1/samples/contact-sheet.png'))).toBe(false);
    expect(allows(plain, 's3:PutObject', object('models/run-1/output/output.tar.gz'))).toBe(false);
    expect(allows(plain, 's3:PutObject', object('models/run-1/smoke/x.png'))).toBe(false);
    expect(allows(plain, 's3:PutObject', object('checkpoints/run-1/sample/x.png'))).toBe(false);
    expect(allows(plain, 's3:DeleteObject', object('models/run-1/samples/x.png'))).toBe(false);
    const kms = plain.filter((s) => actionsOf(s).some((a) => a.startsWith('kms:')));
    expect(kms.map((s) => [actionsOf(s).sort(), s.Condition])).toEqual([[['kms:Decrypt', 'kms:GenerateDataKey'], { StringEquals: { 'kms:ViaService': 's3.us-east-1.amazonaws.com' } }]]);
    const environment = JSON.parse(resolved(template.toJSON().Resources[stack.getLogicalId(stack.workflow.samplesFunction.function.node.defaultChild as never)].Properties.Environment.Variables));
    expect(environment).toMatchObject({ ARTIFACTS_BUCKET: bucket, MODELS_PREFIX: 'models/', DATA_KEY_ARN: expect.stringMatching(/^arn:aws:kms:/) });
    expect(environment).not.toHaveProperty('CHECKPOINTS_PREFIX');
  });

  test.each([
    ['Report', () => stack.workflow.reportFunction.role],
    ['status', () => stack.status.status.role],
  ])('the %s function may read the samples and smoke images its links point to, and no other object', (_, role) => {
    const plain = roleStatements(stack, template, role()).statements.map((s) => ({ ...s, Resource: JSON.parse(resolved(s.Resource)) }));
    const bucket = resolved(stack.resolve(stack.storage.artifactsBucket.bucketName)).replace(/"/g, '');
    const object = (key: string) => `arn:aws:s3:::${bucket}/${key}`;
    for (const key of ['models/run-1/samples/samples.json', 'models/run-1/samples/contact-sheet.png', 'models/run-1/smoke/side-by-side.png']) expect([key, allows(plain, 's3:GetObject', object(key))]).toEqual([key, true]);
    // Negative controls: the model, the checkpoints, the datasets; no writes.
    for (const key of ['models/run-1/output/model.tar.gz', 'checkpoints/run-1/sample/x.png', 'loras/pokemon/1.safetensors']) expect([key, allows(plain, 's3:GetObject', object(key))]).toEqual([key, false]);
    expect(allows(plain, 's3:PutObject', object('models/run-1/smoke/side-by-side.png'))).toBe(false);
  });

  test('a shared endpoint given in dedicated mode, or none in shared mode, is refused at synth, naming the mistake', () => {
    /** A workflow in a stack of its own, with `mode` and maybe a shared endpoint. */
    const workflowWith = (mode: 'shared' | 'dedicated', withEndpoint: boolean) => {
      const scope = new Stack(createTestApp(), 'Wiring');
      const storage = new PipelineStorage(scope, 'Storage', {});
      const baseModel = PREPARE_SETTINGS.baseModel;
      // Prepare's test settings, less what the workflow adds itself.
      const { datasetsBucket: _bucket, keyArn: _key, pipeline: _pipeline, endpoint, ...fromPrepare } = PREPARE_SETTINGS;
      const workflowSettings = { ...fromPrepare, endpoint: { instanceType: endpoint.instanceType, instanceCount: endpoint.instanceCount, loraScale: endpoint.loraScale } };
      const props: LoraWorkflowProps = {
        logRetention: 90,
        removalPolicy: RemovalPolicy.DESTROY,
        settings: { ...workflowSettings, baseModel, endpoint: { ...workflowSettings.endpoint, mode } },
        storage,
        training: new TrainingContainer(scope, 'Training', { storage, datasetPrefix: 'datasets/', baseModel }),
        serving: new ServingContainer(scope, 'Serving', { storage, modelType: 'sd15', baseModel }),
        topic: new sns.Topic(scope, 'Topic'),
        registry: new dynamodb.Table(scope, 'Registry', { partitionKey: { name: 'name', type: dynamodb.AttributeType.STRING }, encryption: dynamodb.TableEncryption.CUSTOMER_MANAGED, removalPolicy: RemovalPolicy.DESTROY }),
        sharedEndpoint: withEndpoint ? { endpointName: 'e', inferenceComponentName: 'c', endpointArn: 'arn:e', inferenceComponentArn: 'arn:c' } : undefined,
      };
      return () => new LoraWorkflow(scope, 'Workflow', props);
    };
    expect(workflowWith('shared', false)).toThrow(/endpoint.mode is 'shared' but a shared endpoint was not given/);
    expect(workflowWith('dedicated', true)).toThrow(/endpoint.mode is 'dedicated' but a shared endpoint was given/);
    expect(workflowWith('dedicated', false)).not.toThrow();
  });

  test('a dedicated deployment has no check function and no shared states; its registry function stays for operators (control)', () => {
    const other = synthPipeline({ 'endpoint.mode': 'dedicated' });
    const states = extractDefinition(other.template).States as Record<string, any>;
    for (const name of [STATES.servingMode, STATES.registerLora, STATES.tryLora, STATES.makeLoraCurrent, STATES.rejectLora, STATES.loraCheckFailed]) expect(states[name]).toBeUndefined();
    expect(states[STATES.publishSamples].Next).toBe(STATES.createModel);
    // The check function stays for the smoke test, with no grant on a shared endpoint.
    const check = roleStatements(other.stack, other.template, other.stack.workflow.checkFunction.role).statements;
    expect(JSON.stringify(check)).not.toContain('inference-component');
    const otherRole = roleStatements(other.stack, other.template, other.stack.workflow.stateMachine.role).statements;
    expect(otherRole.filter((s) => (s as { Effect?: string }).Effect === 'Deny')).toEqual([]);
    expect(JSON.stringify(otherRole)).not.toContain(other.stack.getLogicalId(other.stack.workflow.registryFunction.function.node.defaultChild as never));
    expect(Object.keys(other.template.findResources('AWS::Lambda::Function', { Properties: { Runtime: 'nodejs24.x' } })).some((id) => id.startsWith('WorkflowRegistryFunction'))).toBe(true);
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
