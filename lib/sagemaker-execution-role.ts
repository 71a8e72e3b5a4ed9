import { ArnFormat, Stack, Validations } from 'aws-cdk-lib';
import type * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { iamFindingArn } from './nag-findings';

/** What SageMaker runs under a role: a training job, or the containers of an endpoint. */
export type SageMakerWorkload = 'training' | 'hosting';

/** Where SageMaker writes each workload's container logs, and the namespace of its metrics. */
const WORKLOADS: Record<SageMakerWorkload, { logGroup: string; metricNamespace: string }> = {
  // One log group for all jobs; streams are named `<job>/algo-1-<time>`.
  training: { logGroup: '/aws/sagemaker/TrainingJobs', metricNamespace: '/aws/sagemaker/TrainingJobs' },
  // One log group per endpoint: `/aws/sagemaker/Endpoints/<endpoint name>`.
  hosting: { logGroup: '/aws/sagemaker/Endpoints/*', metricNamespace: '/aws/sagemaker/Endpoints' },
};

/** Properties of {@link SageMakerExecutionRole}. */
export interface SageMakerExecutionRoleProps {
  /** Which kind of SageMaker resource assumes the role; decides its log group and metric namespace. */
  readonly workload: SageMakerWorkload;
  /** The container image the role pulls. */
  readonly image: ecrAssets.DockerImageAsset;
  /** The pipeline's key: encrypts what the role reads and writes, and the instance's volume. */
  readonly key: kms.IKey;
  /** The role's description in IAM. */
  readonly description: string;
  /**
   * The log groups and metric namespaces of one known endpoint, instead of the workload's (every
   * endpoint's): the shared endpoint, whose name is fixed, and whose inference component logs to
   * a group of its own.
   * @default the workload's log group and metric namespace
   */
  readonly telemetry?: { readonly logGroups: readonly string[]; readonly metricNamespaces: readonly string[] };
}

/** An `s3://bucket/key` URI split into its parts; `key` is empty for a whole bucket. */
export interface S3Location {
  readonly bucket: string;
  readonly key: string;
}

/** Splits an `s3://` URI, or returns `undefined` when the string is not one (e.g. a Hugging Face id). */
export function parseS3Uri(uri: string): S3Location | undefined {
  const match = /^s3:\/\/([^/]+)\/?(.*)$/.exec(uri);
  return match ? { bucket: match[1], key: match[2] } : undefined;
}

/**
 * The IAM role a SageMaker training job or endpoint runs under, granting only what that workload
 * does: pull its one image, write its own log streams and metrics, use the pipeline's key, and read
 * or write the S3 prefixes it is given through {@link grantRead} and {@link grantReadWrite}.
 *
 * Where AWS offers no resource-level scoping (ECR's authorization token, CloudWatch metrics, log
 * streams whose names SageMaker chooses), the finding is acknowledged here, next to the statement.
 */
export class SageMakerExecutionRole extends Construct {
  public readonly role: iam.Role;

  constructor(scope: Construct, id: string, props: SageMakerExecutionRoleProps) {
    super(scope, id);
    const { logGroup, metricNamespace } = WORKLOADS[props.workload];
    const logGroups = props.telemetry?.logGroups ?? [logGroup];
    const metricNamespaces = props.telemetry?.metricNamespaces ?? [metricNamespace];
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('sagemaker.amazonaws.com', {
        conditions: { StringEquals: { 'aws:SourceAccount': Stack.of(this).account } },
      }),
      description: props.description,
    });

    // ecr:GetAuthorizationToken has no resource; the layer actions are scoped to the asset's repository.
    props.image.repository.grantPull(this.role);

    const stack = Stack.of(this);
    const logGroupArns = logGroups.map((name) =>
      stack.formatArn({ service: 'logs', resource: 'log-group', resourceName: name, arnFormat: ArnFormat.COLON_RESOURCE_NAME }),
    );
    const logStreamsArns = logGroupArns.map((arn) => `${arn}:log-stream:*`);
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'CreateItsLogGroup',
        actions: ['logs:CreateLogGroup'],
        resources: logGroupArns,
      }),
    );
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'WriteItsLogStreams',
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents', 'logs:DescribeLogStreams'],
        resources: logStreamsArns,
      }),
    );
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'PutItsMetrics',
        actions: ['cloudwatch:PutMetricData'],
        resources: ['*'],
        conditions: { StringEquals: { 'cloudwatch:namespace': metricNamespaces.length === 1 ? metricNamespaces[0] : [...metricNamespaces] } },
      }),
    );

    // Read SSE-KMS objects under the key; a training job also writes them (checkpoints, the output
    // artifact), while an endpoint only reads, and only S3 objects: S3 calls KMS for it. Other
    // services (the LoRA registry's DynamoDB) are granted by their own constructs, each through
    // its service. SageMaker may create the grant that encrypts the instance's storage volume,
    // only for AWS resources.
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'UseTheDataKey',
        actions: props.workload === 'training' ? ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey'] : ['kms:Decrypt'],
        resources: [props.key.keyArn],
        ...(props.workload === 'hosting' ? { conditions: { StringEquals: { 'kms:ViaService': `s3.${stack.region}.amazonaws.com` } } } : {}),
      }),
    );
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'GrantVolumeEncryption',
        actions: ['kms:CreateGrant', 'kms:DescribeKey'],
        resources: [props.key.keyArn],
        conditions: { Bool: { 'kms:GrantIsForAWSResource': 'true' } },
      }),
    );

    const policy = this.role.node.findChild('DefaultPolicy');
    Validations.of(policy).acknowledge(
      {
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason:
          'ecr:GetAuthorizationToken and cloudwatch:PutMetricData support no resource-level permissions; ' +
          `the metrics are limited to the ${metricNamespaces.join(' and ')} namespace by condition and image pulls to the asset repository.`,
      },
      ...logStreamsArns.map((arn, index) => ({
        id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, arn)}]`,
        reason:
          `SageMaker names the log streams in ${logGroups[index]} itself (job, endpoint or component name plus instance and time), ` +
          'so the streams cannot be listed in advance; the role writes only to that log group.',
      })),
      ...logGroupArns
        .filter((_, index) => logGroups[index].includes('*'))
        .map((arn) => ({
          id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, arn)}]`,
          reason:
            'Each endpoint gets its own log group /aws/sagemaker/Endpoints/<endpoint name>, and endpoint names are chosen per dataset at run time.',
        })),
    );
  }

  /** Lets the workload list and read the objects under `prefix` (an object key, or a folder ending in `/`). */
  public grantRead(bucket: s3.IBucket, prefix: string): void {
    this.addObjectStatement(bucket, prefix, ['s3:GetObject']);
  }

  /**
   * Lets the workload list, read, write and delete the objects under `prefix`. Delete is part of it
   * because SageMaker mirrors a checkpoint deleted in the container by deleting it in S3.
   */
  public grantReadWrite(bucket: s3.IBucket, prefix: string): void {
    this.addObjectStatement(bucket, prefix, ['s3:GetObject', 's3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload']);
  }

  /**
   * Lets the workload read an `s3://` location outside the pipeline's buckets, such as a base model:
   * a folder (ending in `/`) or, with `exactObject`, exactly one object. Without it a file URI is
   * read as a key prefix, which is how a training channel (S3Prefix) downloads a single file.
   */
  public grantReadUri(uri: string, options: { readonly exactObject?: boolean } = {}): void {
    const location = parseS3Uri(uri);
    if (!location) throw new Error(`not an s3:// URI: ${uri}`);
    const exact = options.exactObject === true && location.key !== '' && !location.key.endsWith('/');
    const id = `Bucket-${location.bucket}`;
    const bucket = (this.node.tryFindChild(id) as s3.IBucket | undefined) ?? s3.Bucket.fromBucketName(this, id, location.bucket);
    this.addObjectStatement(bucket, location.key, ['s3:GetObject'], exact);
  }

  /**
   * Lets the workload read one Secrets Manager secret's value (a Hugging Face token), given by name or
   * complete ARN, and nothing else of Secrets Manager. A secret's ARN ends in `-` and six random
   * characters, so a name matches exactly `<name>-??????`: that secret, never one whose name only starts alike.
   */
  public grantSecretValue(secret: string): void {
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({ sid: 'ReadTheHuggingFaceToken', actions: ['secretsmanager:GetSecretValue'], resources: [secretArnForPolicy(this, secret)] }),
    );
  }

  private addObjectStatement(bucket: s3.IBucket, prefix: string, actions: string[], exact = false): void {
    if (exact) {
      this.role.addToPrincipalPolicy(new iam.PolicyStatement({ actions, resources: [bucket.arnForObjects(prefix)] }));
      return;
    }
    const objects = `${prefix}*`;
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['s3:ListBucket'],
        resources: [bucket.bucketArn],
        conditions: { StringLike: { 's3:prefix': [objects] } },
      }),
    );
    this.role.addToPrincipalPolicy(new iam.PolicyStatement({ actions, resources: [bucket.arnForObjects(objects)] }));
    Validations.of(this.role.node.findChild('DefaultPolicy')).acknowledge({
      id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, bucket.arnForObjects(objects))}]`,
      reason: `The workload reads${actions.length > 1 ? ' and writes' : ''} every object under ${prefix || 'the bucket root'}, whose names it or its users choose at run time.`,
    });
  }
}

/** The ARN an IAM statement names a secret by: its complete ARN as given, or `<name>-??????` in this stack's account and region. */
export function secretArnForPolicy(scope: Construct, secret: string): string {
  if (secret.startsWith('arn:')) return secret;
  return Stack.of(scope).formatArn({ service: 'secretsmanager', resource: 'secret', resourceName: `${secret}-??????`, arnFormat: ArnFormat.COLON_RESOURCE_NAME });
}
