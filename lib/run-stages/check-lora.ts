import { Duration } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type { Construct } from 'constructs';
import { LORA_ERRORS, STATES } from '../../lambda/shared/contract';
import { STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS } from '../../lambda/shared/models';
import type { FailurePath } from './fail-and-clean-up';
import { catchInto, invokeFunction, retryLoraTask } from './tasks';

/**
 * While the shared endpoint scales out from zero it has no copy to serve: the check is tried again
 * every minute, for as long as its container may take to start (20 minutes for SD, 30 for FLUX.1).
 */
export function warmingRetry(startupHealthCheckTimeoutSeconds: number) {
  return { interval: Duration.seconds(60), maxAttempts: Math.ceil(startupHealthCheckTimeoutSeconds / 60) } as const;
}

/** The SD endpoints' warming retry: 20 minutes. */
export const WARMING_RETRY = warmingRetry(STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS.sd15);

/**
 * The endpoint is at capacity, or the server's registry or S3 reads are throttled, or a download was
 * too slow (429, 503, 504): tried again with backoff and full jitter, waits of up to 15 s doubling to
 * 2 minutes, 8 times (at most 12 minutes, about 6 on average): about what autoscaling takes to add an instance.
 */
export const BUSY_RETRY = { interval: Duration.seconds(15), backoffRate: 2, maxDelay: Duration.minutes(2), maxAttempts: 8, jitterStrategy: sfn.JitterType.FULL } as const;

/**
 * What both smoke tests tell the check function besides the endpoint: the model (a FLUX.1 variant's
 * steps and guidance follow its base model), where the images go, and the samples' prompt.
 */
export const SMOKE_FIELDS = {
  'modelType.$': '$.run.modelType',
  'baseModel.$': '$.run.baseModel',
  'trainingJobName.$': '$.run.training.jobName',
  'samples.$': '$.samples',
} as const;

/**
 * Try LoRA on the shared endpoint: the smoke test's request naming the new version (`name@version`),
 * which the server must fetch, verify and generate with, then the same request without a LoRA; its
 * answer at `$.check`; then `next`. Warming and busy answers are retried; the server's refusal of the
 * LoRA (LoraCheckFailed) and identical images (SmokeTestFailed) are not. Whatever still fails fails
 * the run before the version is made current: SmokeTestFailed at stage 'smoke', anything else at
 * stage 'check'; a refusal and a failed smoke test have the clean-up mark the version failed.
 */
export function tryLora(scope: Construct, check: lambda.IFunction, failure: FailurePath, next: sfn.IChainable, warming = WARMING_RETRY): sfn.State {
  const tryIt = invokeFunction(
    scope,
    STATES.tryLora,
    check,
    {
      mode: 'shared',
      'endpointName.$': '$.run.serving.endpointName',
      'inferenceComponentName.$': '$.run.serving.inferenceComponentName',
      lora: { 'name.$': '$.lora.name', 'version.$': '$.lora.version' },
      ...SMOKE_FIELDS,
    },
    '$.check',
  );
  retryLoraTask(tryIt, { errors: [LORA_ERRORS.sharedEndpointWarming], ...warming, backoffRate: 1 }, { errors: [LORA_ERRORS.sharedEndpointBusy], ...BUSY_RETRY });
  // Catchers are tried in order: the smoke test's verdict first, then everything else.
  tryIt.addCatch(failure.caught(STATES.smokeTestFailed), { errors: [LORA_ERRORS.smokeTestFailed], resultPath: '$.error' });
  catchInto(tryIt, failure.caught(STATES.loraCheckFailed));
  tryIt.next(next);
  return tryIt;
}
