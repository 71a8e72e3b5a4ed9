import {
  DeleteEndpointCommand,
  DeleteEndpointConfigCommand,
  DeleteModelCommand,
  DescribeEndpointCommand,
  DescribeEndpointConfigCommand,
  ListEndpointConfigsCommand,
  ListEndpointsCommand,
  ListModelsCommand,
  ListTagsCommand,
  type SageMakerClient,
} from '@aws-sdk/client-sagemaker';
import { tagValue } from '../lambda/prepare/resources';
import type { ConfigResource, EndpointResource, Inventory, Resource, ResourceKind } from './cleanup-plan';

/**
 * A dataset's SageMaker resources, found by the tags the workflow puts on each (lambda/prepare:
 * `pipeline` = the stack's name, `dataset` = the folder, `run` = the run): only what carries both
 * the pipeline's and the dataset's tag is ever a candidate, so another stack's or a hand-made
 * resource is never listed, let alone deleted. The pipeline's other endpoints are read too, only
 * so that a config one of them uses is kept.
 */

export interface InventoryScope {
  /** The `pipeline` tag's value before tagValue: the stack's name. */
  readonly pipeline: string;
  /** The dataset folder. */
  readonly dataset: string;
  /** The stack's name prefix: models and configs are named `<prefix>-…` (endpoints may be named freely). */
  readonly namePrefix?: string;
}

/** Concurrent ListTags/Describe calls, under SageMaker's per-second quotas. */
const CONCURRENCY = 5;

interface Listed {
  readonly name: string;
  readonly arn: string;
  readonly createdMs?: number;
}

async function mapLimited<T, R>(items: readonly T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  for (let start = 0; start < items.length; start += CONCURRENCY) results.push(...(await Promise.all(items.slice(start, start + CONCURRENCY).map(fn))));
  return results;
}

async function tagsOf(sagemaker: SageMakerClient, arn: string): Promise<Record<string, string>> {
  const tags: Record<string, string> = {};
  let nextToken: string | undefined;
  do {
    const page = await sagemaker.send(new ListTagsCommand({ ResourceArn: arn, NextToken: nextToken }));
    for (const tag of page.Tags ?? []) if (tag.Key !== undefined) tags[tag.Key] = tag.Value ?? '';
    nextToken = page.NextToken;
  } while (nextToken !== undefined);
  return tags;
}

/** Every page of a List call, as names, ARNs and creation times. */
async function listAll(kind: ResourceKind, sagemaker: SageMakerClient, nameContains: string | undefined): Promise<Listed[]> {
  const listed: Listed[] = [];
  let nextToken: string | undefined;
  do {
    const filter = { NameContains: nameContains, NextToken: nextToken, MaxResults: 100 };
    let items: Listed[];
    if (kind === 'endpoint') {
      const page = await sagemaker.send(new ListEndpointsCommand(filter));
      items = (page.Endpoints ?? []).map((e) => ({ name: e.EndpointName ?? '', arn: e.EndpointArn ?? '', createdMs: e.CreationTime?.getTime() }));
      nextToken = page.NextToken;
    } else if (kind === 'endpoint config') {
      const page = await sagemaker.send(new ListEndpointConfigsCommand(filter));
      items = (page.EndpointConfigs ?? []).map((c) => ({ name: c.EndpointConfigName ?? '', arn: c.EndpointConfigArn ?? '', createdMs: c.CreationTime?.getTime() }));
      nextToken = page.NextToken;
    } else {
      const page = await sagemaker.send(new ListModelsCommand(filter));
      items = (page.Models ?? []).map((m) => ({ name: m.ModelName ?? '', arn: m.ModelArn ?? '', createdMs: m.CreationTime?.getTime() }));
      nextToken = page.NextToken;
    }
    listed.push(...items.filter((item) => item.name !== '' && item.arn !== ''));
  } while (nextToken !== undefined);
  return listed;
}

interface Tagged extends Resource {
  /** Whether its `dataset` tag is the dataset's (else it is another dataset's of the same pipeline). */
  readonly ofDataset: boolean;
}

/** The listed resources that carry the pipeline's tag, with their run tag and whether they are the dataset's. */
async function ofPipeline(kind: ResourceKind, sagemaker: SageMakerClient, scope: InventoryScope): Promise<Tagged[]> {
  // Endpoints may be named by the run's `endpoint.name`, without the prefix.
  const listed = await listAll(kind, sagemaker, kind === 'endpoint' ? undefined : scope.namePrefix);
  const pipeline = tagValue(scope.pipeline);
  const dataset = tagValue(scope.dataset);
  const tagged = await mapLimited(listed, async (item) => ({ item, tags: await tagsOf(sagemaker, item.arn) }));
  return tagged
    .filter(({ tags }) => tags.pipeline === pipeline)
    .map(({ item, tags }) => ({
      kind,
      name: item.name,
      ofDataset: tags.dataset === dataset,
      ...(tags.run !== undefined ? { run: tags.run } : {}),
      ...(item.createdMs !== undefined ? { createdMs: item.createdMs } : {}),
    }));
}

/** Only the dataset's, without the marker. */
function own(resources: readonly Tagged[]): Resource[] {
  return resources.filter((resource) => resource.ofDataset).map(({ ofDataset: _, ...resource }) => resource);
}

async function describeEndpoint(sagemaker: SageMakerClient, resource: Resource): Promise<EndpointResource> {
  const endpoint = await sagemaker.send(new DescribeEndpointCommand({ EndpointName: resource.name }));
  return {
    ...resource,
    kind: 'endpoint',
    status: endpoint.EndpointStatus ?? 'Unknown',
    ...(endpoint.EndpointConfigName !== undefined ? { configName: endpoint.EndpointConfigName } : {}),
    ...(endpoint.PendingDeploymentSummary?.EndpointConfigName !== undefined ? { pendingConfigName: endpoint.PendingDeploymentSummary.EndpointConfigName } : {}),
  };
}

async function describeConfig(sagemaker: SageMakerClient, resource: Resource): Promise<ConfigResource> {
  const config = await sagemaker.send(new DescribeEndpointConfigCommand({ EndpointConfigName: resource.name }));
  const modelNames = (config.ProductionVariants ?? []).flatMap((variant) => (variant.ModelName !== undefined ? [variant.ModelName] : []));
  return { ...resource, kind: 'endpoint config', modelNames };
}

export async function readInventory(sagemaker: SageMakerClient, scope: InventoryScope): Promise<Inventory> {
  const [endpoints, configs, models] = await Promise.all([
    ofPipeline('endpoint', sagemaker, scope),
    ofPipeline('endpoint config', sagemaker, scope).then(own),
    ofPipeline('model', sagemaker, scope).then(own),
  ]);
  // Another dataset's endpoint may be on one of this dataset's configs (a shared train.json "name"): described too.
  const others = endpoints.filter((endpoint) => !endpoint.ofDataset).map(({ ofDataset: _, ...endpoint }) => endpoint);
  const describe = (list: readonly Resource[]) => mapLimited(list, (resource) => describeEndpoint(sagemaker, resource));
  return {
    endpoints: await describe(own(endpoints)),
    otherEndpoints: await describe(others),
    configs: await mapLimited(configs, (resource) => describeConfig(sagemaker, resource)),
    models,
  };
}

/** Deletes one resource. */
export async function deleteResource(sagemaker: SageMakerClient, resource: Resource): Promise<void> {
  if (resource.kind === 'endpoint') await sagemaker.send(new DeleteEndpointCommand({ EndpointName: resource.name }));
  else if (resource.kind === 'endpoint config') await sagemaker.send(new DeleteEndpointConfigCommand({ EndpointConfigName: resource.name }));
  else await sagemaker.send(new DeleteModelCommand({ ModelName: resource.name }));
}
