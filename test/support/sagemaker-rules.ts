/**
 * What SageMaker itself enforces, or does, that the local moto server does not: the rules a
 * workflow must not get past locally when AWS would refuse it.
 */

/** A service error the harness raises as the service would. `modeled` errors have their own SDK class. */
export interface ServiceError {
  readonly name: string;
  readonly message: string;
  readonly modeled: boolean;
}

export type Call = (action: string, input: Record<string, unknown>) => Promise<Record<string, unknown>>;

export interface ServiceRules {
  /** Checks a request before it is sent; returns the error the service would answer with. */
  check(action: string, input: Record<string, unknown>, call: Call): Promise<ServiceError | undefined>;
  /** Local stand-ins for actions the local server does not implement. */
  readonly emulated: Record<string, (input: Record<string, unknown>, call: Call) => Promise<Record<string, unknown>>>;
}

/** SageMaker's pattern for job, model, endpoint config and endpoint names (its API reference). */
const NAME_PATTERN = /^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$/;
const NAME_FIELDS = ['TrainingJobName', 'ModelName', 'EndpointConfigName', 'EndpointName'];

const validation = (message: string): ServiceError => ({ name: 'ValidationException', message, modeled: false });

async function exists(call: Call, action: string, input: Record<string, unknown>): Promise<boolean> {
  try {
    await call(action, input);
    return true;
  } catch {
    return false;
  }
}

/** Names must be new: moto accepts a second resource of the same name, SageMaker does not. */
const CREATES: Record<string, { describe: string; field: string; error: (name: string) => ServiceError }> = {
  createTrainingJob: {
    describe: 'describeTrainingJob',
    field: 'TrainingJobName',
    error: (name) => ({ name: 'ResourceInUse', message: `Training job names must be unique within an AWS account and region, and a training job with this name already exists (${name})`, modeled: true }),
  },
  createModel: { describe: 'describeModel', field: 'ModelName', error: (name) => validation(`Cannot create already existing model "${name}".`) },
  createEndpointConfig: {
    describe: 'describeEndpointConfig',
    field: 'EndpointConfigName',
    error: (name) => validation(`Cannot create already existing endpoint configuration "${name}".`),
  },
  createEndpoint: { describe: 'describeEndpoint', field: 'EndpointName', error: (name) => validation(`Cannot create already existing endpoint "${name}".`) },
};

function spotProblem(input: Record<string, unknown>): ServiceError | undefined {
  const stopping = (input.StoppingCondition ?? {}) as { MaxRuntimeInSeconds?: number; MaxWaitTimeInSeconds?: number };
  if (input.EnableManagedSpotTraining === true) {
    if (stopping.MaxWaitTimeInSeconds === undefined) return validation('MaxWaitTimeInSeconds is required for managed spot training.');
    if (stopping.MaxWaitTimeInSeconds < (stopping.MaxRuntimeInSeconds ?? 86400)) {
      return validation('MaxWaitTimeInSeconds must be greater than or equal to MaxRuntimeInSeconds for managed spot training.');
    }
  } else if (stopping.MaxWaitTimeInSeconds !== undefined) {
    return validation('MaxWaitTimeInSeconds can only be set for managed spot training.');
  }
  return undefined;
}

export const SAGEMAKER_RULES: ServiceRules = {
  async check(action, input, call) {
    for (const field of NAME_FIELDS) {
      const value = input[field];
      if (typeof value === 'string' && !NAME_PATTERN.test(value)) {
        return validation(`1 validation error detected: Value '${value}' at '${field}' failed to satisfy constraint: Member must satisfy regular expression pattern: ${NAME_PATTERN.source}`);
      }
    }
    if (action === 'createTrainingJob') {
      const spot = spotProblem(input);
      if (spot) return spot;
    }
    const create = CREATES[action];
    if (create) {
      const name = String(input[create.field]);
      if (await exists(call, create.describe, { [create.field]: name })) return create.error(name);
    }
    return undefined;
  },
  emulated: {
    /** moto has no UpdateEndpoint: check as SageMaker does, then re-create the endpoint on the new config. */
    async updateEndpoint(input, call) {
      const endpoint = await call('describeEndpoint', { EndpointName: input.EndpointName });
      await call('describeEndpointConfig', { EndpointConfigName: input.EndpointConfigName });
      if (endpoint.EndpointStatus !== 'InService') {
        throw { name: 'ValidationException', message: `Cannot update in-progress endpoint "${String(input.EndpointName)}".`, modeled: false } satisfies ServiceError;
      }
      await call('deleteEndpoint', { EndpointName: input.EndpointName });
      return call('createEndpoint', { EndpointName: input.EndpointName, EndpointConfigName: input.EndpointConfigName });
    },
  },
};
