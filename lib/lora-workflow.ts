import { Duration, type RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as logs from 'aws-cdk-lib/aws-logs';
import { LogGroup } from 'aws-cdk-lib/aws-logs';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import { type PrepareSettings, STATES } from '../lambda/shared/contract';
import { iamFindingArn } from './nag-findings';
import { PipelineFunction } from './pipeline-function';
import type { PipelineStorage } from './pipeline-storage';
import { ServingContainer } from './serving-container';
import type { TrainingContainer } from './training-container';

/** Properties of {@link LoraWorkflow}. */
export interface LoraWorkflowProps {
  readonly storage: PipelineStorage;
  readonly training: TrainingContainer;
  readonly serving: ServingContainer;
  /** Where every run reports its end. */
  readonly topic: sns.ITopic;
  /**
   * Prepare's deploy-time settings, less what the construct knows itself (buckets, key, serving
   * timeouts, the tag). See {@link PrepareSettings}.
   */
  readonly settings: Omit<PrepareSettings, 'datasetsBucket' | 'keyArn' | 'pipeline' | 'endpoint'> & {
    readonly endpoint: Pick<PrepareSettings['endpoint'], 'instanceType' | 'instanceCount' | 'loraScale'>;
  };
  readonly logRetention: logs.RetentionDays;
  readonly removalPolicy: RemovalPolicy;
}

/** Seconds between two DescribeEndpoint calls while an endpoint is being created or updated. */
export const ENDPOINT_POLL_SECONDS = 30;

/**
 * Polls before a deployment that is still not in service is reported as timed out: time for
 * SageMaker to download the model data and to wait for the container's health check, each at its
 * limit, plus 15 minutes for the instances themselves.
 */
export const ENDPOINT_POLL_LIMIT = Math.ceil(
  (ServingContainer.MODEL_DATA_DOWNLOAD_TIMEOUT_SECONDS + ServingContainer.STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS + 900) / ENDPOINT_POLL_SECONDS,
);

/**
 * How each kind of SageMaker call is retried. SageMaker's API model lists few errors
 * (ResourceLimitExceeded among them); every other one, throttling and internal errors included,
 * reaches Step Functions under the SDK's generic name: `SageMaker.SageMakerException` from an AWS
 * SDK integration, `SageMaker.AmazonSageMakerException` from an optimized one. Validation errors
 * share those names, so the generic retries are short: a mistake fails a minute later, not never.
 */
const RETRIES = {
  /** A quota in use (instances, spot capacity): wait for it, up to half an hour. */
  resourceLimit: { errors: ['SageMaker.ResourceLimitExceededException'], interval: Duration.seconds(30), backoffRate: 2, maxAttempts: 6 },
  /** Reads: throttling, mostly, while an endpoint is polled. */
  read: { errors: ['SageMaker.SageMakerException'], interval: Duration.seconds(5), backoffRate: 2, maxAttempts: 5 },
  /** Creates and deletes through the AWS SDK integration: nothing was created by a throttled call. */
  write: { errors: ['SageMaker.SageMakerException'], interval: Duration.seconds(5), backoffRate: 2, maxAttempts: 3 },
  /**
   * Create/UpdateEndpoint: also the endpoint config, created a moment before, not yet visible to
   * CreateEndpoint (it is read eventually consistently; the API reference advises retrying).
   */
  deploy: { errors: ['SageMaker.AmazonSageMakerException'], interval: Duration.seconds(10), backoffRate: 2, maxAttempts: 3 },
} as const;

/**
 * The run workflow (Step Functions, standard, JSONPath): prepare and validate the run, wait while
 * the upload settles, train on a managed-spot job with checkpoints, create the model and endpoint
 * config, create or update the dataset's endpoint and wait until it is in service; on any failure,
 * report why, clean up what the run created for a failed endpoint, notify, and fail with that reason.
 */
export class LoraWorkflow extends Construct {
  public readonly stateMachine: sfn.StateMachine;
  public readonly logGroup: LogGroup;
  public readonly prepareFunction: PipelineFunction;
  public readonly reportFunction: PipelineFunction;

  private readonly props: LoraWorkflowProps;

  constructor(scope: Construct, id: string, props: LoraWorkflowProps) {
    super(scope, id);
    this.props = props;
    const stack = Stack.of(this);
    const { storage, training, serving, topic } = props;
    const namePrefix = props.settings.namePrefix;

    const settings: PrepareSettings = {
      ...props.settings,
      datasetsBucket: storage.datasetsBucket.bucketName,
      keyArn: storage.key.keyArn,
      pipeline: stack.stackName,
      endpoint: {
        ...props.settings.endpoint,
        startupHealthCheckTimeoutSeconds: ServingContainer.STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS,
        modelDataDownloadTimeoutSeconds: ServingContainer.MODEL_DATA_DOWNLOAD_TIMEOUT_SECONDS,
      },
    };
    const functionDefaults = { logRetention: props.logRetention, removalPolicy: props.removalPolicy };
    this.prepareFunction = new PipelineFunction(this, 'Prepare', {
      ...functionDefaults,
      name: 'prepare',
      description: 'Resolves and validates a run: its input, train.json, the dataset folder and hyperparameters',
      environment: { SETTINGS: stack.toJsonString(settings) },
      timeout: Duration.minutes(2),
      memorySize: 512,
    });
    this.grantDatasetRead(this.prepareFunction.role, props.settings.datasetPrefix);
    this.reportFunction = new PipelineFunction(this, 'Report', {
      ...functionDefaults,
      name: 'report',
      description: "Turns a run's end into its notification, its output, or its error and cause",
    });

    const sagemakerArn = (resource: string) => stack.formatArn({ service: 'sagemaker', resource, resourceName: `${namePrefix}-*` });
    const arns = {
      trainingJob: sagemakerArn('training-job'),
      model: sagemakerArn('model'),
      endpointConfig: sagemakerArn('endpoint-config'),
      endpoint: sagemakerArn('endpoint'),
    };
    const execution = { 'name.$': '$$.Execution.Name', 'startTime.$': '$$.Execution.StartTime' };
    const retry = (state: sfn.CustomState, ...kinds: Array<keyof typeof RETRIES>) => {
      for (const kind of ['resourceLimit', ...kinds] as const) state.addRetry({ ...RETRIES[kind], errors: [...RETRIES[kind].errors], jitterStrategy: sfn.JitterType.FULL });
    };
    const sagemakerTask = (name: string, action: string, fields: Record<string, unknown>) =>
      new sfn.CustomState(this, name, {
        stateJson: { Type: 'Task', Resource: `arn:${stack.partition}:states:::${action}`, ...fields },
      });

    // Failure path: each stage records where it failed; Report turns that into a reason.
    const failed = new sfn.Fail(this, STATES.failed, { errorPath: '$.report.error', causePath: '$.report.cause' });
    const notifyFailure = new tasks.SnsPublish(this, STATES.notifyFailure, {
      topic,
      subject: sfn.JsonPath.stringAt('$.report.subject'),
      message: sfn.TaskInput.fromJsonPathAt('$.report.message'),
      resultPath: sfn.JsonPath.DISCARD,
    });
    notifyFailure.addCatch(failed, { resultPath: '$.notifyError' });
    notifyFailure.next(failed);

    const deleteModel = sagemakerTask(STATES.deleteModel, 'aws-sdk:sagemaker:deleteModel', {
      Parameters: { 'ModelName.$': '$.report.cleanup.modelName' },
      ResultPath: null,
    });
    const deleteEndpointConfig = sagemakerTask(STATES.deleteEndpointConfig, 'aws-sdk:sagemaker:deleteEndpointConfig', {
      Parameters: { 'EndpointConfigName.$': '$.report.cleanup.endpointConfigName' },
      ResultPath: null,
    });
    const deleteFailedEndpoint = sagemakerTask(STATES.deleteFailedEndpoint, 'aws-sdk:sagemaker:deleteEndpoint', {
      Parameters: { 'EndpointName.$': '$.report.cleanup.endpointName' },
      ResultPath: null,
    });
    // Clean-up is best effort: a resource that is already gone, or cannot go, must not hide the
    // failure being reported.
    for (const [state, next] of [
      [deleteFailedEndpoint, deleteEndpointConfig],
      [deleteEndpointConfig, deleteModel],
      [deleteModel, notifyFailure],
    ] as const) {
      retry(state, 'write');
      state.addCatch(next, { resultPath: '$.cleanupError' });
      state.next(next);
    }
    const cleanUp = new sfn.Choice(this, STATES.cleanUp)
      .when(sfn.Condition.isPresent('$.report.cleanup.endpointName'), deleteFailedEndpoint)
      .when(sfn.Condition.isPresent('$.report.cleanup'), deleteEndpointConfig)
      .otherwise(notifyFailure);

    const reportFailure = new tasks.LambdaInvoke(this, STATES.reportFailure, {
      lambdaFunction: this.reportFunction.function,
      payloadResponseOnly: true,
      payload: sfn.TaskInput.fromObject({
        outcome: 'failed',
        execution,
        'stage.$': '$.failure.stage',
        'error.$': '$.failure.error',
        'state.$': '$',
      }),
      resultPath: '$.report',
      retryOnServiceExceptions: true,
    });
    reportFailure.next(cleanUp);
    // Report is our code: should it fail, the run still notifies and fails with the error caught,
    // unparsed, and cleans nothing up (what failed is then not known well enough to delete).
    reportFailure.addCatch(
      new sfn.Pass(this, STATES.reportFailurePlainly, {
        parameters: {
          'subject.$': "States.Format('LoRA run {} failed', $$.Execution.Name)",
          'message.$': 'States.JsonToString($.failure)',
          'error.$': '$.failure.error.Error',
          'cause.$': 'States.JsonToString($.failure.error)',
        },
        resultPath: '$.report',
      }).next(notifyFailure),
      { resultPath: '$.reportError' },
    );

    const failedAt = (name: string, stage: string) =>
      new sfn.Pass(this, name, { parameters: { stage, 'error.$': '$.error' }, resultPath: '$.failure' }).next(reportFailure);
    const preparationFailed = failedAt(STATES.preparationFailed, 'prepare');
    const trainingFailed = failedAt(STATES.trainingFailed, 'training');
    const deploymentFailed = failedAt(STATES.deploymentFailed, 'model');
    const endpointFailed = failedAt(STATES.endpointFailed, 'endpoint');
    const endpointNotInService = new sfn.Pass(this, STATES.endpointNotInService, {
      parameters: {
        stage: 'endpoint',
        error: { Error: 'EndpointFailed', Cause: 'The endpoint did not reach InService with this run\'s endpoint config.' },
      },
      resultPath: '$.failure',
    }).next(reportFailure);
    const endpointTimedOut = new sfn.Pass(this, STATES.endpointTimedOut, {
      parameters: {
        stage: 'endpoint-timeout',
        error: { Error: 'EndpointTimeout', Cause: `The endpoint was not in service after ${ENDPOINT_POLL_LIMIT} checks, ${ENDPOINT_POLL_LIMIT * ENDPOINT_POLL_SECONDS} seconds.` },
      },
      resultPath: '$.failure',
    }).next(reportFailure);
    const catchInto = (state: sfn.CustomState | tasks.LambdaInvoke, handler: sfn.IChainable) =>
      state.addCatch(handler, { errors: [sfn.Errors.ALL], resultPath: '$.error' });

    // Success path.
    const done = new sfn.Succeed(this, STATES.succeeded, { outputPath: '$.report.summary' });
    const notifySuccess = new tasks.SnsPublish(this, STATES.notifySuccess, {
      topic,
      subject: sfn.JsonPath.stringAt('$.report.subject'),
      message: sfn.TaskInput.fromJsonPathAt('$.report.message'),
      resultPath: sfn.JsonPath.DISCARD,
    });
    // The endpoint is in service: a lost notification must not turn the run into a failure.
    notifySuccess.addCatch(done, { resultPath: '$.notifyError' });
    const reportSuccess = new tasks.LambdaInvoke(this, STATES.reportSuccess, {
      lambdaFunction: this.reportFunction.function,
      payloadResponseOnly: true,
      payload: sfn.TaskInput.fromObject({ outcome: 'succeeded', execution, 'run.$': '$.run', 'training.$': '$.training', 'endpoint.$': '$.endpoint' }),
      resultPath: '$.report',
      retryOnServiceExceptions: true,
    });
    reportSuccess.next(notifySuccess).next(done);
    // The endpoint is in service whatever happens to the report: a summary from the state alone.
    reportSuccess.addCatch(
      new sfn.Pass(this, STATES.reportSuccessPlainly, {
        parameters: {
          'subject.$': "States.Format('LoRA run {} is in service', $.run.run)",
          'message.$': "States.Format('Endpoint {} serves run {}.', $.run.serving.endpointName, $.run.run)",
          summary: {
            'run.$': '$.run.run',
            'dataset.$': '$.run.dataset.name',
            'trainingJobName.$': '$.run.training.jobName',
            'modelArtifact.$': '$.training.ModelArtifacts.S3ModelArtifacts',
            'endpointName.$': '$.run.serving.endpointName',
          },
        },
        resultPath: '$.report',
      }).next(notifySuccess),
      { resultPath: '$.reportError' },
    );
    for (const report of [reportSuccess, reportFailure]) {
      report.addRetry({ errors: ['Lambda.TooManyRequestsException'], interval: Duration.seconds(2), backoffRate: 2, maxAttempts: 5, jitterStrategy: sfn.JitterType.FULL });
    }

    // Deployment: wait until the endpoint serves this run's config.
    const countPoll = new sfn.Pass(this, STATES.countPoll, {
      parameters: { 'count.$': 'States.MathAdd($.polls.count, 1)' },
      resultPath: '$.polls',
    });
    const waitForEndpoint = new sfn.Wait(this, STATES.waitForEndpoint, { time: sfn.WaitTime.duration(Duration.seconds(ENDPOINT_POLL_SECONDS)) });
    const describeEndpoint = sagemakerTask(STATES.describeEndpoint, 'aws-sdk:sagemaker:describeEndpoint', {
      Parameters: { 'EndpointName.$': '$.run.serving.endpointName' },
      ResultPath: '$.endpoint',
    });
    retry(describeEndpoint, 'read');
    catchInto(describeEndpoint, endpointFailed);
    const inService = sfn.Condition.stringEquals('$.endpoint.EndpointStatus', 'InService');
    const endpointReady = new sfn.Choice(this, STATES.endpointReady)
      .when(sfn.Condition.and(inService, sfn.Condition.stringEqualsJsonPath('$.endpoint.EndpointConfigName', '$.run.serving.endpointConfigName')), reportSuccess)
      // In service on another config: the update failed and SageMaker rolled it back.
      .when(
        sfn.Condition.or(inService, ...['Failed', 'UpdateRollbackFailed', 'OutOfService', 'Deleting'].map((s) => sfn.Condition.stringEquals('$.endpoint.EndpointStatus', s))),
        endpointNotInService,
      )
      .when(sfn.Condition.numberGreaterThanEquals('$.polls.count', ENDPOINT_POLL_LIMIT), endpointTimedOut)
      .otherwise(waitForEndpoint);
    waitForEndpoint.next(describeEndpoint).next(countPoll).next(endpointReady);

    const endpointFields = { 'EndpointName.$': '$.run.serving.endpointName', 'EndpointConfigName.$': '$.run.serving.endpointConfigName' };
    const createEndpoint = sagemakerTask(STATES.createEndpoint, 'sagemaker:createEndpoint', {
      Parameters: { ...endpointFields, 'Tags.$': '$.run.tags' },
      ResultSelector: { endpointExisted: false },
      ResultPath: '$.deployment',
    });
    const updateEndpoint = sagemakerTask(STATES.updateEndpoint, 'sagemaker:updateEndpoint', {
      Parameters: endpointFields,
      ResultSelector: { endpointExisted: true },
      ResultPath: '$.deployment',
    });
    for (const state of [createEndpoint, updateEndpoint]) {
      retry(state, 'deploy');
      catchInto(state, endpointFailed);
      state.next(waitForEndpoint);
    }
    const findEndpoint = sagemakerTask(STATES.findEndpoint, 'aws-sdk:sagemaker:describeEndpoint', {
      Parameters: { 'EndpointName.$': '$.run.serving.endpointName' },
      ResultPath: null,
    });
    // A missing endpoint is a SageMakerException too, so its retries are brief: a few seconds.
    findEndpoint.addRetry({ errors: ['SageMaker.SageMakerException'], interval: Duration.seconds(2), backoffRate: 2, maxAttempts: 2 });
    // SageMaker answers a missing endpoint with an error its API model does not list, so only the
    // message tells "not found" from any other failure.
    catchInto(
      findEndpoint,
      new sfn.Choice(this, STATES.endpointFound)
        .when(sfn.Condition.stringMatches('$.error.Cause', '*Could not find endpoint*'), createEndpoint)
        .otherwise(endpointFailed),
    );
    findEndpoint.next(updateEndpoint);

    const createModel = sagemakerTask(STATES.createModel, 'aws-sdk:sagemaker:createModel', {
      Parameters: {
        'ModelName.$': '$.run.serving.modelName',
        ExecutionRoleArn: serving.role.roleArn,
        PrimaryContainer: {
          Image: serving.imageUri,
          'ModelDataUrl.$': '$.training.ModelArtifacts.S3ModelArtifacts',
          'Environment.$': '$.run.serving.environment',
          'AdditionalModelDataSources.$': '$.run.serving.additionalModelDataSources',
        },
        'EnableNetworkIsolation.$': '$.run.serving.networkIsolation',
        'Tags.$': '$.run.tags',
      },
      ResultPath: null,
    });
    // Prepare builds the whole request: its KmsKeyId depends on the instance type.
    const createEndpointConfig = sagemakerTask(STATES.createEndpointConfig, 'aws-sdk:sagemaker:createEndpointConfig', {
      InputPath: '$.run.serving.endpointConfig',
      ResultPath: null,
    });
    for (const state of [createModel, createEndpointConfig]) {
      retry(state, 'write');
      catchInto(state, deploymentFailed);
    }
    createModel.next(createEndpointConfig).next(findEndpoint);

    const train = sagemakerTask(STATES.train, 'sagemaker:createTrainingJob.sync', {
      Parameters: {
        'TrainingJobName.$': '$.run.training.jobName',
        RoleArn: training.role.roleArn,
        AlgorithmSpecification: {
          TrainingImage: training.imageUri,
          TrainingInputMode: 'File',
          MetricDefinitions: training.metricDefinitions,
        },
        'HyperParameters.$': '$.run.training.hyperparameters',
        'InputDataConfig.$': '$.run.training.inputDataConfig',
        OutputDataConfig: {
          S3OutputPath: `s3://${storage.artifactsBucket.bucketName}/${training.outputPrefix}`,
          KmsKeyId: storage.key.keyArn,
        },
        CheckpointConfig: {
          'S3Uri.$': `States.Format('s3://${storage.artifactsBucket.bucketName}/${training.checkpointsPrefix}{}/', $.run.training.jobName)`,
          LocalPath: '/opt/ml/checkpoints',
        },
        'ResourceConfig.$': '$.run.training.resourceConfig',
        'StoppingCondition.$': '$.run.training.stoppingCondition',
        'EnableManagedSpotTraining.$': '$.run.training.spot',
        'EnableNetworkIsolation.$': '$.run.training.networkIsolation',
        EnableInterContainerTrafficEncryption: true,
        'Tags.$': '$.run.tags',
      },
      ResultPath: '$.training',
    });
    // Only the quota is retried: a generic error might come after the job was created, and the
    // same name again would be refused (ResourceInUse) while the first job runs on.
    retry(train);
    catchInto(train, trainingFailed);
    train.next(createModel);

    const prepare = new tasks.LambdaInvoke(this, STATES.prepare, {
      lambdaFunction: this.prepareFunction.function,
      payloadResponseOnly: true,
      payload: sfn.TaskInput.fromObject({ 'request.$': '$.request', execution }),
      resultPath: '$.run',
      retryOnServiceExceptions: false,
    });
    // A mistake in the input or the dataset is final; anything else (Lambda or S3 having a bad
    // moment) is tried again.
    prepare.addRetry({ errors: ['InvalidInput', 'InvalidDataset'], maxAttempts: 0 });
    prepare.addRetry({ errors: [sfn.Errors.ALL], interval: Duration.seconds(5), backoffRate: 2, maxAttempts: 4, jitterStrategy: sfn.JitterType.FULL });
    catchInto(prepare, preparationFailed);
    const waitForUpload = new sfn.Wait(this, STATES.waitForUpload, { time: sfn.WaitTime.secondsPath('$.run.waitSeconds') });
    waitForUpload.next(prepare);
    const settled = new sfn.Choice(this, STATES.settled).when(sfn.Condition.booleanEquals('$.run.settled', true), train).otherwise(waitForUpload);

    // The execution input moves under `request`, so that each pass of Prepare sees it unchanged.
    const readInput = new sfn.Pass(this, STATES.readInput, { parameters: { 'request.$': '$', polls: { count: 0 } } });
    const definition = readInput.next(prepare).next(settled);

    this.logGroup = new LogGroup(this, 'Logs', {
      logGroupName: `/aws/vendedlogs/states/${stack.stackName}-runs`,
      retention: props.logRetention,
      removalPolicy: props.removalPolicy,
    });
    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      definitionBody: sfn.DefinitionBody.fromChainable(definition),
      stateMachineType: sfn.StateMachineType.STANDARD,
      queryLanguage: sfn.QueryLanguage.JSON_PATH,
      comment: 'LoRA run: prepare, train on managed spot, deploy to an endpoint',
      logs: { destination: this.logGroup, level: sfn.LogLevel.ALL, includeExecutionData: true },
      tracingEnabled: true,
    });
    this.grantSageMaker(arns, [training.role, serving.role]);
    this.grantKeyUse();
  }

  /** What the state machine does in SageMaker, on the run-name prefix's resources only. */
  private grantSageMaker(arns: Record<'trainingJob' | 'model' | 'endpointConfig' | 'endpoint', string>, roles: iam.IRole[]): void {
    const stack = Stack.of(this);
    const statements: Array<[string, string[], string[]]> = [
      // Step Functions tags the jobs it starts (AddTags) and reads their tags back (ListTags).
      ['RunTrainingJobs', ['sagemaker:CreateTrainingJob', 'sagemaker:DescribeTrainingJob', 'sagemaker:StopTrainingJob', 'sagemaker:AddTags', 'sagemaker:ListTags'], [arns.trainingJob]],
      ['ManageModels', ['sagemaker:CreateModel', 'sagemaker:DeleteModel', 'sagemaker:AddTags'], [arns.model]],
      ['ManageEndpointConfigs', ['sagemaker:CreateEndpointConfig', 'sagemaker:DeleteEndpointConfig', 'sagemaker:AddTags'], [arns.endpointConfig]],
      // Creating or updating an endpoint is authorized on the endpoint and on the config it uses.
      ['DeployEndpoints', ['sagemaker:CreateEndpoint', 'sagemaker:UpdateEndpoint'], [arns.endpoint, arns.endpointConfig]],
      ['ManageEndpoints', ['sagemaker:DescribeEndpoint', 'sagemaker:DeleteEndpoint', 'sagemaker:AddTags'], [arns.endpoint]],
      // Step Functions' own SageMaker policies read back the tags of what they create.
      ['ReadTags', ['sagemaker:ListTags'], [arns.model, arns.endpointConfig, arns.endpoint]],
      // `.sync` learns that a job ended from this managed EventBridge rule.
      [
        'FollowTrainingJobs',
        ['events:PutTargets', 'events:PutRule', 'events:DescribeRule'],
        [stack.formatArn({ service: 'events', resource: 'rule', resourceName: 'StepFunctionsGetEventsForSageMakerTrainingJobsRule' })],
      ],
    ];
    for (const [sid, actions, resources] of statements) {
      this.stateMachine.addToRolePolicy(new iam.PolicyStatement({ sid, actions, resources }));
    }
    this.stateMachine.addToRolePolicy(
      new iam.PolicyStatement({
        sid: 'PassTheJobAndEndpointRoles',
        actions: ['iam:PassRole'],
        resources: roles.map((role) => role.roleArn),
        conditions: { StringEquals: { 'iam:PassedToService': 'sagemaker.amazonaws.com' } },
      }),
    );
    const policy = this.stateMachine.role.node.findChild('DefaultPolicy');
    Validations.of(policy).acknowledge(
      ...Object.values(arns).map((arn) => ({
        id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, arn)}]`,
        reason: `Run and endpoint names are chosen per run; every name starts with the stack's prefix, so the workflow can touch no other SageMaker resource.`,
      })),
      {
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason: 'X-Ray tracing and log delivery to CloudWatch Logs (logs:*LogDelivery, xray:Put*) support no resource-level permissions.',
      },
      ...[this.prepareFunction, this.reportFunction].map(({ function: fn }) => ({
        id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, `${fn.functionArn}:*`)}]`,
        reason: `Step Functions' Lambda task may invoke ${fn.node.path} by a qualified ARN (a version or alias of that one function); CDK grants both forms.`,
      })),
    );
  }

  /**
   * The topic is encrypted with the pipeline key: publishing needs the key, but only through SNS.
   * (The SnsPublish tasks grant sns:Publish on the topic themselves.) An endpoint config or a job
   * that names the key (on instance types without local storage) makes SageMaker create grants
   * on it for its instances' volumes, on the caller's behalf.
   */
  private grantKeyUse(): void {
    this.stateMachine.addToRolePolicy(
      new iam.PolicyStatement({
        sid: 'LetSageMakerEncryptVolumes',
        actions: ['kms:CreateGrant', 'kms:DescribeKey'],
        resources: [this.props.storage.key.keyArn],
        conditions: { Bool: { 'kms:GrantIsForAWSResource': 'true' } },
      }),
    );
    this.stateMachine.addToRolePolicy(
      new iam.PolicyStatement({
        sid: 'EncryptNotifications',
        actions: ['kms:GenerateDataKey', 'kms:Decrypt'],
        resources: [this.props.storage.key.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': `sns.${Stack.of(this).region}.amazonaws.com` } },
      }),
    );
  }

  /** Prepare lists and reads the dataset folders (and their train.json), nothing else. */
  private grantDatasetRead(role: iam.IRole, datasetPrefix: string): void {
    const { datasetsBucket, key } = this.props.storage;
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ListDatasetFolders',
        actions: ['s3:ListBucket'],
        resources: [datasetsBucket.bucketArn],
        conditions: { StringLike: { 's3:prefix': [`${datasetPrefix}*`] } },
      }),
    );
    // Uploads still in progress are not listed as objects; the settle check asks for them too.
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({ sid: 'ListUploadsInProgress', actions: ['s3:ListBucketMultipartUploads'], resources: [datasetsBucket.bucketArn] }),
    );
    const objects = datasetsBucket.arnForObjects(`${datasetPrefix}*`);
    role.addToPrincipalPolicy(new iam.PolicyStatement({ sid: 'ReadDatasetFiles', actions: ['s3:GetObject'], resources: [objects] }));
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'DecryptDatasetFiles',
        actions: ['kms:Decrypt'],
        resources: [key.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': `s3.${Stack.of(this).region}.amazonaws.com` } },
      }),
    );
    Validations.of(role.node.findChild('DefaultPolicy')).acknowledge({
      id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, objects)}]`,
      reason: `Prepare reads the dataset.toml and train.json of any dataset folder under ${datasetPrefix}; folder names are chosen by the uploaders.`,
    });
  }
}
