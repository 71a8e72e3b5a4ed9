import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type { Construct } from 'constructs';
import { LORA_ERRORS, STATES } from '../../lambda/shared/contract';
import { BUSY_RETRY, SMOKE_FIELDS } from './check-lora';
import type { FailurePath } from './fail-and-clean-up';
import { catchInto, invokeFunction, retryLoraTask } from './tasks';

/**
 * Smoke test the endpoint: a dedicated run's endpoint, once in service on its config, generates
 * the same request with its LoRA and at lora_scale 0 (the check function, mode dedicated; its
 * answer at `$.smoke`); then `next`. A busy endpoint is retried with backoff, throttling and faults
 * briefly; SmokeTestFailed never. Whatever still fails fails the run at stage 'smoke'.
 */
export function smokeTestEndpoint(scope: Construct, check: lambda.IFunction, failure: FailurePath, next: sfn.IChainable): sfn.State {
  const smoke = invokeFunction(scope, STATES.smokeTest, check, { mode: 'dedicated', 'endpointName.$': '$.run.serving.endpointName', ...SMOKE_FIELDS }, '$.smoke');
  retryLoraTask(smoke, { errors: [LORA_ERRORS.endpointBusy], ...BUSY_RETRY });
  catchInto(smoke, failure.caught(STATES.smokeTestFailed));
  smoke.next(next);
  return smoke;
}
