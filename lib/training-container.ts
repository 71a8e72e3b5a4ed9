import * as path from 'node:path';
import * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';
import type * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';
import { z } from 'zod';
import metricFile from '../containers/training/lora_trainer/metric_definitions.json';
import { HYPERPARAMETER_SCHEMA } from '../lambda/shared/hyperparameters';
import { PipelineStorage } from './pipeline-storage';
import { parseS3Uri, SageMakerExecutionRole } from './sagemaker-execution-role';

/** A SageMaker metric definition (AlgorithmSpecification.MetricDefinitions). */
export interface MetricDefinition {
  readonly Name: string;
  readonly Regex: string;
}

const metricFileSchema = z.object({
  $comment: z.string(),
  metricDefinitions: z.array(z.object({ Name: z.string().min(1).max(255), Regex: z.string().min(1).max(500) }).strict()).min(1),
});

/** Properties of {@link TrainingContainer}. */
export interface TrainingContainerProps {
  /** The pipeline's buckets and key. */
  readonly storage: PipelineStorage;
  /** Key prefix of the dataset folders in the datasets bucket; the jobs read only below it. */
  readonly datasetPrefix: string;
  /**
   * The deploy-time base model. An `s3://` URI (a file, or a folder ending in `/`) is made readable
   * by the jobs; a Hugging Face id needs no grant.
   */
  readonly baseModel: string;
  /** The Secrets Manager secret (name or complete ARN) holding a Hugging Face token: the jobs may read it. */
  readonly huggingFaceTokenSecret?: string;
  /**
   * Folder with the image's Dockerfile.
   * @default the repository's containers/training
   */
  readonly directory?: string;
}

/**
 * The LoRA training image (kohya-ss sd-scripts under the SageMaker training contract, built from
 * containers/training as a linux/amd64 asset) and the role its jobs run under, with what the
 * workflow needs to start a job: channel names, S3 prefixes, the hyperparameter schema and the
 * metric definitions.
 */
export class TrainingContainer extends Construct {
  /** Training channel with the dataset folder (File mode). */
  public static readonly DATASET_CHANNEL = 'dataset';
  /** Training channel with an S3 base model: one .safetensors/.ckpt file or a diffusers folder. */
  public static readonly BASE_MODEL_CHANNEL = 'base_model';

  public readonly image: ecrAssets.DockerImageAsset;
  /** The image URI for AlgorithmSpecification.TrainingImage. */
  public readonly imageUri: string;
  /** The execution role of the training jobs. */
  public readonly role: iam.IRole;
  /** Artifacts-bucket prefix of the jobs' checkpoints: `<prefix><job name>/` ↔ /opt/ml/checkpoints. */
  public readonly checkpointsPrefix = PipelineStorage.CHECKPOINTS_PREFIX;
  /** Artifacts-bucket prefix of the jobs' output (S3OutputPath): `<prefix><job name>/output/model.tar.gz`. */
  public readonly outputPrefix = PipelineStorage.MODELS_PREFIX;
  /** The hyperparameters the image accepts, from the schema file its entrypoint reads. */
  public readonly hyperparameterSchema = HYPERPARAMETER_SCHEMA;
  /** Regexes for the metric lines the entrypoint prints, to pass to CreateTrainingJob. */
  public readonly metricDefinitions: readonly MetricDefinition[];

  constructor(scope: Construct, id: string, props: TrainingContainerProps) {
    super(scope, id);
    const { storage } = props;
    this.image = new ecrAssets.DockerImageAsset(this, 'Image', {
      directory: props.directory ?? path.join(__dirname, '..', 'containers', 'training'),
      platform: ecrAssets.Platform.LINUX_AMD64,
    });
    this.imageUri = this.image.imageUri;
    this.metricDefinitions = metricFileSchema.parse(metricFile).metricDefinitions;

    const execution = new SageMakerExecutionRole(this, 'ExecutionRole', {
      workload: 'training',
      image: this.image,
      key: storage.key,
      description: 'Runs the LoRA training jobs: reads datasets and the base model, writes checkpoints and models',
    });
    execution.grantRead(storage.datasetsBucket, props.datasetPrefix);
    execution.grantReadWrite(storage.artifactsBucket, this.checkpointsPrefix);
    execution.grantReadWrite(storage.artifactsBucket, this.outputPrefix);
    if (parseS3Uri(props.baseModel)) execution.grantReadUri(props.baseModel);
    if (props.huggingFaceTokenSecret !== undefined) execution.grantSecretValue(props.huggingFaceTokenSecret);
    this.role = execution.role;
  }
}
