import { Duration } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import type { Construct } from 'constructs';
import { LORA_ERRORS, STATES } from '../../lambda/shared/contract';
import type { FailurePath } from './fail-and-clean-up';
import { catchInto, EXECUTION, invokeFunction, retryLoraTask } from './tasks';

/**
 * Another invocation holds the registration, or a transaction lost a race: wait for it. A claim
 * lasts up to 11 minutes (lambda/registry/register.ts), so the waits add up to more (18.5 minutes),
 * without jitter, which would shorten them and helps little with two contenders.
 */
export const REGISTRY_BUSY_RETRY = { interval: Duration.seconds(10), backoffRate: 2, maxDelay: Duration.minutes(2), maxAttempts: 12 } as const;

/**
 * A registry function call, its answer at `resultPath`. Every action is idempotent (a register
 * retried for the same execution answers the version it allocated, even while the first
 * invocation still runs), so trying again is safe.
 */
export function registryTask(scope: Construct, name: string, registry: lambda.IFunction, payload: Record<string, unknown>, resultPath: string): tasks.LambdaInvoke {
  const task = invokeFunction(scope, name, registry, payload, resultPath);
  retryLoraTask(task, { errors: [LORA_ERRORS.registryBusy], ...REGISTRY_BUSY_RETRY });
  return task;
}

/**
 * Register LoRA: the registry allocates the name's next version for the trained file (status
 * 'pending', not yet served by the name alone), at `$.lora`; then `next`.
 */
export function registerLora(scope: Construct, registry: lambda.IFunction, failure: FailurePath, next: sfn.IChainable): sfn.State {
  const register = registryTask(
    scope,
    STATES.registerLora,
    registry,
    { action: 'register', 'run.$': '$.run', 'training.$': '$.training', execution: { ...EXECUTION, 'arn.$': '$$.Execution.Id' } },
    '$.lora',
  );
  catchInto(register, failure.caught(STATES.registrationFailed));
  register.next(next);
  return register;
}

/**
 * Make LoRA current: after its check, the version becomes `ready` and the name's current one,
 * unless a newer version already is; `{current}` at `$.promotion`; then `next`.
 */
export function makeLoraCurrent(scope: Construct, registry: lambda.IFunction, failure: FailurePath, next: sfn.IChainable): sfn.State {
  const promote = registryTask(scope, STATES.makeLoraCurrent, registry, { action: 'promote', 'name.$': '$.lora.name', 'version.$': '$.lora.version' }, '$.promotion');
  catchInto(promote, failure.caught(STATES.promotionFailed));
  promote.next(next);
  return promote;
}
