import type { StateMachineDefinition } from 'aws-local-stepfunctions';
import { taskError } from './local-sfn';
import type { JsonValue, TaskHandler } from './local-sfn';

/** An AWS SDK v3 client and its package's exports, which hold the `<Action>Command` classes. */
export interface SdkService {
  /** e.g. `new SageMakerClient(moto.clientConfig)`. */
  readonly client: { send(command: never): Promise<unknown> };
  /** e.g. `import * as sagemaker from '@aws-sdk/client-sagemaker'`. */
  readonly commands: Record<string, unknown>;
  /** The service's name in Step Functions error names, e.g. `SageMaker` in `SageMaker.ResourceLimitExceededException`. */
  readonly errorPrefix: string;
}

/** What a Lambda handler under test gets and returns: the invocation's payload and the function's result. */
export type LocalFunction = (payload: JsonValue) => Promise<unknown> | unknown;

export interface IntegrationOptions {
  /** SDK services by the lowercase name Resource ARNs use (`sagemaker`, `sns`). */
  readonly services?: Record<string, SdkService>;
  /**
   * Local code for the Lambda functions the definition invokes, keyed by the start of the function's
   * logical id (`PrepareFunction` matches the resolved `…:function:PrepareFunction1A2B3C4D`).
   */
  readonly lambdas?: Record<string, LocalFunction>;
  /** Milliseconds between polls of a `.sync` job. @default 0 */
  readonly syncPollMs?: number;
}

/** How Step Functions completes a `.sync` integration: poll the describe call until a terminal status. */
interface SyncJob {
  readonly describe: string;
  readonly nameField: string;
  readonly statusField: string;
  readonly succeeded: readonly string[];
  readonly failed: readonly string[];
}

const SYNC_JOBS: Record<string, SyncJob> = {
  'sagemaker:createTrainingJob': {
    describe: 'DescribeTrainingJob',
    nameField: 'TrainingJobName',
    statusField: 'TrainingJobStatus',
    succeeded: ['Completed'],
    failed: ['Failed', 'Stopped'],
  },
};

/** Polls before a `.sync` job that never ends is reported rather than waited on for ever. */
const MAX_SYNC_POLLS = 1000;

const LAMBDA_INVOKE = /^arn:[^:]+:states:::lambda:invoke$/;
const LAMBDA_ARN = /^arn:[^:]+:lambda:[^:]+:\d+:function:([^:]+)$/;
const SDK_INTEGRATION = /^arn:[^:]+:states:::aws-sdk:([a-z0-9]+):([A-Za-z0-9]+)$/;
const OPTIMIZED_INTEGRATION = /^arn:[^:]+:states:::([a-z0-9]+):([A-Za-z0-9]+)(\.sync)?$/;

const pascal = (action: string) => action.charAt(0).toUpperCase() + action.slice(1);

/** Step Functions names service errors `<Service>.<Name>Exception`, adding the suffix where the service omits it. */
function stepFunctionsErrorName(prefix: string, error: unknown): string {
  const name = error instanceof Error ? error.name : 'UnknownError';
  return `${prefix}.${name.endsWith('Exception') ? name : `${name}Exception`}`;
}

/** An API response as Step Functions passes it on: plain JSON, without the SDK's `$metadata`. */
function asJson(response: unknown): JsonValue {
  const { $metadata: _metadata, ...rest } = (response ?? {}) as Record<string, unknown>;
  return JSON.parse(JSON.stringify(rest)) as JsonValue;
}

async function callSdk(service: SdkService, action: string, input: JsonValue): Promise<unknown> {
  const Command = service.commands[`${pascal(action)}Command`] as (new (input: unknown) => unknown) | undefined;
  if (!Command) throw new Error(`The SDK package given for ${service.errorPrefix} has no ${pascal(action)}Command`);
  try {
    return await service.client.send(new Command(input) as never);
  } catch (error) {
    throw taskError(stepFunctionsErrorName(service.errorPrefix, error), error instanceof Error ? error.message : String(error));
  }
}

function lambdaHandler(stateName: string, lambdas: Record<string, LocalFunction>, fixedArn?: string): TaskHandler {
  const find = (arn: string): LocalFunction => {
    const name = LAMBDA_ARN.exec(arn)?.[1] ?? arn;
    const keys = Object.keys(lambdas).filter((key) => name.startsWith(key));
    if (keys.length !== 1) throw new Error(`State ${stateName} invokes ${arn}: expected one local function for it, found ${JSON.stringify(keys)}`);
    return lambdas[keys[0]];
  };
  return async (input) => {
    const { FunctionName, Payload } = (fixedArn ? { FunctionName: fixedArn, Payload: input } : input) as { FunctionName: string; Payload: JsonValue };
    const local = find(FunctionName);
    let result: unknown;
    try {
      result = await local(Payload ?? null);
    } catch (error) {
      // A function error surfaces under the error's type, with the runtime's error document as cause.
      const { name, message } = error instanceof Error ? error : new Error(String(error));
      throw taskError(name, JSON.stringify({ errorType: name, errorMessage: message, trace: [] }));
    }
    const payload = result === undefined ? null : (JSON.parse(JSON.stringify(result)) as JsonValue);
    return fixedArn ? payload : { StatusCode: 200, ExecutedVersion: '$LATEST', Payload: payload };
  };
}

function serviceHandler(stateName: string, serviceName: string, action: string, sync: boolean, options: IntegrationOptions): TaskHandler {
  const service = options.services?.[serviceName];
  if (!service) throw new Error(`State ${stateName} calls ${serviceName}:${action}, but no SDK service "${serviceName}" was given`);
  const job = SYNC_JOBS[`${serviceName}:${action}`];
  if (sync && !job) throw new Error(`State ${stateName}: no local .sync support for ${serviceName}:${action}; add it to SYNC_JOBS`);

  return async (input) => {
    const created = await callSdk(service, action, input);
    if (!sync) return asJson(created);
    const name = (input as Record<string, JsonValue>)[job.nameField];
    for (let poll = 0; poll < MAX_SYNC_POLLS; poll++) {
      const described = asJson(await callSdk(service, job.describe, { [job.nameField]: name })) as Record<string, JsonValue>;
      const status = String(described[job.statusField]);
      if (job.succeeded.includes(status)) return described;
      // Step Functions fails a .sync task whose job failed with States.TaskFailed and the describe output as cause.
      if (job.failed.includes(status)) throw taskError('States.TaskFailed', JSON.stringify(described));
      await new Promise((resolve) => setTimeout(resolve, options.syncPollMs ?? 0));
    }
    throw new Error(`State ${stateName}: ${name} did not finish within ${MAX_SYNC_POLLS} polls`);
  };
}

/**
 * Task handlers that answer a definition's service integrations the way Step Functions does, but
 * through the real AWS SDK v3 clients the test supplies (usually pointed at moto) and the real
 * Lambda handler code. A request field the SDK does not know is dropped, as in AWS, so reading the
 * resource back (e.g. DescribeTrainingJob) shows a misspelt field.
 *
 * Supported: `lambda:invoke` and plain Lambda ARNs; `aws-sdk:<service>:<action>`;
 * `<service>:<action>` and, for the jobs in SYNC_JOBS, `<service>:<action>.sync`.
 * Known differences from Step Functions: timestamps in results are ISO strings; SDK errors are named
 * `<Service>.<Name>Exception` for optimized integrations too (Step Functions may report some of them
 * as `SageMaker.AmazonSageMakerException`), so retriers should list both.
 *
 * @throws if a Task state has a Resource without local support, before anything runs
 */
export function integrationHandlers(definition: StateMachineDefinition, options: IntegrationOptions): Record<string, TaskHandler> {
  const handlers: Record<string, TaskHandler> = {};
  const resources = resourcesOf(definition);
  for (const [stateName, resource] of Object.entries(resources)) {
    let match: RegExpExecArray | null;
    if (LAMBDA_INVOKE.test(resource)) {
      handlers[stateName] = lambdaHandler(stateName, options.lambdas ?? {});
    } else if (LAMBDA_ARN.test(resource)) {
      handlers[stateName] = lambdaHandler(stateName, options.lambdas ?? {}, resource);
    } else if ((match = SDK_INTEGRATION.exec(resource))) {
      handlers[stateName] = serviceHandler(stateName, match[1], match[2], false, options);
    } else if ((match = OPTIMIZED_INTEGRATION.exec(resource))) {
      handlers[stateName] = serviceHandler(stateName, match[1], match[2], match[3] === '.sync', options);
    } else {
      throw new Error(`State ${stateName}: no local integration for Resource ${resource}`);
    }
  }
  return handlers;
}

/** The Resource of every Task state, those in Parallel branches and Map processors included. */
function resourcesOf(definition: StateMachineDefinition, found: Record<string, string> = {}): Record<string, string> {
  type State = { Type: string; Resource?: string; Branches?: StateMachineDefinition[]; ItemProcessor?: StateMachineDefinition; Iterator?: StateMachineDefinition };
  for (const [name, raw] of Object.entries(definition.States)) {
    const state = raw as State;
    if (state.Type === 'Task' && state.Resource) found[name] = state.Resource;
    for (const nested of [...(state.Branches ?? []), ...(state.ItemProcessor ? [state.ItemProcessor] : []), ...(state.Iterator ? [state.Iterator] : [])]) {
      resourcesOf(nested, found);
    }
  }
  return found;
}

/** Wraps a handler so that its first `times` calls fail with `error`, as a throttled or quota-limited service would. */
export function failFirst(times: number, error: Error, handler: TaskHandler): TaskHandler {
  let calls = 0;
  return (input) => {
    calls += 1;
    if (calls <= times) throw error;
    return handler(input);
  };
}
