import type { DedicatedServing, PrepareSettings, SharedServing, Tag } from '../shared/contract';
import { MODEL_TYPES, servingModelInputs, STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS } from '../shared/models';
import { endpointName } from '../shared/names';
import { show } from './errors';
import type { ResolvedOptions } from './input';
import { hasInstanceStorage } from './resources';

/**
 * How a run is served. In a shared deployment (endpoint.mode 'shared'), a run of the deploy-time
 * modelType and baseModel registers its LoRA for the shared endpoint, which serves it per request;
 * any other run gets an endpoint of its own, as every run does in a dedicated deployment, and its
 * output says why.
 */

export type ServingDecision = { readonly mode: 'shared'; readonly shared: { readonly endpointName: string; readonly inferenceComponentName: string } } | { readonly mode: 'dedicated'; readonly because?: string };

export function servingDecision(options: ResolvedOptions, settings: PrepareSettings): ServingDecision {
  const shared = settings.endpoint.shared;
  if (settings.endpoint.mode !== 'shared' || shared === undefined) return { mode: 'dedicated' };
  const reasons: string[] = [];
  if (options.modelType.value !== settings.modelType) {
    reasons.push(`its modelType ${options.modelType.value} (${options.modelType.source}) is not the shared endpoint's ${settings.modelType}`);
  }
  if (options.baseModel.value !== settings.baseModel) {
    reasons.push(`its baseModel ${options.baseModel.value} (${options.baseModel.source}) is not the shared endpoint's ${settings.baseModel}`);
  }
  if (reasons.length === 0) return { mode: 'shared', shared };
  return { mode: 'dedicated', because: `The shared endpoint ${shared.endpointName} cannot serve this run: ${reasons.join(', and ')}; it gets an endpoint of its own.` };
}

/** The names a dedicated endpoint may never take: the shared endpoint's, in this deployment or after a switch of mode. */
function reservedEndpointNames(settings: PrepareSettings): string[] {
  const names = MODEL_TYPES.map((type) => `${settings.namePrefix}-shared-${type}`);
  const current = settings.endpoint.shared?.endpointName;
  return current !== undefined && !names.includes(current) ? [...names, current] : names;
}

/** The dedicated endpoint a run would create or update: `endpoint.name`, else one named from its stable name. */
export function dedicatedEndpointName(options: ResolvedOptions, settings: PrepareSettings, stableName: string): string {
  return options.endpoint.name ?? endpointName(settings.namePrefix, stableName);
}

/** Problems of the run's serving options: endpoint options a shared run cannot use, a name reserved for the shared endpoint. */
export function servingProblems(options: ResolvedOptions, settings: PrepareSettings, stableName: string): string[] {
  const decision = servingDecision(options, settings);
  if (decision.mode === 'shared') {
    const given = [
      ...(options.endpoint.name !== undefined ? [`"endpoint.name" = ${show(options.endpoint.name)}`] : []),
      ...(options.endpoint.instanceType.source !== 'deploy-time configuration' ? [`"endpoint.instanceType" (${options.endpoint.instanceType.source})`] : []),
      ...(options.endpoint.instanceCount.source !== 'deploy-time configuration' ? [`"endpoint.instanceCount" (${options.endpoint.instanceCount.source})`] : []),
    ];
    if (given.length === 0) return [];
    return [
      `${given.join(', ')} ${given.length === 1 ? 'applies' : 'apply'} only to a dedicated endpoint, but this run is served by the shared endpoint ` +
        `${decision.shared.endpointName} (the deployment's endpoint.mode is shared): remove ${given.length === 1 ? 'it' : 'them'}, ` +
        'or deploy with -c endpoint.mode=dedicated for endpoints of their own',
    ];
  }
  const name = dedicatedEndpointName(options, settings, stableName);
  // SageMaker compares endpoint names without case (its ARNs are lowercase): so does this check.
  if (!reservedEndpointNames(settings).some((reserved) => reserved.toLowerCase() === name.toLowerCase())) return [];
  const from = options.endpoint.name !== undefined ? '"endpoint.name"' : `the run's name ${show(stableName)}`;
  return [`${from} gives the endpoint name ${name}, which is reserved for the shared endpoint: give another "name" or "endpoint.name"`];
}

export interface DedicatedParts {
  readonly run: string;
  readonly stableName: string;
  readonly options: ResolvedOptions;
  readonly settings: PrepareSettings;
  readonly networkIsolation: boolean;
  readonly tags: Tag[];
  readonly because?: string;
}

/** Per-run fields of CreateModel, CreateEndpointConfig and Create/UpdateEndpoint of a dedicated run. */
export function dedicatedServing(parts: DedicatedParts): DedicatedServing {
  const { run, options, settings } = parts;
  const endpointType = options.endpoint.instanceType.value;
  const model = servingModelInputs(options.modelType.value, options.baseModel.value, settings.endpoint.loraScale, {
    huggingFaceTokenSecretId: settings.huggingFaceTokenSecretId,
    // Prepare runs in the stack's region: a secret given by name is found there.
    region: process.env.AWS_REGION,
  });
  return {
    mode: 'dedicated',
    ...(parts.because !== undefined ? { dedicatedBecause: parts.because } : {}),
    modelName: run,
    endpointConfigName: run,
    endpointName: dedicatedEndpointName(options, settings, parts.stableName),
    environment: model.environment,
    additionalModelDataSources: model.additionalModelDataSources,
    networkIsolation: parts.networkIsolation,
    endpointConfig: {
      EndpointConfigName: run,
      ...(hasInstanceStorage(endpointType) ? {} : { KmsKeyId: settings.keyArn }),
      ProductionVariants: [
        {
          VariantName: 'AllTraffic',
          ModelName: run,
          InstanceType: endpointType,
          InitialInstanceCount: options.endpoint.instanceCount.value,
          // The deployment's limit is its own model type's; a FLUX.1 run in an SD deployment downloads ~34 GB at start.
          ContainerStartupHealthCheckTimeoutInSeconds: Math.max(settings.endpoint.startupHealthCheckTimeoutSeconds, STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS[options.modelType.value]),
          ModelDataDownloadTimeoutInSeconds: settings.endpoint.modelDataDownloadTimeoutSeconds,
        },
      ],
      Tags: parts.tags,
    },
  };
}

export function sharedServing(decision: Extract<ServingDecision, { mode: 'shared' }>): SharedServing {
  return { mode: 'shared', endpointName: decision.shared.endpointName, inferenceComponentName: decision.shared.inferenceComponentName };
}
