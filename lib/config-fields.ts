import { z } from 'zod';
import { DEFAULT_BASE_MODELS, GPU_INSTANCE_TYPE, HF_REPO_ID, isS3ModelUri, MAX_TRAINING_SECONDS } from '../lambda/shared/models';

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
    schema: pattern(new RegExp(`^${S3_SAFE_SEGMENT}$`)).refine((v) => !['.', '..', 'train.json'].includes(v)),
    default: 'dataset.toml',
    allowed: "a file name of letters, digits and !_.*'()-, other than 'train.json'",
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
    schema: z.enum(['sd15', 'sdxl']),
    default: 'sd15',
    allowed: "'sd15' or 'sdxl'",
    description: 'Stable Diffusion family of the base model.',
  }),
  baseModel: field({
    schema: z.string().refine((v) => HF_REPO_ID.test(v) || isS3ModelUri(v)),
    default: undefined,
    allowed:
      "a Hugging Face repo id 'owner/name', or an s3:// URI of a .safetensors or .ckpt file or of a diffusers folder ending in '/'",
    description: `Base model to train on and serve. Defaults by modelType: ${DEFAULT_BASE_MODELS.sd15} (sd15), ${DEFAULT_BASE_MODELS.sdxl} (sdxl).`,
  }),
  'training.instanceType': field({
    schema: pattern(GPU_INSTANCE_TYPE),
    default: 'ml.g4dn.xlarge',
    allowed: 'a SageMaker GPU instance type, ml.g* or ml.p* (e.g. ml.g4dn.xlarge, ml.g5.2xlarge)',
    description: 'Training instance type.',
  }),
  'training.spot': field({
    schema: boolean(),
    default: true,
    allowed: 'true or false',
    description: 'Use managed spot training (resumes from checkpoints after an interruption).',
  }),
  'training.maxRuntimeSeconds': field({
    schema: integer(1, MAX_TRAINING_SECONDS),
    default: 3600,
    allowed: `an integer from 1 to ${MAX_TRAINING_SECONDS}`,
    description: 'Longest time the training job may train (SageMaker MaxRuntimeInSeconds).',
  }),
  'training.maxWaitSeconds': field({
    schema: integer(1, MAX_TRAINING_SECONDS),
    default: 7200,
    allowed: `an integer from 1 to ${MAX_TRAINING_SECONDS}, at least training.maxRuntimeSeconds when training.spot is true`,
    description: 'Longest time a spot job may take, waiting for capacity included (SageMaker MaxWaitTimeInSeconds).',
  }),
  'training.volumeSizeGb': field({
    schema: integer(1, 16384),
    default: 50,
    allowed: 'an integer from 1 to 16384',
    description: 'Size of the training volume (base model, latent cache, checkpoints).',
  }),
  'endpoint.instanceType': field({
    schema: pattern(GPU_INSTANCE_TYPE),
    default: 'ml.g4dn.xlarge',
    allowed: 'a SageMaker GPU instance type, ml.g* or ml.p* (e.g. ml.g4dn.xlarge, ml.g5.xlarge)',
    description: 'Endpoint instance type.',
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
