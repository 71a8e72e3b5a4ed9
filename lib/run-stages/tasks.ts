import { Duration, Stack } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import type { Construct } from 'constructs';
import { LORA_REFUSALS } from '../../lambda/shared/contract';

/** The execution's name and start time, as the functions that name a run receive them. */
export const EXECUTION = { 'name.$': '$$.Execution.Name', 'startTime.$': '$$.Execution.StartTime' };

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

export type RetryKind = Exclude<keyof typeof RETRIES, 'resourceLimit'>;

/** Retries a SageMaker call for the quota, then for each of `kinds`, with full jitter. */
export function retry(state: sfn.CustomState, ...kinds: RetryKind[]): void {
  for (const kind of ['resourceLimit', ...kinds] as const) {
    state.addRetry({ ...RETRIES[kind], errors: [...RETRIES[kind].errors], jitterStrategy: sfn.JitterType.FULL });
  }
}

/** A Task state calling SageMaker (`action`: `sagemaker:<api>` optimized, or `aws-sdk:sagemaker:<api>`), its other fields as in ASL. */
export function sagemakerTask(scope: Construct, name: string, action: string, fields: Record<string, unknown>): sfn.CustomState {
  const { partition } = Stack.of(scope);
  return new sfn.CustomState(scope, name, { stateJson: { Type: 'Task', Resource: `arn:${partition}:states:::${action}`, ...fields } });
}

/** Sends every error of `state` to `handler`, with the error at `$.error`. */
export function catchInto(state: sfn.CustomState | tasks.LambdaInvoke, handler: sfn.IChainable): void {
  state.addCatch(handler, { errors: [sfn.Errors.ALL], resultPath: '$.error' });
}

/**
 * A Lambda task of one of our functions, its answer at `resultPath`. Lambda's own errors (service
 * errors, throttling) are retried; the function's are left to the caller's retries and catches.
 */
export function invokeFunction(scope: Construct, name: string, fn: lambda.IFunction, payload: Record<string, unknown>, resultPath: string): tasks.LambdaInvoke {
  const task = new tasks.LambdaInvoke(scope, name, {
    lambdaFunction: fn,
    payloadResponseOnly: true,
    payload: sfn.TaskInput.fromObject(payload),
    resultPath,
    retryOnServiceExceptions: true,
  });
  task.addRetry({ errors: ['Lambda.TooManyRequestsException'], interval: Duration.seconds(2), backoffRate: 2, maxAttempts: 5, jitterStrategy: sfn.JitterType.FULL });
  return task;
}

/**
 * Retries of a task of our functions: their refusals (LORA_REFUSALS) never, since the same call
 * is refused again; `specific` retriers next; then anything else (an S3 stream reset or timeout,
 * SlowDown after the SDK's own attempts, DynamoDB throttling or faults, a Lambda fault) a few
 * times with backoff and jitter. The refusals come first: Step Functions uses the first retrier
 * that lists an error, and States.ALL lists them all.
 */
export function retryLoraTask(task: tasks.LambdaInvoke, ...specific: sfn.RetryProps[]): void {
  task.addRetry({ errors: [...LORA_REFUSALS], maxAttempts: 0 });
  for (const retrier of specific) task.addRetry(retrier);
  task.addRetry({ errors: [sfn.Errors.ALL], interval: Duration.seconds(5), backoffRate: 2, maxAttempts: 4, jitterStrategy: sfn.JitterType.FULL });
}
