/**
 * Base models, instance types and what a serving model of them needs: pure rules shared by the
 * deploy-time configuration (lib/) and the workflow's functions, which must not import lib/ (it
 * would pull aws-cdk-lib into their bundles).
 */

/** Hugging Face base model used when no base model is given, per model type. */
export const DEFAULT_BASE_MODELS = {
  sd15: 'stable-diffusion-v1-5/stable-diffusion-v1-5',
  sdxl: 'stabilityai/stable-diffusion-xl-base-1.0',
} as const;

export type ModelType = keyof typeof DEFAULT_BASE_MODELS;
export const MODEL_TYPES = Object.keys(DEFAULT_BASE_MODELS) as ModelType[];

/** SageMaker refuses a training job that may run (MaxRuntime, or MaxWait with spot) longer than 28 days. */
export const MAX_TRAINING_SECONDS = 28 * 24 * 3600;

/** `ml.g*` and `ml.p*` are the NVIDIA GPU families that kohya-ss and diffusers (CUDA) run on. */
export const GPU_INSTANCE_TYPE = /^ml\.(g|p)\d+[a-z0-9-]*\.[a-z0-9]+$/;

// Hub repo names: letters, digits, '-', '_', '.'; no '--' or '..'; not ending in '-' or '.'.
const HF_NAME = '[A-Za-z0-9](?:[A-Za-z0-9_]|-(?!-)|\\.(?!\\.)){0,95}(?<![-.])';
export const HF_REPO_ID = new RegExp(`^${HF_NAME}/${HF_NAME}$`);

const S3_BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const IP_ADDRESS = /^\d+\.\d+\.\d+\.\d+$/;

/** `s3://bucket/key` naming a `.safetensors` or `.ckpt` file, or a folder ending in `/`. */
export function isS3ModelUri(value: string): boolean {
  const match = /^s3:\/\/([^/]+)\/(\S+)$/.exec(value);
  if (!match) return false;
  const [, bucket, key] = match;
  const validBucket = S3_BUCKET.test(bucket) && !bucket.includes('..') && !IP_ADDRESS.test(bucket);
  const validKey = !key.split('/').some((segment) => segment === '.' || segment === '..');
  return validBucket && validKey && /(\/|\.safetensors|\.ckpt)$/.test(key);
}

/** Whether a base model (already validated as a Hub id or an S3 URI) is read from S3. */
export function isS3BaseModel(baseModel: string): boolean {
  return baseModel.startsWith('s3://');
}

/**
 * The channel an S3 base model is given as: the training job's input channel and the serving
 * model's AdditionalModelDataSource, mounted at `/opt/ml/{input/data,additional-model-data-sources}/base_model/`,
 * where both containers look for it.
 */
export const BASE_MODEL_CHANNEL = 'base_model';

/** One `AdditionalModelDataSources` entry of a SageMaker model (CreateModel's field names). */
export interface AdditionalModelDataSource {
  readonly ChannelName: string;
  readonly S3DataSource: {
    readonly S3Uri: string;
    readonly S3DataType: 'S3Object' | 'S3Prefix';
    readonly CompressionType: 'None';
  };
}

/** What a SageMaker model of the inference image needs besides the image, the role and its ModelDataUrl. */
export interface ServingModelInputs {
  /** The container's environment (MODEL_TYPE, LORA_SCALE and, for a Hub model, BASE_MODEL_ID). */
  readonly environment: Record<string, string>;
  /** The base model mounted from S3; empty when it comes from the Hugging Face Hub. */
  readonly additionalModelDataSources: AdditionalModelDataSource[];
}

/**
 * The environment and base-model mount of a SageMaker model serving a LoRA of `modelType` on
 * `baseModel`, fused at `loraScale`. Throws on a scale outside 0–2, which the server would refuse.
 */
export function servingModelInputs(modelType: ModelType, baseModel: string, loraScale = 1): ServingModelInputs {
  if (!(loraScale >= 0 && loraScale <= 2)) {
    throw new Error(`loraScale must be from 0 to 2 (the server's LORA_SCALE range), got ${loraScale}`);
  }
  const environment: Record<string, string> = { MODEL_TYPE: modelType, LORA_SCALE: String(loraScale) };
  if (!isS3BaseModel(baseModel)) {
    return { environment: { ...environment, BASE_MODEL_ID: baseModel }, additionalModelDataSources: [] };
  }
  return {
    environment,
    additionalModelDataSources: [
      {
        ChannelName: BASE_MODEL_CHANNEL,
        // A folder is mounted object by object under its prefix; a file as its own name.
        S3DataSource: { S3Uri: baseModel, S3DataType: baseModel.endsWith('/') ? 'S3Prefix' : 'S3Object', CompressionType: 'None' },
      },
    ],
  };
}
