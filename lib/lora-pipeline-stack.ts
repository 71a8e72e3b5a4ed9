import { CfnOutput, Duration, RemovalPolicy, Stack, type StackProps, Tags } from 'aws-cdk-lib';
import { type Construct } from 'constructs';
import { type PipelineConfig } from './config';
import { PipelineStorage } from './pipeline-storage';
import { ServingContainer } from './serving-container';
import { TrainingContainer } from './training-container';

/** Properties of {@link LoraPipelineStack}. */
export interface LoraPipelineStackProps extends StackProps {
  /** Validated deploy-time configuration (see `lib/config.ts`). */
  readonly config: PipelineConfig;
}

/** The whole pipeline. The stack only wires constructs together; each concern lives in its own construct. */
export class LoraPipelineStack extends Stack {
  public readonly storage: PipelineStorage;
  public readonly training: TrainingContainer;
  public readonly serving: ServingContainer;

  constructor(scope: Construct, id: string, props: LoraPipelineStackProps) {
    super(scope, id, props);
    const { config } = props;
    Tags.of(this).add('project', 'sagemaker-lora-pipeline');

    this.storage = new PipelineStorage(this, 'Storage', {
      removalPolicy: config.removalPolicy === 'destroy' ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN,
      checkpointExpiration: Duration.days(config.storage.checkpointExpirationDays),
      noncurrentVersionExpiration: Duration.days(config.storage.noncurrentVersionExpirationDays),
      accessLogExpiration: Duration.days(config.storage.accessLogExpirationDays),
    });

    this.training = new TrainingContainer(this, 'Training', {
      storage: this.storage,
      datasetPrefix: config.datasetPrefix,
      baseModel: config.baseModel,
    });
    this.serving = new ServingContainer(this, 'Serving', {
      storage: this.storage,
      modelType: config.modelType,
      baseModel: config.baseModel,
    });

    new CfnOutput(this, 'DatasetsBucketName', {
      value: this.storage.datasetsBucket.bucketName,
      description: `Upload dataset folders to s3://<this bucket>/${config.datasetPrefix}<name>/`,
    });
    new CfnOutput(this, 'ArtifactsBucketName', {
      value: this.storage.artifactsBucket.bucketName,
      description: 'Training checkpoints and trained LoRA models',
    });
    new CfnOutput(this, 'DataKeyArn', {
      value: this.storage.key.keyArn,
      description: 'KMS key that encrypts the datasets and artifacts; uploaders need kms:GenerateDataKey on it',
    });
  }
}
