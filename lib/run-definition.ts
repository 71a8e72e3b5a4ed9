import { Duration, Stack } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import type { Construct } from 'constructs';
import { STATES } from '../lambda/shared/contract';
import type { PipelineStorage } from './pipeline-storage';
import { ServingContainer } from './serving-container';
import type { TrainingContainer } from './training-container';

/** What the run definition calls and where it writes. */
export interface RunDefinitionProps {
  /** The Prepare function (lambda/prepare). */
  readonly prepare: lambda.IFunction;
  /** The Report function (lambda/report). */
  readonly report: lambda.IFunction;
  readonly topic: sns.ITopic;
  readonly storage: PipelineStorage;
  readonly training: TrainingContainer;
  readonly serving: ServingContainer;
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
  /** CreateEndpoint after deleting a failed endpoint of the same name: refused until it is gone, a few minutes. */
  replace: { errors: ['SageMaker.AmazonSageMakerException'], interval: Duration.seconds(15), backoffRate: 2, maxAttempts: 5 },
} as const;

/**
 * The states of a run, as docs/design.md ("Workflow") describes them, named as
 * lambda/shared/contract.ts names them; returns the first. `scope` owns the states.
 */
export function runDefinition(scope: Construct, props: RunDefinitionProps): sfn.IChainable {
  const stack = Stack.of(scope);
  const { storage, training, serving, topic } = props;
  const execution = { 'name.$': '$$.Execution.Name', 'startTime.$': '$$.Execution.StartTime' };
  const retry = (state: sfn.CustomState, ...kinds: Array<keyof typeof RETRIES>) => {
    for (const kind of ['resourceLimit', ...kinds] as const) state.addRetry({ ...RETRIES[kind], errors: [...RETRIES[kind].errors], jitterStrategy: sfn.JitterType.FULL });
  };
  const sagemakerTask = (name: string, action: string, fields: Record<string, unknown>) =>
    new sfn.CustomState(scope, name, {
      stateJson: { Type: 'Task', Resource: `arn:${stack.partition}:states:::${action}`, ...fields },
    });

  /** Publishes Report's subject and message, then goes on to `end` even if publishing fails: the outcome stands. */
  const notify = (name: string, end: sfn.State) => {
    const publish = new tasks.SnsPublish(scope, name, {
      topic,
      subject: sfn.JsonPath.stringAt('$.report.subject'),
      message: sfn.TaskInput.fromJsonPathAt('$.report.message'),
      resultPath: sfn.JsonPath.DISCARD,
    });
    publish.addCatch(end, { resultPath: '$.notifyError' });
    publish.next(end);
    return publish;
  };

  // Failure path: each stage records where it failed; Report turns that into a reason.
  const failed = new sfn.Fail(scope, STATES.failed, { errorPath: '$.report.error', causePath: '$.report.cause' });
  const notifyFailure = notify(STATES.notifyFailure, failed);

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
  const cleanUp = new sfn.Choice(scope, STATES.cleanUp)
    .when(sfn.Condition.isPresent('$.report.cleanup.endpointName'), deleteFailedEndpoint)
    .when(sfn.Condition.isPresent('$.report.cleanup'), deleteEndpointConfig)
    .otherwise(notifyFailure);

  const reportFailure = new tasks.LambdaInvoke(scope, STATES.reportFailure, {
    lambdaFunction: props.report,
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
    new sfn.Pass(scope, STATES.reportFailurePlainly, {
      parameters: {
        // Static: an execution started by hand may have a name SNS refuses in a subject.
        subject: 'A LoRA run failed (its report could not be written)',
        'message.$': 'States.JsonToString($.failure)',
        'error.$': '$.failure.error.Error',
        'cause.$': 'States.JsonToString($.failure.error)',
      },
      resultPath: '$.report',
    }).next(notifyFailure),
    { resultPath: '$.reportError' },
  );

  const failedAt = (name: string, stage: string) =>
    new sfn.Pass(scope, name, { parameters: { stage, 'error.$': '$.error' }, resultPath: '$.failure' }).next(reportFailure);
  const preparationFailed = failedAt(STATES.preparationFailed, 'prepare');
  const trainingFailed = failedAt(STATES.trainingFailed, 'training');
  const deploymentFailed = failedAt(STATES.deploymentFailed, 'model');
  const endpointFailed = failedAt(STATES.endpointFailed, 'endpoint');
  const endpointNotInService = new sfn.Pass(scope, STATES.endpointNotInService, {
    parameters: {
      stage: 'endpoint',
      error: { Error: 'EndpointFailed', Cause: 'The endpoint did not reach InService with this run\'s endpoint config.' },
    },
    resultPath: '$.failure',
  }).next(reportFailure);
  const endpointTimedOut = new sfn.Pass(scope, STATES.endpointTimedOut, {
    parameters: {
      stage: 'endpoint-timeout',
      error: { Error: 'EndpointTimeout', Cause: `The endpoint was not in service after ${ENDPOINT_POLL_LIMIT} checks, ${ENDPOINT_POLL_LIMIT * ENDPOINT_POLL_SECONDS} seconds.` },
    },
    resultPath: '$.failure',
  }).next(reportFailure);
  const catchInto = (state: sfn.CustomState | tasks.LambdaInvoke, handler: sfn.IChainable) =>
    state.addCatch(handler, { errors: [sfn.Errors.ALL], resultPath: '$.error' });

  // Success path.
  const done = new sfn.Succeed(scope, STATES.succeeded, { outputPath: '$.report.summary' });
  const notifySuccess = notify(STATES.notifySuccess, done);
  const reportSuccess = new tasks.LambdaInvoke(scope, STATES.reportSuccess, {
    lambdaFunction: props.report,
    payloadResponseOnly: true,
    payload: sfn.TaskInput.fromObject({ outcome: 'succeeded', execution, 'run.$': '$.run', 'training.$': '$.training', 'endpoint.$': '$.endpoint' }),
    resultPath: '$.report',
    retryOnServiceExceptions: true,
  });
  reportSuccess.next(notifySuccess);
  // The endpoint is in service whatever happens to the report: a summary from the state alone.
  reportSuccess.addCatch(
    new sfn.Pass(scope, STATES.reportSuccessPlainly, {
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
  const countPoll = new sfn.Pass(scope, STATES.countPoll, {
    parameters: { 'count.$': 'States.MathAdd($.polls.count, 1)' },
    resultPath: '$.polls',
  });
  const waitForEndpoint = new sfn.Wait(scope, STATES.waitForEndpoint, { time: sfn.WaitTime.duration(Duration.seconds(ENDPOINT_POLL_SECONDS)) });
  const describeEndpoint = sagemakerTask(STATES.describeEndpoint, 'aws-sdk:sagemaker:describeEndpoint', {
    Parameters: { 'EndpointName.$': '$.run.serving.endpointName' },
    ResultPath: '$.endpoint',
  });
  retry(describeEndpoint, 'read');
  catchInto(describeEndpoint, endpointFailed);
  const inService = sfn.Condition.stringEquals('$.endpoint.EndpointStatus', 'InService');
  const endpointReady = new sfn.Choice(scope, STATES.endpointReady)
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
  // A create or update that answered with an error may still have taken effect (a lost answer,
  // then a retry refused as a duplicate): what the endpoint is on decides what may be cleaned up.
  const checkEndpoint = sagemakerTask(STATES.checkEndpoint, 'aws-sdk:sagemaker:describeEndpoint', {
    Parameters: { 'EndpointName.$': '$.run.serving.endpointName' },
    ResultPath: '$.endpoint',
  });
  retry(checkEndpoint, 'read');
  checkEndpoint.addCatch(endpointFailed, { resultPath: '$.checkError' });
  checkEndpoint.next(endpointFailed);
  // SageMaker can only delete a failed endpoint (one a timed-out run left behind, say): it is
  // replaced, under the same name, rather than failing every later run of the dataset.
  const replaceEndpoint = sagemakerTask(STATES.replaceEndpoint, 'sagemaker:createEndpoint', {
    Parameters: { ...endpointFields, 'Tags.$': '$.run.tags' },
    ResultSelector: { endpointExisted: false },
    ResultPath: '$.deployment',
  });
  for (const [state, kind] of [
    [createEndpoint, 'deploy'],
    [updateEndpoint, 'deploy'],
    [replaceEndpoint, 'replace'],
  ] as const) {
    retry(state, kind);
    catchInto(state, checkEndpoint);
    state.next(waitForEndpoint);
  }
  const deleteUnusableEndpoint = sagemakerTask(STATES.deleteUnusableEndpoint, 'aws-sdk:sagemaker:deleteEndpoint', {
    Parameters: { 'EndpointName.$': '$.run.serving.endpointName' },
    ResultPath: null,
  });
  retry(deleteUnusableEndpoint, 'write');
  catchInto(deleteUnusableEndpoint, endpointFailed);
  deleteUnusableEndpoint.next(replaceEndpoint);
  const findEndpoint = sagemakerTask(STATES.findEndpoint, 'aws-sdk:sagemaker:describeEndpoint', {
    Parameters: { 'EndpointName.$': '$.run.serving.endpointName' },
    ResultSelector: { 'status.$': '$.EndpointStatus' },
    ResultPath: '$.existing',
  });
  // A missing endpoint is a SageMakerException too, so its retries are brief: a few seconds.
  findEndpoint.addRetry({ errors: ['SageMaker.SageMakerException'], interval: Duration.seconds(2), backoffRate: 2, maxAttempts: 2 });
  // SageMaker answers a missing endpoint with an error its API model does not list, so only the
  // message tells "not found" from any other failure.
  catchInto(
    findEndpoint,
    new sfn.Choice(scope, STATES.endpointFound)
      .when(sfn.Condition.and(sfn.Condition.isPresent('$.error.Cause'), sfn.Condition.stringMatches('$.error.Cause', '*Could not find endpoint*')), createEndpoint)
      .otherwise(endpointFailed),
  );
  findEndpoint.next(
    new sfn.Choice(scope, STATES.endpointUsable)
      .when(sfn.Condition.stringEquals('$.existing.status', 'Failed'), deleteUnusableEndpoint)
      .otherwise(updateEndpoint),
  );

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

  const prepare = new tasks.LambdaInvoke(scope, STATES.prepare, {
    lambdaFunction: props.prepare,
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
  const waitForUpload = new sfn.Wait(scope, STATES.waitForUpload, { time: sfn.WaitTime.secondsPath('$.run.waitSeconds') });
  waitForUpload.next(prepare);
  const settled = new sfn.Choice(scope, STATES.settled).when(sfn.Condition.booleanEquals('$.run.settled', true), train).otherwise(waitForUpload);

  // The execution input moves under `request`, so that each pass of Prepare sees it unchanged.
  const readInput = new sfn.Pass(scope, STATES.readInput, { parameters: { 'request.$': '$', polls: { count: 0 } } });
  return readInput.next(prepare).next(settled);
}
