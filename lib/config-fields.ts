import { z } from 'zod';
import { CAPTION_EXTENSIONS } from '../lambda/shared/caption-extensions';
import { FLUX_FILES, FLUX_HUB_REPOS } from '../lambda/shared/flux-files';
import { HYPERPARAMETER_SCHEMA } from '../lambda/shared/hyperparameters';
import { DEFAULT_BASE_MODELS, GPU_INSTANCE_TYPE, HF_REPO_ID, isS3ModelUri, MAX_TRAINING_SECONDS, MODEL_TYPE_DEFAULTS, type ModelTypeDefaults } from '../lambda/shared/models';

export { DEFAULT_BASE_MODELS } from '../lambda/shared/models';
export type { ModelType } from '../lambda/shared/models';

/**
 * The table of configuration keys: each key's schema, default, allowed values in words and
 * description, declared once. `config.ts` reads and validates context against it; the README's
 * configuration table mirrors it (a test checks the keys and defaults).
 */

/** CloudWatch Logs accepts only these retention periods (days). */
export const LOG_RETENTION_DAYS = [
  1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
] as const;

/**
 * The smallest LoRA cache tier, in MB: a request may combine three LoRAs, all held in every tier
 * at once, and an SDXL LoRA of the default rank (32) is about 220 MB. The defaults fill an
 * ml.g4dn.xlarge without crowding it: 2 GB of its T4's 16 GB beside the base model, 4 GB of its
 * 16 GiB of memory, 20 GB of its 125 GB NVMe disk.
 */
const LORA_CACHE_MIN_MB = 1024;

/** S3 object key characters that need no escaping anywhere (S3 "safe characters"). */
const S3_SAFE_SEGMENT = "[A-Za-z0-9!_.*'()-]+";

/** An integer, given as a JSON number or (from `-c`) as a string of digits. */
function integer(min: number, max: number): z.ZodType<number> {
  return z.preprocess(
    (v) => (typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v.trim()) : v),
    z.number().int().min(min).max(max),
  ) as z.ZodType<number>;
}

/** A boolean, given as a JSON boolean or (from `-c`) as "true" / "false". */
function boolean(): z.ZodType<boolean> {
  return z.preprocess((v) => (v === 'true' ? true : v === 'false' ? false : v), z.boolean()) as z.ZodType<boolean>;
}

function pattern(re: RegExp): z.ZodType<string> {
  return z.string().regex(re);
}

/** A Secrets Manager secret name (1–512 of letters, digits and /_+=.@-), or a secret's complete ARN. */
const SECRET_NAME = /^[A-Za-z0-9/_+=.@-]{1,512}$/;
const SECRET_ARN = /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$/;
/** A Hugging Face access token given where its secret's name belongs: it would reach the template, env vars and logs. */
export const HF_TOKEN_LIKE = /^hf_[A-Za-z0-9]{30,}$/;

/** A hyperparameter's default from the container's schema, in words: "x (sd15), y (sdxl), z (flux1)" when it is per model type. */
function hyperparameterDefault(key: string): string {
  const value = HYPERPARAMETER_SCHEMA.hyperparameters[key]?.default;
  if (value === null || value === undefined || typeof value !== 'object') return String(value);
  return Object.entries(value)
    .map(([type, v]) => `${String(v)} (${type})`)
    .join(', ');
}

/** "x (sd15), y (sdxl), z (flux1)": a per-model-type default, in words. */
function perModelType(pick: (defaults: ModelTypeDefaults) => string | number): string {
  return Object.entries(MODEL_TYPE_DEFAULTS)
    .map(([type, defaults]) => `${pick(defaults)} (${type})`)
    .join(', ');
}

export interface FieldSpec<T> {
  readonly schema: z.ZodType<T>;
  /** The value used when the key is absent; `undefined` marks an optional key. */
  readonly default: T | undefined;
  /** What is allowed, in words; quoted in errors and in the README table. */
  readonly allowed: string;
  readonly description: string;
}

function field<T>(spec: FieldSpec<T>): FieldSpec<T> {
  return spec;
}

/** Every configuration key, with its default and rule. The README's configuration table mirrors this. */
export const CONFIG_FIELDS = {
  stackName: field({
    schema: pattern(/^[A-Za-z][A-Za-z0-9-]{0,127}$/),
    default: 'SageMakerLoraPipeline',
    allowed: 'a CloudFormation stack name: a letter, then letters, digits and hyphens (at most 128)',
    description: 'Name of the CloudFormation stack.',
  }),
  datasetPrefix: field({
    schema: pattern(new RegExp(`^(${S3_SAFE_SEGMENT}/)+$`)).refine(
      (v) => !v.split('/').some((s) => s === '.' || s === '..'),
    ),
    default: 'datasets/',
    allowed: "an S3 key prefix ending in '/', made of letters, digits and !_.*'()- (no '.' or '..' segments)",
    description: 'Key prefix under which each dataset folder is uploaded to the datasets bucket.',
  }),
  triggerFileName: field({
    // Not a caption name either: kohya would read it as one, and a caption written back could start a run.
    schema: pattern(new RegExp(`^${S3_SAFE_SEGMENT}$`)).refine((v) => !['.', '..', 'train.json'].includes(v) && !CAPTION_EXTENSIONS.some((extension) => v.toLowerCase().endsWith(extension))),
    default: 'dataset.toml',
    allowed: "a file name of letters, digits and !_.*'()-, other than 'train.json' and not ending in .txt or .caption",
    description:
      "The object whose upload into a dataset folder starts a run. The kohya configuration is always read from the folder's dataset.toml, whatever this name.",
  }),
  settleSeconds: field({
    schema: integer(0, 3600),
    default: 60,
    allowed: 'an integer from 0 to 3600',
    description: 'A run trains only once no object in the dataset folder is newer than this.',
  }),
  namePrefix: field({
    schema: pattern(/^[a-z][a-z0-9]{0,9}$/),
    default: 'lora',
    allowed: 'a lowercase letter, then up to 9 lowercase letters or digits',
    description:
      "First part of every training job, model, endpoint config and endpoint name the workflow creates; its permissions cover only names with this prefix, so two stacks in one account need different prefixes.",
  }),
  modelType: field({
    schema: z.enum(['sd15', 'sdxl', 'flux1']),
    default: 'sd15',
    allowed: "'sd15', 'sdxl' or 'flux1'",
    description: 'Family of the base model: Stable Diffusion 1.5, Stable Diffusion XL, or FLUX.1 (dev or schnell).',
  }),
  baseModel: field({
    schema: z.string().refine((v) => HF_REPO_ID.test(v) || isS3ModelUri(v)),
    default: undefined,
    allowed:
      "a Hugging Face repo id 'owner/name', or an s3:// URI of a .safetensors or .ckpt file or of a diffusers folder ending in '/'; " +
      `for flux1, ${FLUX_HUB_REPOS.schnell}, ${FLUX_HUB_REPOS.dev}, or an s3:// folder ending in '/' holding ${FLUX_FILES.transformer.dev} or ` +
      `${FLUX_FILES.transformer.schnell}, ${FLUX_FILES.ae}, ${FLUX_FILES.clipL} and ${FLUX_FILES.t5xxl}`,
    description:
      `Base model to train on and serve. Defaults by modelType: ${DEFAULT_BASE_MODELS.sd15} (sd15), ${DEFAULT_BASE_MODELS.sdxl} (sdxl), ` +
      `${DEFAULT_BASE_MODELS.flux1} (flux1, Apache-2.0; ${FLUX_HUB_REPOS.dev} is non-commercial and gated: it needs huggingFaceTokenSecret).`,
  }),
  huggingFaceTokenSecret: field({
    schema: z.string().refine((v) => (SECRET_NAME.test(v) || SECRET_ARN.test(v)) && !HF_TOKEN_LIKE.test(v)),
    default: undefined,
    allowed: "a Secrets Manager secret's name (letters, digits and /_+=.@-, at most 512) or complete ARN, never the token itself",
    description:
      'Secret whose value is a Hugging Face token, for gated Hub base models (required for FLUX.1-dev). Only the training and endpoint roles may read it; ' +
      'jobs and models get its name (HF_TOKEN_SECRET_ID), never the token. A secret under a customer managed KMS key needs that key granted too.',
  }),
  'training.instanceType': field({
    schema: pattern(GPU_INSTANCE_TYPE),
    default: undefined,
    allowed: 'a SageMaker GPU instance type, ml.g* or ml.p* (e.g. ml.g4dn.xlarge, ml.g5.2xlarge), that can train the model type',
    description: `Training instance type. Defaults by modelType: ${perModelType((d) => d.trainingInstanceType)}.`,
  }),
  'training.spot': field({
    schema: boolean(),
    default: true,
    allowed: 'true or false',
    description: 'Use managed spot training (resumes from checkpoints after an interruption).',
  }),
  'training.maxRuntimeSeconds': field({
    schema: integer(1, MAX_TRAINING_SECONDS),
    default: undefined,
    allowed: `an integer from 1 to ${MAX_TRAINING_SECONDS}`,
    description: `Longest time the training job may train (SageMaker MaxRuntimeInSeconds). Defaults by modelType: ${perModelType((d) => d.trainingMaxRuntimeSeconds)}.`,
  }),
  'training.maxWaitSeconds': field({
    schema: integer(1, MAX_TRAINING_SECONDS),
    default: undefined,
    allowed: `an integer from 1 to ${MAX_TRAINING_SECONDS}, at least training.maxRuntimeSeconds when training.spot is true`,
    description:
      'Longest time a spot job may take, waiting for capacity included (SageMaker MaxWaitTimeInSeconds). ' +
      `Defaults by modelType: ${perModelType((d) => d.trainingMaxWaitSeconds)}.`,
  }),
  'training.volumeSizeGb': field({
    schema: integer(1, 16384),
    default: undefined,
    allowed: 'an integer from 1 to 16384; at least 100 for flux1',
    description: `Size of the training volume (base model, latent cache, checkpoints), GB. Defaults by modelType: ${perModelType((d) => d.trainingVolumeSizeGb)}.`,
  }),
  'training.captionMissing': field({
    schema: boolean(),
    default: undefined,
    allowed: 'true or false',
    description:
      'Caption images that have no caption file with BLIP before training, and write the captions back next to them (the caption_missing hyperparameter, which a run may set). ' +
      `Defaults by modelType, as the hyperparameter's: ${hyperparameterDefault('caption_missing')}.`,
  }),
  'endpoint.instanceType': field({
    schema: pattern(GPU_INSTANCE_TYPE),
    default: undefined,
    allowed: 'a SageMaker GPU instance type, ml.g* or ml.p* (e.g. ml.g4dn.xlarge, ml.g5.xlarge), that can serve the model type',
    description:
      `Endpoint instance type. Defaults by modelType, for the shared endpoint: ${perModelType((d) => d.sharedEndpointInstanceType)}; ` +
      `for dedicated endpoints: ${perModelType((d) => d.endpointInstanceType)}.`,
  }),
  'endpoint.instanceCount': field({
    schema: integer(1, 20),
    default: 1,
    allowed: 'an integer from 1 to 20',
    description: 'Number of instances of each dedicated endpoint.',
  }),
  'endpoint.mode': field({
    schema: z.enum(['shared', 'dedicated']),
    default: 'shared',
    allowed: "'shared' or 'dedicated'",
    description:
      "'shared': one endpoint for the deploy-time base model serves every trained LoRA, named per request; 'dedicated': each dataset gets its own endpoint with its LoRA fused.",
  }),
  'endpoint.minInstances': field({
    schema: integer(0, 20),
    default: 1,
    allowed: 'an integer from 0 to 20, at most endpoint.maxInstances',
    description:
      'Fewest instances of the shared endpoint; 0 lets it scale to zero when idle (the first request after that fails while an instance starts, several minutes).',
  }),
  'endpoint.maxInstances': field({
    schema: integer(1, 20),
    default: 1,
    allowed: 'an integer from 1 to 20, at least endpoint.minInstances',
    description: 'Most instances the shared endpoint scales out to under load.',
  }),
  'endpoint.loraCacheGpuMb': field({
    schema: integer(LORA_CACHE_MIN_MB, 81920),
    default: 2048,
    allowed: `an integer from ${LORA_CACHE_MIN_MB} to 81920, at most endpoint.loraCacheHostMb`,
    description: 'MB of converted LoRA weights the shared endpoint keeps on the GPU, least recently used evicted first.',
  }),
  'endpoint.loraCacheHostMb': field({
    schema: integer(LORA_CACHE_MIN_MB, 262144),
    default: 4096,
    allowed: `an integer from ${LORA_CACHE_MIN_MB} to 262144, at most endpoint.loraCacheDiskMb`,
    description: 'MB of LoRA weights the shared endpoint keeps in host memory, least recently used evicted first.',
  }),
  'endpoint.loraCacheDiskMb': field({
    schema: integer(LORA_CACHE_MIN_MB, 1048576),
    default: 20480,
    allowed: `an integer from ${LORA_CACHE_MIN_MB} to 1048576, at least endpoint.loraCacheHostMb`,
    description: 'MB of downloaded .safetensors files the shared endpoint keeps on local disk, least recently used evicted first.',
  }),
  notificationEmail: field({
    schema: z.email(),
    default: undefined,
    allowed: 'an e-mail address',
    description: 'If set, this address is subscribed to run notifications (confirm the e-mail SNS sends).',
  }),
  removalPolicy: field({
    schema: z.enum(['retain', 'destroy']),
    default: 'retain',
    allowed: "'retain' or 'destroy'",
    description: "What 'cdk destroy' does with the buckets, the key and the log groups: keep them, or delete them with all their data.",
  }),
  logRetentionDays: field({
    schema: integer(1, 3653).refine((d) => (LOG_RETENTION_DAYS as readonly number[]).includes(d)),
    default: 90,
    allowed: `one of ${LOG_RETENTION_DAYS.join(', ')}`,
    description: 'Retention of the CloudWatch log groups the stack creates.',
  }),
  'storage.checkpointExpirationDays': field({
    schema: integer(1, 3650),
    default: 7,
    allowed: 'an integer from 1 to 3650, longer than the longest training job',
    description: "Training checkpoints under the artifacts bucket's checkpoints/ prefix are deleted after this many days.",
  }),
  'storage.noncurrentVersionExpirationDays': field({
    schema: integer(1, 3650),
    default: 30,
    allowed: 'an integer from 1 to 3650',
    description: 'Overwritten or deleted object versions are kept this many days, then deleted.',
  }),
  'storage.accessLogExpirationDays': field({
    schema: integer(1, 3650),
    default: 365,
    allowed: 'an integer from 1 to 3650',
    description: 'S3 server access logs are kept this many days.',
  }),
} as const;

export type ConfigKey = keyof typeof CONFIG_FIELDS;
export type ValueOf<K extends ConfigKey> = (typeof CONFIG_FIELDS)[K] extends FieldSpec<infer T> ? T : never;
