/**
 * What `cleanup <dataset>` deletes: the dataset's SageMaker models, endpoint configs and dedicated
 * endpoints that no longer serve it. Pure: the inventory (sagemaker-inventory.ts) is read first,
 * and this decides, so that every rule is tested without AWS.
 *
 * The rules, from the safest:
 * - the endpoint that serves the dataset's newest run (among those in service, else among all) is
 *   kept, with its current config and that config's models;
 * - an endpoint in a transition (Creating, Updating, RollingBack, …) is kept with its current and
 *   pending configs: a run is deploying to it, and SageMaker would refuse or break the change;
 * - configs and models of runs newer than the serving one are kept: a run may be deploying them;
 * - with no endpoint at all, the newest run's config and models are kept, to deploy again;
 * - the shared endpoint is never touched, whatever its tags say, nor its configs and models;
 * - a config another dataset's endpoint of the pipeline is on or moving to is kept, with its models:
 *   two folders whose train.json give the same "name" share one endpoint, tagged by the first;
 * - everything else of the dataset is superseded and deleted: endpoints first, then endpoint
 *   configs, then models, so that nothing left refers to something deleted.
 */

export type ResourceKind = 'endpoint' | 'endpoint config' | 'model';

export interface Resource {
  readonly kind: ResourceKind;
  readonly name: string;
  /** The `run` tag: the run that created it. */
  readonly run?: string;
  readonly createdMs?: number;
}

export interface EndpointResource extends Resource {
  readonly kind: 'endpoint';
  readonly status: string;
  readonly configName?: string;
  /** The config an update in progress is moving it to. */
  readonly pendingConfigName?: string;
}

export interface ConfigResource extends Resource {
  readonly kind: 'endpoint config';
  readonly modelNames: readonly string[];
}

export interface Inventory {
  readonly endpoints: readonly EndpointResource[];
  /** The pipeline's endpoints tagged with another dataset: never candidates, but what they use stays. */
  readonly otherEndpoints?: readonly EndpointResource[];
  readonly configs: readonly ConfigResource[];
  readonly models: readonly Resource[];
}

export interface Decision {
  readonly resource: Resource;
  /** Why it is deleted or kept, for the listing. */
  readonly reason: string;
}

export interface CleanupPlan {
  /** In deletion order: endpoints, then configs, then models. */
  readonly remove: readonly Decision[];
  readonly keep: readonly Decision[];
  /** The endpoint kept as the one serving the dataset, if any. */
  readonly serving?: EndpointResource;
}

/** Endpoint states SageMaker can delete an endpoint in without breaking a change under way. */
const SETTLED = new Set(['InService', 'Failed', 'OutOfService']);

/**
 * A run's order: its name ends in `-<14-digit start time>-<hash>` (lambda/shared/names.ts), which
 * says when the run started; the creation time when a name does not.
 */
export function runOrder(resource: Pick<Resource, 'run' | 'createdMs'> | undefined): number {
  const stamp = resource?.run !== undefined ? /-(\d{14})-[A-Za-z0-9]+$/.exec(resource.run)?.[1] : undefined;
  if (stamp !== undefined) return Number(stamp);
  const created = resource?.createdMs !== undefined ? new Date(resource.createdMs).toISOString().replace(/[^0-9]/g, '').slice(0, 14) : undefined;
  return created !== undefined ? Number(created) : 0;
}

function newest<T extends Resource>(items: readonly T[], order: (item: T) => number): T | undefined {
  return [...items].sort((a, b) => order(b) - order(a))[0];
}

/** The endpoint serving the dataset: the one whose current config belongs to the newest run, in service first. */
function servingEndpoint(inventory: Inventory, candidates: readonly EndpointResource[]): EndpointResource | undefined {
  const configOrder = (endpoint: EndpointResource) => runOrder(inventory.configs.find((config) => config.name === endpoint.configName) ?? endpoint);
  const inService = candidates.filter((endpoint) => endpoint.status === 'InService');
  return newest(inService.length > 0 ? inService : candidates, configOrder);
}

export function planCleanup(inventory: Inventory, sharedEndpointName?: string): CleanupPlan {
  const keep = new Map<string, Decision>();
  const keepResource = (resource: Resource, reason: string) => {
    const key = `${resource.kind}/${resource.name}`;
    if (!keep.has(key)) keep.set(key, { resource, reason });
  };
  const isShared = (endpoint: EndpointResource) => sharedEndpointName !== undefined && endpoint.name.toLowerCase() === sharedEndpointName.toLowerCase();
  const keptConfigs = new Map<string, string>();
  // An endpoint that stays keeps the configs it is on or moving to, and through them their models.
  const keepConfigsOf = (endpoint: EndpointResource, whose: string) => {
    if (endpoint.configName !== undefined && !keptConfigs.has(endpoint.configName)) keptConfigs.set(endpoint.configName, `the current config of ${whose}`);
    if (endpoint.pendingConfigName !== undefined) keptConfigs.set(endpoint.pendingConfigName, `the config ${whose} is moving to`);
  };
  const keepEndpoint = (endpoint: EndpointResource, reason: string) => {
    keepResource(endpoint, reason);
    keepConfigsOf(endpoint, endpoint.name);
  };
  for (const endpoint of inventory.endpoints.filter(isShared)) keepEndpoint(endpoint, 'the shared endpoint: never cleaned up');
  const candidates = inventory.endpoints.filter((endpoint) => !isShared(endpoint));
  const serving = servingEndpoint(inventory, candidates);
  if (serving !== undefined) keepEndpoint(serving, `serves the dataset (${serving.status})`);
  for (const endpoint of candidates.filter((candidate) => !SETTLED.has(candidate.status))) keepEndpoint(endpoint, `${endpoint.status}: a change is under way`);
  for (const endpoint of inventory.otherEndpoints ?? []) keepConfigsOf(endpoint, `${endpoint.name} (another dataset's endpoint)`);
  const servingConfig = inventory.configs.find((config) => config.name === serving?.configName);
  // Without an endpoint, the newest run is what would be deployed again.
  const cutoff = serving !== undefined ? runOrder(servingConfig ?? serving) : Math.max(0, ...[...inventory.configs, ...inventory.models].map(runOrder));
  const newer = serving !== undefined ? 'newer than the serving run: a run may be deploying it' : 'the newest run\'s: kept to deploy again';
  const isNewer = (resource: Resource) => (serving !== undefined ? runOrder(resource) > cutoff : runOrder(resource) >= cutoff);
  for (const config of inventory.configs) {
    const reason = keptConfigs.get(config.name) ?? (isNewer(config) ? newer : undefined);
    if (reason !== undefined) keepResource(config, reason);
  }
  const keptModels = new Map<string, string>();
  for (const decision of keep.values()) {
    if (decision.resource.kind !== 'endpoint config') continue;
    for (const model of (decision.resource as ConfigResource).modelNames) keptModels.set(model, `used by the kept config ${decision.resource.name}`);
  }
  for (const model of inventory.models) {
    const reason = keptModels.get(model.name) ?? (isNewer(model) ? newer : undefined);
    if (reason !== undefined) keepResource(model, reason);
  }
  const superseded = serving !== undefined ? `superseded: ${serving.name} serves the dataset` : 'superseded by a newer run';
  const remove = [...candidates, ...inventory.configs, ...inventory.models]
    .filter((resource) => !keep.has(`${resource.kind}/${resource.name}`))
    .map((resource) => ({ resource, reason: superseded }));
  return { remove, keep: [...keep.values()], ...(serving !== undefined ? { serving } : {}) };
}
