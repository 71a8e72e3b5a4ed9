import * as path from 'node:path';
import { Stack } from 'aws-cdk-lib';
import * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';
import type * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';
import type { ModelType } from './config';
import { BASE_MODEL_CHANNEL, servingModelInputs, STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS, type ServingModelInputs } from '../lambda/shared/models';
import { PipelineStorage } from './pipeline-storage';
import { parseS3Uri, SageMakerExecutionRole, type SageMakerExecutionRoleProps } from './sagemaker-execution-role';

export type { AdditionalModelDataSource, ServingModelInputs } from '../lambda/shared/models';

/** Properties of {@link ServingContainer}. */
export interface ServingContainerProps {
  /** The pipeline's buckets and key: the endpoint reads trained models from the artifacts bucket. */
  readonly storage: PipelineStorage;
  /** Model family of the base model (sd15, sdxl or flux1); the server refuses a LoRA of another family. */
  readonly modelType: ModelType;
  /**
   * The deploy-time base model: a Hugging Face repo id (downloaded by the container at start), or an
   * `s3://` URI of a `.safetensors` / `.ckpt` file or of a diffusers folder ending in `/` (mounted
   * into the container, which the role may then read).
   */
  readonly baseModel: string;
  /**
   * The Secrets Manager secret (name or complete ARN) holding a Hugging Face token: every endpoint role
   * may read it, and a model of a Hub base model names it in HF_TOKEN_SECRET_ID.
   */
  readonly huggingFaceTokenSecret?: string;
  /**
   * Multiplier the LoRA is fused at; requests may ask for another (`lora_scale`, 0–2).
   * @default 1 — the LoRA as trained
   */
  readonly loraScale?: number;
}

/**
 * The inference image (`containers/inference`, built by CDK as a linux/amd64 Docker asset) and the
 * least-privilege role its endpoints run under: pull the image, read trained models under
 * `models/` and the deploy-time S3 base model, use the pipeline's key, write the endpoint's logs
 * and metrics.
 */
export class ServingContainer extends Construct {
  /** The image's build context. */
  public static readonly DIRECTORY = path.join(__dirname, '..', 'containers', 'inference');
  /**
   * The channel an S3 base model is mounted as, at `/opt/ml/additional-model-data-sources/base_model/`,
   * where the server looks for it (`BASE_MODEL_PATH` in `containers/inference/lora_server/settings.py`).
   */
  public static readonly BASE_MODEL_CHANNEL = BASE_MODEL_CHANNEL;
  /** The longest ContainerStartupHealthCheckTimeoutInSeconds of any model type: how long a deployment may wait for one. */
  public static readonly MAX_STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS = Math.max(...Object.values(STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS));
  /**
   * A ModelDataDownloadTimeoutInSeconds for the endpoint's production variant: the LoRA artifact is
   * small, but an S3 base model mounted beside it is several GB (an SDXL checkpoint is about 7 GB).
   */
  public static readonly MODEL_DATA_DOWNLOAD_TIMEOUT_SECONDS = 1800;

  /** The image asset; `imageUri` is what a SageMaker model's container names. */
  public readonly image: ecrAssets.DockerImageAsset;
  public readonly imageUri: string;
  /** The execution role of the dedicated endpoints (the workflow passes it to each run's model). */
  public readonly role: iam.IRole;
  /** The multiplier the LoRA is fused at (LORA_SCALE). */
  public readonly loraScale: number;
  /** The deploy-time model type's ContainerStartupHealthCheckTimeoutInSeconds (lambda/shared/models.ts). */
  public readonly startupHealthCheckTimeoutSeconds: number;
  /** The secret holding a Hugging Face token, which the endpoint roles may read; undefined if none is configured. */
  public readonly huggingFaceTokenSecret?: string;
  /** The model inputs for the deploy-time base model and model type. */
  public readonly defaults: ServingModelInputs;

  private readonly props: ServingContainerProps;

  constructor(scope: Construct, id: string, props: ServingContainerProps) {
    super(scope, id);
    this.loraScale = props.loraScale ?? 1;
    this.huggingFaceTokenSecret = props.huggingFaceTokenSecret;
    this.startupHealthCheckTimeoutSeconds = STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS[props.modelType];
    this.defaults = ServingContainer.modelInputs(props.modelType, props.baseModel, this.loraScale, props.huggingFaceTokenSecret, Stack.of(this).region);

    this.image = new ecrAssets.DockerImageAsset(this, 'Image', {
      directory: ServingContainer.DIRECTORY,
      platform: ecrAssets.Platform.LINUX_AMD64,
    });
    this.imageUri = this.image.imageUri;

    this.props = props;
    this.role = this.endpointRole(
      this,
      'ExecutionRole',
      'Runs the dedicated LoRA endpoints: reads trained models and the base model, writes endpoint logs',
      { loraPrefix: PipelineStorage.MODELS_PREFIX },
    ).role;
  }

  /**
   * A new execution role for endpoints of this image: it pulls the image, reads the LoRA files
   * under `loraPrefix` of the artifacts bucket and the deploy-time S3 base model, decrypts them
   * through S3, and writes the endpoint's logs and metrics (every endpoint's, or with `telemetry`
   * one endpoint's). The dedicated endpoints get {@link role}, reading the training output under
   * `models/`; the shared endpoint gets its own, reading only the copies under `loras/`, to which it
   * adds the registry reads that dedicated endpoints do not need.
   */
  public endpointRole(
    scope: Construct,
    id: string,
    description: string,
    options: { readonly loraPrefix: string; readonly telemetry?: SageMakerExecutionRoleProps['telemetry'] },
  ): SageMakerExecutionRole {
    const { storage, baseModel, huggingFaceTokenSecret } = this.props;
    const executionRole = new SageMakerExecutionRole(scope, id, { workload: 'hosting', image: this.image, key: storage.key, description, telemetry: options.telemetry });
    executionRole.grantRead(storage.artifactsBucket, options.loraPrefix);
    // A single file is mounted as one S3Object, so the role reads exactly that object.
    if (parseS3Uri(baseModel)) executionRole.grantReadUri(baseModel, { exactObject: true });
    if (huggingFaceTokenSecret !== undefined) executionRole.grantSecretValue(huggingFaceTokenSecret);
    return executionRole;
  }

  /**
   * The environment and base-model mount of a SageMaker model serving a LoRA of `modelType` on
   * `baseModel`, fused at `loraScale`. Throws on a scale outside 0–2, which the server would refuse.
   * The Prepare function builds each run's model with the same function (`lambda/shared/models.ts`).
   */
  public static modelInputs(modelType: ModelType, baseModel: string, loraScale = 1, huggingFaceTokenSecret?: string, region?: string): ServingModelInputs {
    return servingModelInputs(modelType, baseModel, loraScale, { huggingFaceTokenSecretId: huggingFaceTokenSecret, region });
  }
}
