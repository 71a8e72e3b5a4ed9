/**
 * Base models, instance types and what a serving model of them needs: pure rules shared by the
 * deploy-time configuration (lib/) and the workflow's functions, which must not import lib/ (it
 * would pull aws-cdk-lib into their bundles).
 */

/** Hugging Face base model used when no base model is given, per model type. */
export const DEFAULT_BASE_MODELS = {
  sd15: 'stable-diffusion-v1-5/stable-diffusion-v1-5',
  sdxl: 'stabilityai/stable-diffusion-xl-base-1.0',
  // Apache-2.0 and not gated: a deploy needs no token. FLUX.1-dev (non-commercial, gated) is chosen by baseModel.
  flux1: 'black-forest-labs/FLUX.1-schnell',
} as const;

export type ModelType = keyof typeof DEFAULT_BASE_MODELS;
export const MODEL_TYPES = Object.keys(DEFAULT_BASE_MODELS) as ModelType[];

/** The machine a model type trains and is served on when the configuration gives none. */
export interface ModelTypeDefaults {
  readonly trainingInstanceType: string;
  /** A dedicated endpoint's. */
  readonly endpointInstanceType: string;
  /** The shared endpoint's: it also holds pristine copies of every layer LoRAs touch, and a LoRA cache, in host memory. */
  readonly sharedEndpointInstanceType: string;
  readonly trainingVolumeSizeGb: number;
  readonly trainingMaxRuntimeSeconds: number;
  readonly trainingMaxWaitSeconds: number;
}

/** SD 1.5 and SDXL share their machines. */
const SD_DEFAULTS: ModelTypeDefaults = {
  trainingInstanceType: 'ml.g4dn.xlarge',
  endpointInstanceType: 'ml.g4dn.xlarge',
  sharedEndpointInstanceType: 'ml.g4dn.xlarge',
  trainingVolumeSizeGb: 50,
  trainingMaxRuntimeSeconds: 3600,
  trainingMaxWaitSeconds: 7200,
};

/**
 * Per-type defaults: SD trains and serves on a T4 within an hour. FLUX.1 trains on an A10G with fp8_base
 * (sd-scripts: 24 GB is enough) at seconds per step (~8 s on an A6000), so 6 h, 12 h on spot; it serves its
 * ~34 GB bf16 pipeline from an L40S, the shared endpoint one with 64 GiB for ~23 GB of pristine weights.
 */
export const MODEL_TYPE_DEFAULTS: Readonly<Record<ModelType, ModelTypeDefaults>> = {
  sd15: SD_DEFAULTS,
  sdxl: SD_DEFAULTS,
  flux1: {
    trainingInstanceType: 'ml.g5.2xlarge',
    endpointInstanceType: 'ml.g6e.xlarge',
    sharedEndpointInstanceType: 'ml.g6e.2xlarge',
    trainingVolumeSizeGb: 150,
    trainingMaxRuntimeSeconds: 21600,
    trainingMaxWaitSeconds: 43200,
  },
};

/**
 * ContainerStartupHealthCheckTimeoutInSeconds of a model type's endpoint: loading SDXL (about 7 GB in
 * fp16, more to download from the Hub) takes minutes; a FLUX.1 Hub model downloads ~34 GB at start.
 */
export const STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS: Readonly<Record<ModelType, number>> = { sd15: 1200, sdxl: 1200, flux1: 1800 };

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
  /** The container's environment (MODEL_TYPE, LORA_SCALE and, for a Hub model, BASE_MODEL_ID and HF_TOKEN_SECRET_ID when a token is configured). */
  readonly environment: Record<string, string>;
  /** The base model mounted from S3; empty when it comes from the Hugging Face Hub. */
  readonly additionalModelDataSources: AdditionalModelDataSource[];
}

/**
 * The environment variable naming the Secrets Manager secret that holds a Hugging Face token: only
 * its id, never the token, which each container reads itself with its role.
 */
export const HF_TOKEN_SECRET_ENV = 'HF_TOKEN_SECRET_ID';

/**
 * The Hugging Face token environment of a job or model of `baseModel`: the secret's id (and, for a
 * name, the `region` to find it in) for a Hub model; nothing for an S3 one (network-isolated) or no secret.
 */
export function hubTokenEnvironment(baseModel: string, huggingFaceTokenSecretId: string | undefined, region?: string): Record<string, string> {
  if (huggingFaceTokenSecretId === undefined || isS3BaseModel(baseModel)) return {};
  // boto3 reads only AWS_DEFAULT_REGION, which SageMaker does not document setting; an ARN names its own.
  const byName = !huggingFaceTokenSecretId.startsWith('arn:') && region !== undefined;
  return { [HF_TOKEN_SECRET_ENV]: huggingFaceTokenSecretId, ...(byName ? { AWS_DEFAULT_REGION: region } : {}) };
}

/**
 * The environment and base-model mount of a SageMaker model serving a LoRA of `modelType` on
 * `baseModel`, fused at `loraScale`. Throws on a scale outside 0–2, which the server would refuse.
 */
export function servingModelInputs(
  modelType: ModelType,
  baseModel: string,
  loraScale = 1,
  options: { readonly huggingFaceTokenSecretId?: string; readonly region?: string } = {},
): ServingModelInputs {
  if (!(loraScale >= 0 && loraScale <= 2)) {
    throw new Error(`loraScale must be from 0 to 2 (the server's LORA_SCALE range), got ${loraScale}`);
  }
  const environment: Record<string, string> = { MODEL_TYPE: modelType, LORA_SCALE: String(loraScale) };
  if (!isS3BaseModel(baseModel)) {
    const token = hubTokenEnvironment(baseModel, options.huggingFaceTokenSecretId, options.region);
    return { environment: { ...environment, BASE_MODEL_ID: baseModel, ...token }, additionalModelDataSources: [] };
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
