import { z } from 'zod';
import type { ExecutionInput, PrepareSettings } from '../shared/contract';
import type { HyperparameterValue } from '../shared/hyperparameters';
import { FLUX_HUB_REPOS, fluxBaseModelProblem, fluxVariantOfHubId, isGatedHubModel } from '../shared/flux-files';
import { servingFitProblem, trainingFitProblem, trainingVolumeProblem } from '../shared/instance-fit';
import { DEFAULT_BASE_MODELS, GPU_INSTANCE_TYPE, HF_REPO_ID, isS3BaseModel, MAX_TRAINING_SECONDS, MODEL_TYPE_DEFAULTS, type ModelType } from '../shared/models';
import { SAGEMAKER_NAME } from '../shared/names';
import { closest } from '../shared/suggest';
import { show } from './errors';

/**
 * A run's options: the execution input (untrusted JSON from whoever started the execution) and the
 * dataset folder's `train.json` share one schema, less `dataset` and `trigger` for the file. Each
 * field declares its rule and, in words, what it allows; a problem message quotes the value given
 * and those words.
 */

interface Field {
  readonly schema: z.ZodType;
  readonly allowed: string;
}

const integer = (min: number, max: number): Field => ({ schema: z.number().int().min(min).max(max), allowed: `an integer from ${min} to ${max}` });
const gpuInstanceType: Field = {
  schema: z.string().regex(GPU_INSTANCE_TYPE),
  allowed: 'a SageMaker GPU instance type, ml.g* or ml.p* (e.g. ml.g5.2xlarge)',
};

const TRAINING_FIELDS = {
  instanceType: gpuInstanceType,
  spot: { schema: z.boolean(), allowed: 'true or false' },
  maxRuntimeSeconds: integer(1, MAX_TRAINING_SECONDS),
  maxWaitSeconds: integer(1, MAX_TRAINING_SECONDS),
  volumeSizeGb: integer(1, 16384),
} satisfies Record<string, Field>;

const ENDPOINT_FIELDS = {
  name: { schema: z.string().regex(SAGEMAKER_NAME), allowed: 'a SageMaker endpoint name: 1 to 63 letters, digits and hyphens, starting and ending with a letter or digit' },
  instanceType: gpuInstanceType,
  instanceCount: integer(1, 20),
} satisfies Record<string, Field>;

const TRIGGER_FIELDS = {
  bucket: { schema: z.string(), allowed: 'a string' },
  key: { schema: z.string(), allowed: 'a string' },
  versionId: { schema: z.string(), allowed: 'a string' },
  sequencer: { schema: z.string(), allowed: 'a string' },
  eventTime: { schema: z.string(), allowed: 'a string' },
} satisfies Record<string, Field>;

const OPTION_FIELDS = {
  name: {
    schema: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9-]{0,39}$/),
    allowed: 'a short name of 1 to 40 letters, digits and hyphens, starting with a letter or digit',
  },
  baseModel: {
    schema: z.string().refine((v) => HF_REPO_ID.test(v) || v.startsWith('s3://')),
    allowed: "a Hugging Face repo id 'owner/name', or the s3:// URI of the base model the stack was deployed with",
  },
  modelType: { schema: z.enum(['sd15', 'sdxl', 'flux1']), allowed: "'sd15', 'sdxl' or 'flux1'" },
  hyperparameters: {
    schema: z.record(z.string(), z.unknown()),
    allowed: 'an object of training hyperparameters, such as {"max_train_steps": 800} (containers/training/README.md lists them)',
  },
} satisfies Record<string, Field>;

const TRAINING_KEYS = Object.keys(TRAINING_FIELDS);
const ENDPOINT_KEYS = Object.keys(ENDPOINT_FIELDS);
const TRIGGER_KEYS = Object.keys(TRIGGER_FIELDS);
const OPTION_KEYS = [...Object.keys(OPTION_FIELDS), 'training', 'endpoint'];
const INPUT_KEYS = ['dataset', ...OPTION_KEYS, 'trigger'];

function shape<T extends Record<string, Field>>(fields: T): { [K in keyof T]: z.ZodOptional<z.ZodType> } {
  return Object.fromEntries(Object.entries(fields).map(([key, field]) => [key, field.schema.optional()])) as { [K in keyof T]: z.ZodOptional<z.ZodType> };
}

const optionsShape = {
  ...shape(OPTION_FIELDS),
  training: z.strictObject(shape(TRAINING_FIELDS)).optional(),
  endpoint: z.strictObject(shape(ENDPOINT_FIELDS)).optional(),
};
/** `train.json`. */
const runOptionsSchema = z.strictObject(optionsShape);
/** The execution input. */
const executionInputSchema = z.strictObject({
  dataset: z.string(),
  ...optionsShape,
  trigger: z.strictObject({ ...shape(TRIGGER_FIELDS), bucket: z.string(), key: z.string() }).optional(),
});

export type RunOptions = Omit<ExecutionInput, 'dataset' | 'trigger'>;

/** What each path allows, in words; the groups list their fields. */
function allowedAt(path: string, dataset: string): string | undefined {
  const [group, key] = path.split('.');
  const table: Record<string, Record<string, Field>> = { training: TRAINING_FIELDS, endpoint: ENDPOINT_FIELDS, trigger: TRIGGER_FIELDS };
  if (key !== undefined) return table[group]?.[key]?.allowed;
  if (group === 'dataset') return dataset;
  if (group in table) return `an object with any of ${Object.keys(table[group]).join(', ')}`;
  return (OPTION_FIELDS as Record<string, Field>)[group]?.allowed;
}

function keysAt(path: string, top: readonly string[]): readonly string[] {
  return path === 'training' ? TRAINING_KEYS : path === 'endpoint' ? ENDPOINT_KEYS : path === 'trigger' ? TRIGGER_KEYS : top;
}

function valueAt(raw: unknown, path: readonly PropertyKey[]): unknown {
  let value = raw;
  for (const key of path) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

/** zod's issues as sentences that name the field, the value given and what is allowed. */
function describeIssues(
  issues: readonly z.core.$ZodIssue[],
  raw: unknown,
  top: readonly string[],
  datasetAllowed: string,
  misplaced: Readonly<Record<string, string>> = {},
): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const issue of issues) {
    const path = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') {
      const known = keysAt(path, top);
      for (const key of issue.keys) {
        const field = path ? `${path}.${key}` : key;
        if (Object.hasOwn(misplaced, field)) {
          problems.push(`"${field}" ${misplaced[field]}`);
          continue;
        }
        const near = closest(key, known);
        const hint = near ? `did you mean "${path ? `${path}.${near}` : near}"?` : `the fields${path ? ` of "${path}"` : ''} are ${known.join(', ')}`;
        problems.push(`unknown field "${field}": ${hint}`);
      }
      continue;
    }
    if (seen.has(path)) continue;
    seen.add(path);
    if (path === '') {
      problems.push(`it must be a JSON object such as {"dataset": "pokemon"}, not ${show(raw)}`);
      continue;
    }
    const value = valueAt(raw, issue.path);
    const allowed = allowedAt(path, datasetAllowed) ?? issue.message;
    problems.push(value === undefined ? `"${path}" is missing: give ${allowed}` : `"${path}" = ${show(value)} is not allowed: expected ${allowed}`);
  }
  return problems;
}

/** Where a dataset folder is. */
export interface DatasetLocation {
  /** The folder's name: one path segment. */
  readonly folder: string;
  /** Its key prefix in the datasets bucket, ending in `/`. */
  readonly prefix: string;
  /** `s3://bucket/prefix/folder/` */
  readonly uri: string;
}

function datasetForms(settings: PrepareSettings): string {
  return `a folder name such as "pokemon", or the folder's URI s3://${settings.datasetsBucket}/${settings.datasetPrefix}<name>/`;
}

/** The dataset folder an execution input names, or why it names none. */
export function resolveDataset(value: string, settings: PrepareSettings): DatasetLocation | { problem: string } {
  const root = `s3://${settings.datasetsBucket}/${settings.datasetPrefix}`;
  const refuse = (why: string) => ({ problem: `"dataset" = ${show(value)} ${why}; give ${datasetForms(settings)}` });
  let folder = value;
  if (value.startsWith('s3://')) {
    const [bucket, ...rest] = value.slice('s3://'.length).split('/');
    if (bucket !== settings.datasetsBucket) {
      return refuse(`is not in the datasets bucket ${settings.datasetsBucket}, the only bucket the pipeline trains from`);
    }
    const key = rest.join('/');
    if (!key.startsWith(settings.datasetPrefix)) return refuse(`is not under the datasets prefix ${root}`);
    folder = key.slice(settings.datasetPrefix.length).replace(/\/$/, '');
    if (folder.includes('/')) return refuse(`is not a dataset folder: datasets are folders exactly one level below ${root}`);
  } else if (value.includes('/')) {
    return refuse('is neither a folder name (which cannot contain "/") nor an s3:// URI');
  }
  if (folder === '' || folder === '.' || folder === '..') return refuse('names no folder');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(folder)) return refuse('contains control characters');
  const prefix = `${settings.datasetPrefix}${folder}/`;
  // S3 keys are at most 1024 bytes, and the folder must still hold files.
  if (Buffer.byteLength(prefix, 'utf8') > 900) return refuse('is too long for an S3 key prefix');
  return { folder, prefix, uri: `s3://${settings.datasetsBucket}/${prefix}` };
}

/** Checks that depend on the deployment, on fields that passed their own rule. */
function deploymentProblems(options: Record<string, unknown>, settings: PrepareSettings): string[] {
  const problems: string[] = [];
  const { baseModel, endpoint, hyperparameters } = options;
  if (typeof baseModel === 'string' && isS3BaseModel(baseModel) && baseModel !== settings.readableS3BaseModel) {
    const readable = settings.readableS3BaseModel
      ? `the only S3 base model they may read is ${settings.readableS3BaseModel}`
      : 'they may read no S3 base model, since the stack was deployed with a Hugging Face one';
    problems.push(
      `"baseModel" = ${show(baseModel)} cannot be read by the training job and the endpoint: ${readable}. ` +
        `Deploy the stack with -c baseModel=${baseModel} to use it, or give a Hugging Face repo id 'owner/name'`,
    );
  }
  const endpointName = endpoint !== null && typeof endpoint === 'object' ? (endpoint as Record<string, unknown>).name : undefined;
  if (typeof endpointName === 'string' && SAGEMAKER_NAME.test(endpointName) && !endpointName.startsWith(`${settings.namePrefix}-`)) {
    const example = `${settings.namePrefix}-${endpointName}`.slice(0, 63).replace(/-+$/, '');
    problems.push(
      `"endpoint.name" = ${show(endpointName)} must start with "${settings.namePrefix}-": the workflow may create and update only ` +
        `endpoints with that prefix; for example ${show(example)}`,
    );
  }
  if (hyperparameters !== null && typeof hyperparameters === 'object' && !Array.isArray(hyperparameters)) {
    const owned: Record<string, string> = { base_model: 'baseModel', model_type: 'modelType' };
    for (const [key, field] of Object.entries(owned)) {
      if (Object.hasOwn(hyperparameters, key)) {
        problems.push(
          `"hyperparameters.${key}" is set from the top-level "${field}", which decides both the training and the endpoint: ` +
            `give "${field}": ${show((hyperparameters as Record<string, unknown>)[key])} instead`,
        );
      }
    }
  }
  return problems;
}

export interface ParsedInput {
  readonly dataset: DatasetLocation;
  readonly options: RunOptions;
}

/** The execution input, checked on its own: every problem, or the dataset and the run's options. */
export function parseExecutionInput(raw: unknown, settings: PrepareSettings): { problems: string[] } | ParsedInput {
  const result = executionInputSchema.safeParse(raw);
  const problems = result.success ? [] : describeIssues(result.error.issues, raw, INPUT_KEYS, datasetForms(settings));
  const object = raw !== null && typeof raw === 'object' && !Array.isArray(raw) ? (raw as Record<string, unknown>) : {};
  let dataset: DatasetLocation | undefined;
  if (typeof object.dataset === 'string') {
    const resolved = resolveDataset(object.dataset, settings);
    if ('problem' in resolved) problems.push(resolved.problem);
    else dataset = resolved;
  }
  problems.push(...deploymentProblems(object, settings));
  if (problems.length > 0 || !result.success || !dataset) return { problems };
  const { dataset: _dataset, trigger: _trigger, ...options } = result.data;
  return { dataset, options: options as RunOptions };
}

/** A `train.json`'s content: every problem, or the run's options. */
export function parseTrainJson(text: string, settings: PrepareSettings): { problems: string[] } | { options: RunOptions } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    return { problems: [`it is not valid JSON (${jsonErrorPosition(text, error as Error)})`] };
  }
  const result = runOptionsSchema.safeParse(raw);
  const misplaced = {
    dataset: 'belongs in the execution input only: train.json is already in its dataset folder; remove it',
    trigger: 'is set by the pipeline for a run an upload started; remove it',
  };
  const problems = result.success ? [] : describeIssues(result.error.issues, raw, OPTION_KEYS, '', misplaced);
  if (raw !== null && typeof raw === 'object' && !Array.isArray(raw)) problems.push(...deploymentProblems(raw as Record<string, unknown>, settings));
  if (problems.length > 0 || !result.success) return { problems };
  return { options: result.data as RunOptions };
}

/** JSON.parse's message with a line and column, which Node.js 20 gives only as a character offset. */
function jsonErrorPosition(text: string, error: Error): string {
  const match = /at position (\d+)/.exec(error.message);
  if (!match || /line \d+/.test(error.message)) return error.message;
  const before = text.slice(0, Number(match[1])).split('\n');
  return `${error.message.replace(/ in JSON at position \d+.*$/, '')} at line ${before.length} column ${before[before.length - 1].length + 1}`;
}

/** Where a resolved value came from, for messages. */
export type Source = 'execution input' | 'train.json' | 'deploy-time configuration' | 'default for the model type';

export interface Sourced<T> {
  readonly value: T;
  readonly source: Source;
}

function pick<T>(input: T | undefined, file: T | undefined, setting: T): Sourced<T> {
  if (input !== undefined) return { value: input, source: 'execution input' };
  if (file !== undefined) return { value: file, source: 'train.json' };
  return { value: setting, source: 'deploy-time configuration' };
}

/** A run's settings, each from the execution input, else train.json, else the deployment. */
export interface ResolvedOptions {
  readonly name?: string;
  readonly modelType: Sourced<ModelType>;
  readonly baseModel: Sourced<string>;
  readonly training: {
    readonly instanceType: Sourced<string>;
    readonly spot: Sourced<boolean>;
    readonly maxRuntimeSeconds: Sourced<number>;
    readonly maxWaitSeconds: Sourced<number>;
    readonly volumeSizeGb: Sourced<number>;
  };
  readonly endpoint: {
    readonly name?: string;
    readonly instanceType: Sourced<string>;
    readonly instanceCount: Sourced<number>;
  };
  /** Only the keys given, the execution input's winning key by key. */
  readonly hyperparameters: Record<string, HyperparameterValue>;
}

/** Merges the options key by key: execution input > train.json > deploy-time settings. */
export function resolveOptions(input: RunOptions, file: RunOptions, settings: PrepareSettings): ResolvedOptions {
  const modelType = pick(input.modelType, file.modelType, settings.modelType);
  // The deploy-time base model is one of the deploy-time model type: a run of the other type
  // without a base model of its own trains on that type's default, not on a mismatched model.
  const baseModel: Sourced<string> =
    input.baseModel !== undefined || file.baseModel !== undefined || modelType.value === settings.modelType
      ? pick(input.baseModel, file.baseModel, settings.baseModel)
      : { value: DEFAULT_BASE_MODELS[modelType.value], source: 'default for the model type' };
  const t = (key: keyof ResolvedOptions['training']) => pick(input.training?.[key], file.training?.[key], settings.training[key]);
  const type = modelType.value;
  // Likewise the deploy-time machine sizes, when they are too small for the run's model type.
  const sized = <T>(value: Sourced<T>, problem: (value: T) => string | undefined, fallback: T): Sourced<T> =>
    value.source === 'deploy-time configuration' && type !== settings.modelType && problem(value.value) !== undefined
      ? { value: fallback, source: 'default for the model type' }
      : value;
  const defaults = MODEL_TYPE_DEFAULTS[type];
  return {
    name: input.name ?? file.name,
    modelType,
    baseModel,
    training: {
      instanceType: sized(t('instanceType') as Sourced<string>, (v) => trainingFitProblem(type, v), defaults.trainingInstanceType),
      spot: t('spot') as Sourced<boolean>,
      maxRuntimeSeconds: t('maxRuntimeSeconds') as Sourced<number>,
      maxWaitSeconds: t('maxWaitSeconds') as Sourced<number>,
      volumeSizeGb: sized(t('volumeSizeGb') as Sourced<number>, (v) => trainingVolumeProblem(type, v), defaults.trainingVolumeSizeGb),
    },
    endpoint: {
      name: input.endpoint?.name ?? file.endpoint?.name,
      instanceType: sized(
        pick(input.endpoint?.instanceType, file.endpoint?.instanceType, settings.endpoint.instanceType),
        (v) => servingFitProblem(type, v),
        defaults.endpointInstanceType,
      ),
      instanceCount: pick(input.endpoint?.instanceCount, file.endpoint?.instanceCount, settings.endpoint.instanceCount),
    },
    hyperparameters: { ...captionDefault(settings), ...(file.hyperparameters ?? {}), ...(input.hyperparameters ?? {}) },
  };
}

/** The deploy-wide `caption_missing`, which a run's own hyperparameters override; none when the deployment leaves it to the model type. */
function captionDefault(settings: PrepareSettings): Record<string, HyperparameterValue> {
  const value = settings.training.captionMissing;
  return value === undefined ? {} : { caption_missing: value };
}

function named(key: string, sourced: Sourced<unknown>): string {
  return `"${key}" = ${show(sourced.value)} (${sourced.source})`;
}

/** The model type a Hub id is known to be of: a type's default, or a FLUX.1 repo (FLUX.1-dev is no default). */
function knownTypeOf(baseModel: string): ModelType | undefined {
  if (fluxVariantOfHubId(baseModel) !== undefined) return 'flux1';
  return (Object.keys(DEFAULT_BASE_MODELS) as ModelType[]).find((type) => DEFAULT_BASE_MODELS[type] === baseModel);
}

/** Problems of the merged options that no single field shows. */
export function combinationProblems(options: ResolvedOptions, settings: PrepareSettings): string[] {
  const problems: string[] = [];
  const { spot, maxRuntimeSeconds, maxWaitSeconds } = options.training;
  if (spot.value && maxWaitSeconds.value < maxRuntimeSeconds.value) {
    problems.push(
      `${named('training.maxWaitSeconds', maxWaitSeconds)} is less than ${named('training.maxRuntimeSeconds', maxRuntimeSeconds)}: ` +
        'with spot training SageMaker requires MaxWait ≥ MaxRuntime; raise training.maxWaitSeconds or lower training.maxRuntimeSeconds',
    );
  }
  const longest = spot.value ? maxWaitSeconds : maxRuntimeSeconds;
  const expiry = settings.checkpointExpirationDays * 86400;
  if (longest.value >= expiry) {
    const key = spot.value ? 'training.maxWaitSeconds' : 'training.maxRuntimeSeconds';
    problems.push(
      `${named(key, longest)} lets the job run as long as checkpoints are kept (${settings.checkpointExpirationDays} days = ${expiry} s): ` +
        `a lifecycle rule would delete the checkpoints a resuming job needs; give less than ${expiry} s, ` +
        'or deploy with a larger -c storage.checkpointExpirationDays',
    );
  }
  const otherType = knownTypeOf(options.baseModel.value);
  const mismatched = otherType !== undefined && otherType !== options.modelType.value;
  if (mismatched) {
    const article = DEFAULT_BASE_MODELS[otherType] === options.baseModel.value ? 'the' : 'a';
    problems.push(
      `${named('baseModel', options.baseModel)} is ${article} ${otherType} base model, but ${named('modelType', options.modelType)}: ` +
        `set "modelType": "${otherType}", or give a ${options.modelType.value} base model`,
    );
  }
  // The one readable S3 base model is the deployment's, of the deployment's model type.
  const deployedS3 = isS3BaseModel(options.baseModel.value) && options.modelType.value !== settings.modelType;
  if (deployedS3) {
    problems.push(
      `${named('baseModel', options.baseModel)} is the deployment's ${settings.modelType} base model, but ${named('modelType', options.modelType)}: ` +
        `leave out "baseModel" to train on the ${options.modelType.value} default, or give a Hugging Face ${options.modelType.value} model`,
    );
  }
  const fluxProblem = options.modelType.value === 'flux1' ? fluxBaseModelProblem(options.baseModel.value) : undefined;
  if (fluxProblem !== undefined && !mismatched && !deployedS3) problems.push(`${named('baseModel', options.baseModel)} is not a flux1 base model: ${fluxProblem}`);
  return problems;
}

/**
 * What the container will validate: the run's hyperparameters with its model type and, for a Hub
 * model, its base model. A base model already refused as another type's or as not a flux1 one is
 * left out, so that the problem is given once, as "baseModel" (combinationProblems).
 */
export function hyperparameterInput(options: ResolvedOptions): Record<string, unknown> {
  const baseModel = options.baseModel.value;
  const type = options.modelType.value;
  const otherType = knownTypeOf(baseModel);
  const refused = (otherType !== undefined && otherType !== type) || (type === 'flux1' && fluxBaseModelProblem(baseModel) !== undefined);
  const hub = !isS3BaseModel(baseModel) && !refused;
  return { ...options.hyperparameters, model_type: options.modelType.value, ...(hub ? { base_model: baseModel } : {}) };
}

/**
 * A gated Hub model (FLUX.1-dev) downloads only with a Hugging Face token, which the deployment gives
 * as a Secrets Manager secret: without one the job would fail at its first download. Prepare alone
 * checks it; the CLI offline does not know the deployment's secret.
 */
export function tokenProblems(options: ResolvedOptions, settings: PrepareSettings): string[] {
  // A gated model of another type is refused as such (combinationProblems): no second message.
  if (options.modelType.value !== 'flux1' || !isGatedHubModel(options.baseModel.value) || settings.huggingFaceTokenSecretId !== undefined) return [];
  return [
    `${named('baseModel', options.baseModel)} is gated on the Hugging Face Hub (its licence must be accepted) and this deployment has no token: ` +
      `store a Hugging Face token in Secrets Manager and deploy with -c huggingFaceTokenSecret=<its name or ARN>, or train on ${FLUX_HUB_REPOS.schnell}`,
  ];
}
