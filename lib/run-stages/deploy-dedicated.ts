import { Duration } from 'aws-cdk-lib';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type { Construct } from 'constructs';
import { STATES } from '../../lambda/shared/contract';
import { ServingContainer } from '../serving-container';
import type { FailurePath } from './fail-and-clean-up';
import { catchInto, retry, sagemakerTask } from './tasks';

/** Seconds between two DescribeEndpoint calls while an endpoint is being created or updated. */
export const ENDPOINT_POLL_SECONDS = 30;

/**
 * Polls before a deployment that is still not in service is reported as timed out: time for
 * SageMaker to download the model data and to wait for the container's health check, each at its
 * limit (the longest model type's: a run may be of another type than the deployment), plus 15
 * minutes for the instances themselves.
 */
export const ENDPOINT_POLL_LIMIT = Math.ceil(
  (ServingContainer.MODEL_DATA_DOWNLOAD_TIMEOUT_SECONDS + ServingContainer.MAX_STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS + 900) / ENDPOINT_POLL_SECONDS,
);

const ENDPOINT_FIELDS = { 'EndpointName.$': '$.run.serving.endpointName', 'EndpointConfigName.$': '$.run.serving.endpointConfigName' };

/**
 * A dedicated run's deployment: its model (the LoRA fused at start-up) and endpoint config, then
 * the dataset's endpoint created, updated, or replaced when it failed before, until it serves this
 * run's config; then `next` (the smoke test).
 */
export function deployDedicated(scope: Construct, serving: ServingContainer, failure: FailurePath, next: sfn.IChainable): sfn.State {
  const endpointFailed = failure.caught(STATES.endpointFailed);
  const deploymentFailed = failure.caught(STATES.deploymentFailed);
  const waitForEndpoint = waitUntilInService(scope, failure, endpointFailed, next);

  const createModel = sagemakerTask(scope, STATES.createModel, 'aws-sdk:sagemaker:createModel', {
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
  const createEndpointConfig = sagemakerTask(scope, STATES.createEndpointConfig, 'aws-sdk:sagemaker:createEndpointConfig', {
    InputPath: '$.run.serving.endpointConfig',
    ResultPath: null,
  });
  for (const state of [createModel, createEndpointConfig]) {
    retry(state, 'write');
    catchInto(state, deploymentFailed);
  }
  createModel.next(createEndpointConfig).next(createOrUpdateEndpoint(scope, endpointFailed, waitForEndpoint));
  return createModel;
}

/** Finds the dataset's endpoint, then creates it, updates it, or replaces it if it failed; then `next`. */
function createOrUpdateEndpoint(scope: Construct, endpointFailed: sfn.State, next: sfn.State): sfn.State {
  const createEndpoint = sagemakerTask(scope, STATES.createEndpoint, 'sagemaker:createEndpoint', {
    Parameters: { ...ENDPOINT_FIELDS, 'Tags.$': '$.run.tags' },
    ResultSelector: { endpointExisted: false },
    ResultPath: '$.deployment',
  });
  const updateEndpoint = sagemakerTask(scope, STATES.updateEndpoint, 'sagemaker:updateEndpoint', {
    Parameters: ENDPOINT_FIELDS,
    ResultSelector: { endpointExisted: true },
    ResultPath: '$.deployment',
  });
  // A create or update that answered with an error may still have taken effect (a lost answer,
  // then a retry refused as a duplicate): what the endpoint is on decides what may be cleaned up.
  const checkEndpoint = sagemakerTask(scope, STATES.checkEndpoint, 'aws-sdk:sagemaker:describeEndpoint', {
    Parameters: { 'EndpointName.$': '$.run.serving.endpointName' },
    ResultPath: '$.endpoint',
  });
  retry(checkEndpoint, 'read');
  checkEndpoint.addCatch(endpointFailed, { resultPath: '$.checkError' });
  checkEndpoint.next(endpointFailed);
  // SageMaker can only delete a failed endpoint (one a timed-out run left behind, say): it is
  // replaced, under the same name, rather than failing every later run of the dataset.
  const replaceEndpoint = sagemakerTask(scope, STATES.replaceEndpoint, 'sagemaker:createEndpoint', {
    Parameters: { ...ENDPOINT_FIELDS, 'Tags.$': '$.run.tags' },
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
    state.next(next);
  }
  const deleteUnusableEndpoint = sagemakerTask(scope, STATES.deleteUnusableEndpoint, 'aws-sdk:sagemaker:deleteEndpoint', {
    Parameters: { 'EndpointName.$': '$.run.serving.endpointName' },
    ResultPath: null,
  });
  retry(deleteUnusableEndpoint, 'write');
  catchInto(deleteUnusableEndpoint, endpointFailed);
  deleteUnusableEndpoint.next(replaceEndpoint);

  const findEndpoint = sagemakerTask(scope, STATES.findEndpoint, 'aws-sdk:sagemaker:describeEndpoint', {
    Parameters: { 'EndpointName.$': '$.run.serving.endpointName' },
    // The config it serves: the one to go back to should this run's smoke test fail.
    ResultSelector: { 'status.$': '$.EndpointStatus', 'endpointConfigName.$': '$.EndpointConfigName' },
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
  return findEndpoint;
}

/** Waits, then polls the endpoint until it serves this run's config (`next`), has failed, or the poll limit is reached. */
function waitUntilInService(scope: Construct, failure: FailurePath, endpointFailed: sfn.State, next: sfn.IChainable): sfn.State {
  const endpointNotInService = failure.found(STATES.endpointNotInService, 'endpoint', {
    Error: 'EndpointFailed',
    Cause: "The endpoint did not reach InService with this run's endpoint config.",
  });
  const endpointTimedOut = failure.found(STATES.endpointTimedOut, 'endpoint-timeout', {
    Error: 'EndpointTimeout',
    Cause: `The endpoint was not in service after ${ENDPOINT_POLL_LIMIT} checks, ${ENDPOINT_POLL_LIMIT * ENDPOINT_POLL_SECONDS} seconds.`,
  });
  const countPoll = new sfn.Pass(scope, STATES.countPoll, {
    parameters: { 'count.$': 'States.MathAdd($.polls.count, 1)' },
    resultPath: '$.polls',
  });
  const waitForEndpoint = new sfn.Wait(scope, STATES.waitForEndpoint, { time: sfn.WaitTime.duration(Duration.seconds(ENDPOINT_POLL_SECONDS)) });
  const describeEndpoint = sagemakerTask(scope, STATES.describeEndpoint, 'aws-sdk:sagemaker:describeEndpoint', {
    Parameters: { 'EndpointName.$': '$.run.serving.endpointName' },
    ResultPath: '$.endpoint',
  });
  retry(describeEndpoint, 'read');
  catchInto(describeEndpoint, endpointFailed);
  const inService = sfn.Condition.stringEquals('$.endpoint.EndpointStatus', 'InService');
  const endpointReady = new sfn.Choice(scope, STATES.endpointReady)
    .when(sfn.Condition.and(inService, sfn.Condition.stringEqualsJsonPath('$.endpoint.EndpointConfigName', '$.run.serving.endpointConfigName')), next)
    // In service on another config: the update failed and SageMaker rolled it back.
    .when(
      sfn.Condition.or(inService, ...['Failed', 'UpdateRollbackFailed', 'OutOfService', 'Deleting'].map((s) => sfn.Condition.stringEquals('$.endpoint.EndpointStatus', s))),
      endpointNotInService,
    )
    .when(sfn.Condition.numberGreaterThanEquals('$.polls.count', ENDPOINT_POLL_LIMIT), endpointTimedOut)
    .otherwise(waitForEndpoint);
  waitForEndpoint.next(describeEndpoint).next(countPoll).next(endpointReady);
  return waitForEndpoint;
}
