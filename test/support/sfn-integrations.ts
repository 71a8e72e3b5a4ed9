import { types } from 'node:util';
import type { StateMachineDefinition } from 'aws-local-stepfunctions';
import { allStates, taskError } from './local-sfn';
import type { JsonValue, TaskHandler } from './local-sfn';
import { SAGEMAKER_RULES } from './sagemaker-rules';
import type { Call, ServiceError, ServiceRules } from './sagemaker-rules';
import { checkRequest } from './sdk-shapes';

/** An AWS SDK v3 client and its package's exports, which hold the `<Action>Command` and error classes. */
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
   * Local code for the Lambda functions the definition invokes, keyed by the function's logical id
   * without CDK's 8-character hash (`PrepareFunction` serves `…:function:PrepareFunction1A2B3C4D`).
   */
  readonly lambdas?: Record<string, LocalFunction>;
  /** Milliseconds between polls of a `.sync` job. @default 0 */
  readonly syncPollMs?: number;
}

/** The optimized integrations Step Functions offers (its developer guide), and which of them run `.sync` here. */
const OPTIMIZED: Record<string, { readonly actions: readonly string[]; readonly sync: readonly string[] }> = {
  sagemaker: {
    actions: [
      'createEndpoint',
      'createEndpointConfig',
      'createHyperParameterTuningJob',
      'createLabelingJob',
      'createModel',
      'createProcessingJob',
      'createTrainingJob',
      'createTransformJob',
      'updateEndpoint',
    ],
    sync: ['createTrainingJob'],
  },
  sns: { actions: ['publish'], sync: [] },
};

/** How `.sync` completes: poll the describe call until a terminal status. */
const SYNC_JOBS: Record<string, { describe: string; field: string; status: string; succeeded: string[]; failed: string[] }> = {
  'sagemaker:createTrainingJob': {
    describe: 'describeTrainingJob',
    field: 'TrainingJobName',
    status: 'TrainingJobStatus',
    succeeded: ['Completed'],
    failed: ['Failed', 'Stopped'],
  },
};

/** Service rules the local server lacks. */
const RULES: Record<string, ServiceRules> = { sagemaker: SAGEMAKER_RULES };

/** Step Functions sends a JSON object given for these string fields as its JSON text. */
const SERIALIZED_FIELDS: Record<string, string[]> = { 'sns:publish': ['Message'] };

/** Polls before a `.sync` job that never ends is reported rather than waited on for ever. */
const MAX_SYNC_POLLS = 1000;

const LAMBDA_INVOKE = /^arn:[^:]+:states:::lambda:invoke$/;
const LAMBDA_ARN = /^arn:[^:]+:lambda:[^:]+:\d+:function:([^:]+)$/;
const SDK_INTEGRATION = /^arn:[^:]+:states:::aws-sdk:([a-z0-9]+):([A-Za-z0-9]+)$/;
const OPTIMIZED_INTEGRATION = /^arn:[^:]+:states:::([a-z0-9]+):([A-Za-z0-9]+)(\.sync)?$/;

/**
 * An error no Retry or Catch may handle: a request Step Functions itself would refuse
 * (States.Runtime), or a fault of the harness. A workflow must never route those into its own
 * failure path as if a service had answered.
 */
class UncatchableError extends Error {
  constructor(name: string, message: string) {
    super(message);
    this.name = name;
  }
  get isCatchable(): boolean {
    return false;
  }
  get isRetryable(): boolean {
    return false;
  }
}

const pascal = (action: string) => action.charAt(0).toUpperCase() + action.slice(1);

/**
 * A service error under the name Step Functions gives it: `<Service>.<Name>Exception` (suffix added
 * where the service omits it) for an error the service's API model lists. One it does not list,
 * such as SageMaker's ValidationException, takes the SDK's generic class name: `<Service>.<Service>Exception`
 * from an AWS SDK integration (`SageMaker.SageMakerException`), `<Service>.Amazon<Service>Exception`
 * from an optimized one (`SageMaker.AmazonSageMakerException`).
 */
function serviceError(prefix: string, optimized: boolean, error: ServiceError): Error {
  const name = error.name.endsWith('Exception') ? error.name : `${error.name}Exception`;
  const generic = optimized ? `${prefix}.Amazon${prefix}Exception` : `${prefix}.${prefix}Exception`;
  return taskError(error.modeled ? `${prefix}.${name}` : generic, error.message);
}

/** An API response as Step Functions passes it on: plain JSON, without the SDK's `$metadata`. */
function asJson(response: unknown): Record<string, JsonValue> {
  const { $metadata: _metadata, ...rest } = (response ?? {}) as Record<string, unknown>;
  return JSON.parse(JSON.stringify(rest)) as Record<string, JsonValue>;
}

function commandOf(service: SdkService, action: string): new (input: never) => unknown {
  const Command = service.commands[`${pascal(action)}Command`];
  if (typeof Command !== 'function') throw new Error(`The SDK package given for ${service.errorPrefix} has no ${pascal(action)}Command`);
  return Command as new (input: never) => unknown;
}

function isServiceError(error: unknown): error is ServiceError {
  return typeof error === 'object' && error !== null && typeof (error as ServiceError).modeled === 'boolean';
}

/** Sends one request through the SDK; SDK service exceptions become ServiceErrors, anything else a harness fault. */
function caller(service: SdkService): Call {
  return async (action, input) => {
    try {
      return asJson(await service.client.send(new (commandOf(service, action))(input as never) as never));
    } catch (error) {
      const fault = (error as { $fault?: string }).$fault;
      if (fault === undefined || !(error instanceof Error)) {
        throw new UncatchableError('LocalHarnessError', `The local server could not answer ${action} (is it implemented there?): ${String(error)}`);
      }
      const ModeledClass = service.commands[error.name];
      throw { name: error.name, message: error.message, modeled: typeof ModeledClass === 'function' && error instanceof ModeledClass } satisfies ServiceError;
    }
  };
}

function serviceHandler(stateName: string, serviceName: string, action: string, kind: 'optimized' | 'sync' | 'sdk', options: IntegrationOptions): TaskHandler {
  const service = options.services?.[serviceName];
  if (!service) throw new Error(`State ${stateName} calls ${serviceName}:${action}, but no SDK service "${serviceName}" was given`);
  if (kind !== 'sdk' && !OPTIMIZED[serviceName]?.actions.includes(action)) {
    throw new Error(`State ${stateName}: ${serviceName}:${action} is not an optimized Step Functions integration; use arn:aws:states:::aws-sdk:${serviceName}:${action}`);
  }
  const job = SYNC_JOBS[`${serviceName}:${action}`];
  if (kind === 'sync' && !(OPTIMIZED[serviceName].sync.includes(action) && job)) {
    throw new Error(`State ${stateName}: the harness has no .sync support for ${serviceName}:${action} yet; add it to SYNC_JOBS`);
  }
  const Command = commandOf(service, action);
  const call = caller(service);
  const rules = RULES[serviceName];
  const optimized = kind !== 'sdk';
  const translated = (error: unknown) => (isServiceError(error) ? serviceError(service.errorPrefix, optimized, error) : error);

  const request = async (raw: JsonValue): Promise<Record<string, JsonValue>> => {
    const given = { ...(raw as Record<string, JsonValue>) };
    for (const field of SERIALIZED_FIELDS[`${serviceName}:${action}`] ?? []) {
      if (given[field] !== null && typeof given[field] === 'object') given[field] = JSON.stringify(given[field]);
    }
    const { input, problems } = checkRequest(Command, given);
    if (problems.runtime.length > 0) throw new UncatchableError('States.Runtime', `${stateName}: ${problems.runtime.join('; ')}`);
    try {
      if (problems.validation.length > 0) {
        throw { name: 'ValidationException', message: problems.validation.join('; '), modeled: false } satisfies ServiceError;
      }
      const refused = await rules?.check(action, input as Record<string, unknown>, call);
      if (refused) throw refused;
      const emulated = rules?.emulated[action];
      return (emulated ? await emulated(input as Record<string, unknown>, call) : await call(action, input as Record<string, unknown>)) as Record<string, JsonValue>;
    } catch (error) {
      throw translated(error);
    }
  };

  return async (raw) => {
    const created = await request(raw);
    if (kind !== 'sync') return created;
    const name = (raw as Record<string, JsonValue>)[job.field];
    for (let poll = 0; poll < MAX_SYNC_POLLS; poll++) {
      let described: Record<string, JsonValue>;
      try {
        described = (await call(job.describe, { [job.field]: name })) as Record<string, JsonValue>;
      } catch (error) {
        throw translated(error);
      }
      const status = String(described[job.status]);
      if (job.succeeded.includes(status)) return described;
      // Step Functions fails a .sync task whose job failed with States.TaskFailed, the description as cause.
      if (job.failed.includes(status)) throw taskError('States.TaskFailed', JSON.stringify(described));
      await new Promise((resolve) => setTimeout(resolve, options.syncPollMs ?? 0));
    }
    throw new UncatchableError('LocalHarnessError', `${stateName}: ${String(name)} did not finish within ${MAX_SYNC_POLLS} polls`);
  };
}

/** The local code for a function, by its resolved name or ARN: the logical id, with or without CDK's hash. */
function localFunction(lambdas: Record<string, LocalFunction>, arnOrName: string): LocalFunction | string {
  const name = LAMBDA_ARN.exec(arnOrName)?.[1] ?? arnOrName;
  const keys = Object.keys(lambdas).filter((key) => name === key || (name.startsWith(key) && /^[0-9A-F]{8}$/.test(name.slice(key.length))));
  return keys.length === 1 ? lambdas[keys[0]] : `${arnOrName}: expected one local function for it, found ${JSON.stringify(keys)}`;
}

function lambdaHandler(stateName: string, parameters: Record<string, unknown> | undefined, lambdas: Record<string, LocalFunction>, fixedArn?: string): TaskHandler {
  // A function named in the definition is looked up now, so a missing one fails before anything runs.
  const staticName = fixedArn ?? (typeof parameters?.FunctionName === 'string' ? parameters.FunctionName : undefined);
  if (staticName !== undefined) {
    const found = localFunction(lambdas, staticName);
    if (typeof found === 'string') throw new Error(`State ${stateName} invokes ${found}`);
  }
  return async (input) => {
    const request = (fixedArn ? { FunctionName: fixedArn, Payload: input } : input) as { FunctionName: string; Payload?: JsonValue; InvocationType?: string };
    const found = localFunction(lambdas, request.FunctionName);
    if (typeof found === 'string') throw new UncatchableError('LocalHarnessError', `State ${stateName} invokes ${found}`);
    let result: unknown;
    try {
      result = await found(request.Payload ?? null);
    } catch (error) {
      // A function error surfaces under its type, with the runtime's error document as the cause.
      const errorType = types.isNativeError(error) ? (error as Error).name : typeof error;
      const errorMessage = types.isNativeError(error) ? (error as Error).message : String(error);
      throw taskError(errorType, JSON.stringify({ errorType, errorMessage, trace: [] }));
    }
    const payload = result === undefined ? null : (JSON.parse(JSON.stringify(result)) as JsonValue);
    if (fixedArn) return payload;
    if (request.InvocationType === 'Event') return { StatusCode: 202, Payload: '' };
    return { StatusCode: 200, ExecutedVersion: '$LATEST', Payload: payload };
  };
}

/**
 * Task handlers that answer a definition's service integrations as Step Functions and the services
 * would, but locally: Lambda tasks run the real handler code; service tasks go through the real AWS
 * SDK v3 clients the test supplies (usually pointed at moto). On the way, each request is checked
 * against the SDK's own request shape (an unknown field or a wrong type fails with States.Runtime,
 * as in Step Functions, which no Retry or Catch handles; a missing required member is the
 * service's validation error), and against the service rules moto does not enforce
 * (sagemaker-rules.ts). Errors get Step Functions' names.
 *
 * Supported: `lambda:invoke` and plain Lambda ARNs; `aws-sdk:<service>:<action>`; the optimized
 * `<service>:<action>` integrations in OPTIMIZED; `.sync` for the jobs in SYNC_JOBS.
 * Known differences: timestamps in results are ISO strings; results of camelCase APIs (ECS, SFN)
 * keep the SDK's camelCase member names, where Step Functions returns PascalCase.
 *
 * @throws before anything runs, if a Task state cannot be answered locally
 */
export function integrationHandlers(definition: StateMachineDefinition, options: IntegrationOptions): Record<string, TaskHandler> {
  const handlers: Record<string, TaskHandler> = {};
  for (const [stateName, { Type, Resource = '', Parameters }] of allStates(definition)) {
    if (Type !== 'Task') continue;
    let match: RegExpExecArray | null;
    if (LAMBDA_INVOKE.test(Resource)) {
      handlers[stateName] = lambdaHandler(stateName, Parameters, options.lambdas ?? {});
    } else if (LAMBDA_ARN.test(Resource)) {
      handlers[stateName] = lambdaHandler(stateName, undefined, options.lambdas ?? {}, Resource);
    } else if ((match = SDK_INTEGRATION.exec(Resource))) {
      handlers[stateName] = serviceHandler(stateName, match[1], match[2], 'sdk', options);
    } else if ((match = OPTIMIZED_INTEGRATION.exec(Resource))) {
      handlers[stateName] = serviceHandler(stateName, match[1], match[2], match[3] ? 'sync' : 'optimized', options);
    } else {
      throw new Error(`State ${stateName}: no local integration for Resource ${Resource}`);
    }
  }
  return handlers;
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
