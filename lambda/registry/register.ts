import type { S3Client } from '@aws-sdk/client-s3';
import { REGISTRY_TIMEOUT_SECONDS, type RegisteredLora, type RegistryEvent } from '../shared/contract';
import { loraRef } from '../shared/lora-name';
import { isRecord } from '../shared/run-info';
import { summarizeTraining } from '../shared/training-summary';
import { registryBusy, registryConflict } from './errors';
import { copyLora } from './lora-copy';
import type { RegistryTable, VersionItem } from './table';
import { loraCopyKey, type LoraStorage, trainingArchive } from './training-output';

/**
 * Registers a shared run's trained LoRA as a new 'pending' version of its name: streams the one
 * `.safetensors` out of the training job's model.tar.gz, checks its header is a LoRA of the run's
 * family, allocates a version, copies the file to `loras/<name>/<version>.safetensors` (hashing
 * it on the way) and only then writes the item. The check and promotion come after.
 */

export interface RegisterDependencies {
  readonly s3: S3Client;
  readonly table: RegistryTable;
  readonly storage: LoraStorage;
  readonly now: () => Date;
}

type RegisterEvent = Extract<RegistryEvent, { action: 'register' }>;

/**
 * How long a registration holds its execution's claim: beyond the function's timeout, so a claim
 * is never taken over from an invocation still running, and one left by an invocation that died
 * expires for the retry.
 */
export const CLAIM_LEASE_MS = (REGISTRY_TIMEOUT_SECONDS + 60) * 1000;

/** The numbers worth keeping of the training job: its times and final metrics. */
function trainingSummary(training: Record<string, unknown>): Record<string, unknown> {
  const summary = summarizeTraining(training);
  const metrics = Array.isArray(training.FinalMetricDataList) ? training.FinalMetricDataList.filter(isRecord) : [];
  const finalMetrics = Object.fromEntries(
    metrics.flatMap((metric) => (typeof metric.MetricName === 'string' && typeof metric.Value === 'number' && Number.isFinite(metric.Value) ? [[metric.MetricName, metric.Value]] : [])),
  );
  return {
    trainingSeconds: summary.trainingSeconds,
    billableSeconds: summary.billableSeconds,
    spotSavingsPercent: summary.spotSavingsPercent,
    ...(Object.keys(finalMetrics).length > 0 ? { finalMetrics } : {}),
  };
}

function registered(item: VersionItem): RegisteredLora {
  return {
    name: item.name,
    version: item.version,
    ref: loraRef(item.name, item.version),
    status: 'pending',
    modelType: item.modelType,
    baseModel: item.baseModel,
    s3Uri: item.s3Uri,
    sha256: item.sha256,
    sizeBytes: item.sizeBytes,
    rank: item.rank,
    components: item.components as RegisteredLora['components'],
    createdAt: item.createdAt,
  };
}

/** The version this execution already registered, as the answer to a repeated registration. */
async function earlierVersion(event: RegisterEvent, table: RegistryTable): Promise<RegisteredLora | undefined> {
  const { run, execution } = event;
  const earlier = await table.versionOfExecution(run.lora.name, execution.arn);
  if (earlier === undefined) return undefined;
  if (earlier.status !== 'pending') {
    throw registryConflict(`Execution ${execution.name} already registered ${loraRef(earlier.name, earlier.version)}, which is now ${earlier.status}; start a new run.`);
  }
  return registered(earlier);
}

/**
 * A retried invocation (the state's Retry, or Lambda's own) returns what the first one wrote. Two
 * invocations of one execution at once (a retry while the first still runs) would each allocate a
 * version: the registration is therefore claimed on the head item first, and a second invocation
 * meanwhile is RegistryBusy, which the state retries until the first one's version is there.
 */
export async function register(event: RegisterEvent, deps: RegisterDependencies): Promise<RegisteredLora> {
  const { run, execution } = event;
  const name = run.lora.name;
  const earlier = await earlierVersion(event, deps.table);
  if (earlier !== undefined) return earlier;

  const started = deps.now().getTime();
  const until = started + CLAIM_LEASE_MS;
  if (!(await deps.table.claimRegistration(name, execution.arn, started, until))) {
    throw registryBusy(`Another invocation of execution ${execution.name} is registering LoRA ${name}; its version is answered once it is written.`);
  }
  try {
    // The version may have been written between the first look and the claim.
    return (await earlierVersion(event, deps.table)) ?? (await copyAndWrite(event, deps));
  } finally {
    await deps.table.releaseRegistration(name, execution.arn, until);
  }
}

async function copyAndWrite(event: RegisterEvent, deps: RegisterDependencies): Promise<RegisteredLora> {
  const { run, training, execution } = event;
  const name = run.lora.name;
  const archive = trainingArchive((training.ModelArtifacts as { S3ModelArtifacts: string }).S3ModelArtifacts, deps.storage);
  // The version is allocated once the header is known good; a copy that fails after it leaves
  // no item, and its number is simply never used (versions are never reused).
  let version = 0;
  let createdAt = '';
  const { s3Uri, sha256, sizeBytes, facts } = await copyLora(deps.s3, archive, run.modelType, async () => {
    createdAt = deps.now().toISOString();
    version = await deps.table.allocateVersion(name, createdAt);
    return loraCopyKey(deps.storage, name, version);
  });
  const item: VersionItem = {
    name,
    version,
    status: 'pending',
    modelType: run.modelType,
    baseModel: run.baseModel,
    s3Uri,
    sha256,
    sizeBytes,
    rank: facts.rank,
    components: facts.components,
    createdAt,
    run: run.run,
    execution: execution.arn,
    trainingJob: typeof training.TrainingJobName === 'string' ? training.TrainingJobName : run.training.jobName,
    summary: trainingSummary(training),
  };
  await deps.table.putVersion(item);
  return registered(item);
}
