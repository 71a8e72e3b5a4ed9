import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';

/** Properties of {@link PipelineStorage}. */
export interface PipelineStorageProps {
  /**
   * What happens to the buckets, their objects and the key when the stack is deleted.
   * `DESTROY` empties and deletes the buckets and schedules the key for deletion.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
  /**
   * Age after which training checkpoints (under {@link PipelineStorage.CHECKPOINTS_PREFIX}) are deleted.
   * Must outlast the longest training job, which resumes from them.
   * @default Duration.days(7)
   */
  readonly checkpointExpiration?: Duration;
  /**
   * How long an overwritten or deleted object version is kept before it is deleted.
   * @default Duration.days(30)
   */
  readonly noncurrentVersionExpiration?: Duration;
  /**
   * How long S3 server access logs are kept.
   * @default Duration.days(365)
   */
  readonly accessLogExpiration?: Duration;
}

/**
 * The pipeline's data at rest: a customer-managed KMS key, the datasets bucket users upload to,
 * the artifacts bucket for checkpoints and trained models, and a bucket for their access logs.
 *
 * Both data buckets are SSE-KMS with S3 Bucket Keys (fewer KMS calls, lower cost), versioned,
 * TLS 1.2+ only, closed to the public, and log every request to the access-log bucket.
 */
export class PipelineStorage extends Construct {
  /** Key prefix in the artifacts bucket under which training jobs sync `/opt/ml/checkpoints`. */
  public static readonly CHECKPOINTS_PREFIX = 'checkpoints/';
  /** Key prefix in the artifacts bucket of training output: `models/<job>/output/model.tar.gz`. */
  public static readonly MODELS_PREFIX = 'models/';

  /** Customer-managed key that encrypts both data buckets (and, later, the jobs' volumes and outputs). */
  public readonly key: kms.IKey;
  /** Where users upload dataset folders. */
  public readonly datasetsBucket: s3.IBucket;
  /** Training checkpoints and model artifacts. */
  public readonly artifactsBucket: s3.IBucket;
  /** Destination of the data buckets' S3 server access logs. */
  public readonly accessLogsBucket: s3.IBucket;

  constructor(scope: Construct, id: string, props: PipelineStorageProps = {}) {
    super(scope, id);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    const noncurrentVersionExpiration = props.noncurrentVersionExpiration ?? Duration.days(30);

    this.key = new kms.Key(this, 'DataKey', {
      description: `Encrypts the datasets, checkpoints and models of ${Stack.of(this).stackName}`,
      enableKeyRotation: true,
      removalPolicy,
    });

    // Server access logs cannot be delivered to an SSE-KMS bucket, so this one alone uses SSE-S3.
    // It is not logged itself: it is where the logs go (cdk-nag's S1 recognises a log destination).
    const accessLogsBucket = new s3.Bucket(this, 'AccessLogsBucket', {
      ...secureBucketDefaults(removalPolicy),
      encryption: s3.BucketEncryption.S3_MANAGED,
      lifecycleRules: [
        {
          id: 'expire-access-logs',
          expiration: props.accessLogExpiration ?? Duration.days(365),
          abortIncompleteMultipartUploadAfter: Duration.days(1),
        },
      ],
    });
    this.accessLogsBucket = accessLogsBucket;

    const dataBucketDefaults: s3.BucketProps = {
      ...secureBucketDefaults(removalPolicy),
      encryption: s3.BucketEncryption.KMS,
      encryptionKey: this.key,
      bucketKeyEnabled: true,
      versioned: true,
      serverAccessLogsBucket: accessLogsBucket,
    };
    const commonRules: s3.LifecycleRule[] = [
      {
        id: 'abort-incomplete-multipart-uploads',
        abortIncompleteMultipartUploadAfter: Duration.days(1),
      },
      {
        id: 'expire-noncurrent-versions',
        noncurrentVersionExpiration,
        expiredObjectDeleteMarker: true,
      },
    ];

    this.datasetsBucket = new s3.Bucket(this, 'DatasetsBucket', {
      ...dataBucketDefaults,
      serverAccessLogsPrefix: 'datasets/',
      lifecycleRules: commonRules,
    });

    this.artifactsBucket = new s3.Bucket(this, 'ArtifactsBucket', {
      ...dataBucketDefaults,
      serverAccessLogsPrefix: 'artifacts/',
      lifecycleRules: [
        ...commonRules,
        {
          // Checkpoints only matter while their job may still resume; a resumed job rewrites them,
          // so superseded checkpoint versions are dropped after a day rather than kept for weeks.
          id: 'expire-checkpoints',
          prefix: PipelineStorage.CHECKPOINTS_PREFIX,
          expiration: props.checkpointExpiration ?? Duration.days(7),
          noncurrentVersionExpiration: Duration.days(1),
        },
      ],
    });

    // A bucket policy is a resource of its own, deleted with the stack by default: a retained
    // bucket would then lose its TLS-only rule and its log-delivery grant. Keep them together.
    for (const bucket of [accessLogsBucket, this.datasetsBucket, this.artifactsBucket]) {
      bucket.policy?.applyRemovalPolicy(removalPolicy);
    }
  }
}

/** What every bucket of the pipeline has, whatever it holds. */
function secureBucketDefaults(removalPolicy: RemovalPolicy): s3.BucketProps {
  return {
    blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
    objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
    enforceSSL: true,
    minimumTLSVersion: 1.2,
    removalPolicy,
    autoDeleteObjects: removalPolicy === RemovalPolicy.DESTROY,
  };
}
