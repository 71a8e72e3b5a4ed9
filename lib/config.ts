import type { PrepareSettings } from '../lambda/shared/contract';
import { CONFIG_FIELDS, DEFAULT_BASE_MODELS, HF_TOKEN_LIKE } from './config-fields';
import { fluxBaseModelProblem, isGatedHubModel } from '../lambda/shared/flux-files';
import { servingFitProblem, trainingFitProblem, trainingVolumeProblem } from '../lambda/shared/instance-fit';
import { MODEL_TYPE_DEFAULTS } from '../lambda/shared/models';
import { sharedEndpointSizingProblems } from './shared-endpoint-sizing';
import type { ConfigKey, FieldSpec, ModelType, ValueOf } from './config-fields';
import { distance } from '../lambda/shared/suggest';

export { CONFIG_FIELDS, DEFAULT_BASE_MODELS, LOG_RETENTION_DAYS } from './config-fields';
export type { ConfigKey, ModelType } from './config-fields';

/**
 * Deploy-time configuration of the pipeline.
 *
 * Every key, its default and what it allows are declared once, in `config-fields.ts`. Values
 * come from CDK context: `cdk.json` (typed JSON, dotted keys or grouped as `"training": {…}`) or
 * `-c key=value` (always a string, dotted: `-c training.maxWaitSeconds=7200`). A bad value fails
 * synth with one message that lists every bad key, the value given and what is allowed.
 */

/** The validated configuration, with every default applied. */
export interface PipelineConfig {
  readonly stackName: string;
  readonly datasetPrefix: string;
  readonly triggerFileName: string;
  readonly settleSeconds: number;
  readonly namePrefix: string;
  readonly modelType: ModelType;
  readonly baseModel: string;
  /** The Secrets Manager secret (name or complete ARN) holding a Hugging Face token, if any. */
  readonly huggingFaceTokenSecret?: string;
  /** The training defaults, exactly as Prepare receives them. */
  readonly training: PrepareSettings['training'];
  readonly endpoint: EndpointConfig;
  readonly notificationEmail?: string;
  readonly removalPolicy: 'retain' | 'destroy';
  readonly logRetentionDays: number;
  readonly storage: {
    readonly checkpointExpirationDays: number;
    readonly noncurrentVersionExpirationDays: number;
    readonly accessLogExpirationDays: number;
  };
}

/** How trained LoRAs are served: the endpoint settings of the configuration. */
export interface EndpointConfig extends Pick<PrepareSettings['endpoint'], 'instanceType' | 'instanceCount'> {
  /** 'shared': one endpoint for the deploy-time base model serves every LoRA; 'dedicated': one endpoint per dataset. */
  readonly mode: EndpointMode;
  /** The shared endpoint's autoscaling range (instances; one model copy per instance). */
  readonly minInstances: number;
  readonly maxInstances: number;
  /** The shared endpoint's LoRA cache tiers, in MB. */
  readonly loraCache: { readonly gpuMb: number; readonly hostMb: number; readonly diskMb: number };
}

export type EndpointMode = 'shared' | 'dedicated';

/** Thrown when configuration is invalid; its message lists every problem. */
export class ConfigError extends Error {
  constructor(public readonly problems: readonly string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

const CONFIG_KEYS = Object.keys(CONFIG_FIELDS) as ConfigKey[];
const NAMESPACES = [...new Set(CONFIG_KEYS.filter((k) => k.includes('.')).map((k) => k.split('.')[0]))];

function show(value: unknown): string {
  return JSON.stringify(value) ?? String(value);
}

/**
 * Context keys that look like ours but are not: a key in one of our namespaces
 * (`training.*`), or a near-miss of a key. CDK's own context keys (`@aws-cdk/…`, `aws:cdk:…`)
 * and unrelated keys are left alone.
 */
function unknownKeys(contextKeys: readonly string[]): string[] {
  const problems: string[] = [];
  for (const key of contextKeys) {
    if ((CONFIG_KEYS as string[]).includes(key)) continue;
    const namespaced = NAMESPACES.some((ns) => key.startsWith(`${ns}.`));
    const near = CONFIG_KEYS.find((k) => k.toLowerCase() === key.toLowerCase() || (key.length > 5 && distance(k, key) <= 2));
    if (namespaced || near) {
      problems.push(`unknown key "${key}"${near ? `; did you mean "${near}"?` : '.'} Known keys: ${CONFIG_KEYS.join(', ')}`);
    }
  }
  return problems;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Flattens the context into dotted keys. `cdk.json` may group keys as `"training": {"spot": false}`;
 * a dotted key (`-c training.spot=true`) wins over the same key given nested.
 */
function flatten(context: Readonly<Record<string, unknown>>, problems: string[]): Map<string, unknown> {
  const flat = new Map<string, unknown>();
  for (const [key, value] of Object.entries(context)) {
    if (!NAMESPACES.includes(key)) {
      // A group under a misspelt namespace ("trainng": {…}) would otherwise be ignored whole.
      const meant = isPlainObject(value) && NAMESPACES.find((ns) => ns.toLowerCase() === key.toLowerCase() || distance(ns, key) <= 2);
      if (meant) problems.push(`unknown key "${key}"; did you mean "${meant}"? Its settings would be ignored.`);
      else if (value !== undefined && value !== null) flat.set(key, value);
    } else if (!isPlainObject(value)) {
      const example = CONFIG_KEYS.find((k) => k.startsWith(`${key}.`));
      problems.push(`"${key}" = ${show(value)} is not allowed: expected an object of ${key} settings, or dotted keys such as "${example}"`);
    } else {
      for (const [sub, subValue] of Object.entries(value)) {
        const dotted = `${key}.${sub}`;
        if (context[dotted] === undefined || context[dotted] === null) flat.set(dotted, subValue);
      }
    }
  }
  return flat;
}

/**
 * Validates context values and applies defaults.
 *
 * @param context CDK context: `cdk.json`'s context merged with `-c key=value` (an App node's `getAllContext()`)
 * @throws ConfigError listing every problem found
 */
export function parseConfig(context: Readonly<Record<string, unknown>>): PipelineConfig {
  const problems: string[] = [];
  const raw = flatten(context, problems);
  problems.push(...unknownKeys([...raw.keys()]));
  const values = new Map<ConfigKey, unknown>();

  for (const key of CONFIG_KEYS) {
    const spec: FieldSpec<unknown> = CONFIG_FIELDS[key];
    const given = raw.get(key);
    if (given === undefined || given === null) {
      values.set(key, spec.default);
      continue;
    }
    const parsed = spec.schema.safeParse(given);
    if (parsed.success) {
      values.set(key, parsed.data);
    } else {
      // A token given in place of its secret's name is not echoed into the synth output (and CI logs).
      const shown = typeof given === 'string' && HF_TOKEN_LIKE.test(given) ? '(a Hugging Face token, not shown)' : show(given);
      problems.push(`"${key}" = ${shown} is not allowed: expected ${spec.allowed}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const get = <K extends ConfigKey>(key: K) => values.get(key) as ValueOf<K>;
  const modelType = get('modelType') as ModelType;
  // Keys whose default depends on the model type are resolved here, like baseModel.
  const typeDefaults = MODEL_TYPE_DEFAULTS[modelType];
  const captionMissing = get('training.captionMissing');
  const config: PipelineConfig = {
    stackName: get('stackName'),
    datasetPrefix: get('datasetPrefix'),
    triggerFileName: get('triggerFileName'),
    settleSeconds: get('settleSeconds'),
    namePrefix: get('namePrefix'),
    modelType,
    baseModel: get('baseModel') ?? DEFAULT_BASE_MODELS[modelType],
    huggingFaceTokenSecret: get('huggingFaceTokenSecret'),
    training: {
      instanceType: get('training.instanceType') ?? typeDefaults.trainingInstanceType,
      spot: get('training.spot'),
      maxRuntimeSeconds: get('training.maxRuntimeSeconds') ?? typeDefaults.trainingMaxRuntimeSeconds,
      maxWaitSeconds: get('training.maxWaitSeconds') ?? typeDefaults.trainingMaxWaitSeconds,
      volumeSizeGb: get('training.volumeSizeGb') ?? typeDefaults.trainingVolumeSizeGb,
      ...(captionMissing === undefined ? {} : { captionMissing }),
    },
    endpoint: {
      // The shared endpoint holds more in host memory than a dedicated one (lib/shared-endpoint-sizing.ts).
      instanceType: get('endpoint.instanceType') ?? (get('endpoint.mode') === 'shared' ? typeDefaults.sharedEndpointInstanceType : typeDefaults.endpointInstanceType),
      instanceCount: get('endpoint.instanceCount'),
      mode: get('endpoint.mode') as EndpointMode,
      minInstances: get('endpoint.minInstances'),
      maxInstances: get('endpoint.maxInstances'),
      loraCache: { gpuMb: get('endpoint.loraCacheGpuMb'), hostMb: get('endpoint.loraCacheHostMb'), diskMb: get('endpoint.loraCacheDiskMb') },
    },
    notificationEmail: get('notificationEmail'),
    removalPolicy: get('removalPolicy') as PipelineConfig['removalPolicy'],
    logRetentionDays: get('logRetentionDays'),
    storage: {
      checkpointExpirationDays: get('storage.checkpointExpirationDays'),
      noncurrentVersionExpirationDays: get('storage.noncurrentVersionExpirationDays'),
      accessLogExpirationDays: get('storage.accessLogExpirationDays'),
    },
  };
  problems.push(...crossFieldProblems(config));
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

function crossFieldProblems(config: PipelineConfig): string[] {
  const problems: string[] = [];
  const { training, storage } = config;
  if (training.spot && training.maxWaitSeconds < training.maxRuntimeSeconds) {
    problems.push(
      `"training.maxWaitSeconds" = ${training.maxWaitSeconds} is not allowed: with training.spot true it must be at least ` +
        `training.maxRuntimeSeconds (${training.maxRuntimeSeconds}); SageMaker rejects a spot job whose MaxWait is below its MaxRuntime`,
    );
  }
  const otherType = (Object.keys(DEFAULT_BASE_MODELS) as ModelType[]).find((t) => t !== config.modelType && DEFAULT_BASE_MODELS[t] === config.baseModel);
  if (otherType) {
    problems.push(
      `"baseModel" = ${show(config.baseModel)} is not allowed with modelType ${show(config.modelType)}: it is the ${otherType} base model; ` +
        `set modelType to ${show(otherType)}, or choose a ${config.modelType} base model`,
    );
  }
  problems.push(...modelTypeProblems(config));
  problems.push(...endpointProblems(config.endpoint));
  // An instance that cannot serve the model at all is reported once, not again for its cache sizes.
  const servable = servingFitProblem(config.modelType, config.endpoint.instanceType) === undefined;
  if (config.endpoint.mode === 'shared' && servable) problems.push(...sharedEndpointSizingProblems(config.modelType, config.endpoint));
  const longestJobSeconds = training.spot ? Math.max(training.maxWaitSeconds, training.maxRuntimeSeconds) : training.maxRuntimeSeconds;
  if (storage.checkpointExpirationDays * 86400 <= longestJobSeconds) {
    problems.push(
      `"storage.checkpointExpirationDays" = ${storage.checkpointExpirationDays} is not allowed: it must outlast the longest ` +
        `training job (${longestJobSeconds} s), or a job could lose the checkpoints it resumes from`,
    );
  }
  return problems;
}

/**
 * What the model type asks of the base model, the token and the instances: a FLUX.1 base model is
 * one of the two pinned Hub ids or an S3 folder, FLUX.1-dev needs a token, and the training and
 * endpoint instances must hold the model (lambda/shared/instance-fit.ts, which Prepare applies per run).
 */
function modelTypeProblems(config: PipelineConfig): string[] {
  const { modelType, baseModel, training, endpoint } = config;
  const problems: string[] = [];
  const flux = modelType === 'flux1' ? fluxBaseModelProblem(baseModel) : undefined;
  if (flux !== undefined) problems.push(`"baseModel" = ${show(baseModel)} is not allowed with modelType "flux1": ${flux}`);
  if (isGatedHubModel(baseModel) && config.huggingFaceTokenSecret === undefined) {
    problems.push(
      `"baseModel" = ${show(baseModel)} is gated on the Hugging Face Hub: set huggingFaceTokenSecret to a Secrets Manager secret holding a token ` +
        'of an account that accepted its licence, or choose a model that is not gated',
    );
  }
  const fits: Array<[string, string | number, string | undefined]> = [
    ['training.instanceType', training.instanceType, trainingFitProblem(modelType, training.instanceType)],
    ['training.volumeSizeGb', training.volumeSizeGb, trainingVolumeProblem(modelType, training.volumeSizeGb)],
    ['endpoint.instanceType', endpoint.instanceType, servingFitProblem(modelType, endpoint.instanceType)],
  ];
  for (const [key, value, problem] of fits) {
    if (problem !== undefined) problems.push(`"${key}" = ${show(value)} is not allowed with modelType ${show(modelType)}: ${problem}`);
  }
  return problems;
}

/**
 * The shared endpoint's rules. The cache tiers are nested: a LoRA on the GPU was loaded from host
 * memory, and one in host memory from its file on disk, so a tier larger than the one below it
 * could never fill and would only evict files the faster tier still holds.
 */
function endpointProblems(endpoint: EndpointConfig): string[] {
  const problems: string[] = [];
  if (endpoint.maxInstances < endpoint.minInstances) {
    problems.push(
      `"endpoint.maxInstances" = ${endpoint.maxInstances} is not allowed: it must be at least endpoint.minInstances (${endpoint.minInstances}); ` +
        'autoscaling keeps the shared endpoint between the two',
    );
  }
  const { gpuMb, hostMb, diskMb } = endpoint.loraCache;
  if (gpuMb > hostMb) {
    problems.push(
      `"endpoint.loraCacheGpuMb" = ${gpuMb} is not allowed: it must be at most endpoint.loraCacheHostMb (${hostMb}); ` +
        'every LoRA on the GPU is loaded from host memory, so the GPU tier could never hold more',
    );
  }
  if (hostMb > diskMb) {
    problems.push(
      `"endpoint.loraCacheHostMb" = ${hostMb} is not allowed: it must be at most endpoint.loraCacheDiskMb (${diskMb}); ` +
        'every LoRA in memory is read from its file on disk, so the disk tier must hold at least as much',
    );
  }
  return problems;
}

/** Reads the configuration from a construct node's context (an App's node in `bin/`). */
export function configFromContext(node: { getAllContext(): Record<string, unknown> }): PipelineConfig {
  return parseConfig(node.getAllContext());
}
