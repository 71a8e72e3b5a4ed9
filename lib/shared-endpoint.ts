import { Annotations, Stack } from 'aws-cdk-lib';
import * as appscaling from 'aws-cdk-lib/aws-applicationautoscaling';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import type * as iam from 'aws-cdk-lib/aws-iam';
import * as sagemaker from 'aws-cdk-lib/aws-sagemaker';
import { Construct } from 'constructs';
import { hasInstanceStorage } from '../lambda/prepare/resources';
import { isS3BaseModel } from '../lambda/shared/models';
import type { EndpointConfig, ModelType } from './config';
import type { LoraRegistry } from './lora-registry';
import type { PipelineStorage } from './pipeline-storage';
import { ServingContainer } from './serving-container';
import { reservedHostMb, sizingNote } from './shared-endpoint-sizing';

/** Properties of {@link SharedEndpoint}. */
export interface SharedEndpointProps {
  readonly storage: PipelineStorage;
  readonly serving: ServingContainer;
  readonly registry: LoraRegistry;
  /** First part of the endpoint's and inference component's names. */
  readonly namePrefix: string;
  /** The deploy-time model family and base model the endpoint serves. */
  readonly modelType: ModelType;
  readonly baseModel: string;
  /** Instance type, instance range and LoRA cache sizes (the `endpoint.*` configuration). */
  readonly endpoint: Pick<EndpointConfig, 'instanceType' | 'minInstances' | 'maxInstances' | 'loraCache'>;
}

const MB = 1024 * 1024;
/** SageMaker's name for the endpoint's one production variant. */
const VARIANT_NAME = 'AllTraffic';
/**
 * Concurrent requests per model copy that target tracking keeps: one generating on the GPU and one
 * waiting. The server runs one generation at a time and answers 503 to a fourth request in flight
 * (MAX_INVOCATIONS_IN_FLIGHT), so a copy above 2 is queueing requests for whole generations.
 */
const TARGET_CONCURRENT_REQUESTS_PER_COPY = 2;
/** Where an S3 base model is downloaded to: the model's own data location (see {@link SharedEndpoint}). */
const MODEL_DATA_DIR = '/opt/ml/model';
/** Applied to SageMaker's own NoCapacityInvocationFailures metric of the inference component. */
const NO_CAPACITY_METRIC = { namespace: 'AWS/SageMaker', metricName: 'NoCapacityInvocationFailures' } as const;

/**
 * The shared endpoint (`endpoint.mode=shared`): one real-time endpoint serving the deploy-time base
 * model, on which every trained LoRA is named per request and loaded from the registry. It is an
 * endpoint with one inference component, the only form of SageMaker real-time endpoint that can
 * scale to zero instances (docs: "Scale an endpoint to zero instances").
 *
 * - The model: the inference image in shared mode, with the registry, bucket, prefix and cache
 *   sizes in its environment. It is not network-isolated: the server itself reads the registry
 *   (DynamoDB) and downloads LoRA files (S3), which network isolation would block. An S3 base model
 *   is the model's own uncompressed ModelDataSource (at /opt/ml/model), because CloudFormation's
 *   AWS::SageMaker::Model has no AdditionalModelDataSources, the mount dedicated models use.
 * - The endpoint config: managed instance scaling between `minInstances` and `maxInstances`,
 *   least-outstanding-requests routing, no model of its own (the inference component carries it).
 * - The inference component: the model with one GPU, at least `minInstances` copies (one at least,
 *   so a deployment is checked by one real start).
 * - Autoscaling: target tracking on concurrent requests per copy between the two bounds; with
 *   `minInstances=0`, a step policy on the NoCapacityInvocationFailures alarm brings the first
 *   copy back, which target tracking cannot (it scales in proportion to the copies there are).
 */
export class SharedEndpoint extends Construct {
  /**
   * Key prefix in the artifacts bucket of the LoRA files the server reads: the registry function
   * copies each version out of its training job's model.tar.gz to `loras/<name>/<version>.safetensors`.
   */
  public static readonly LORAS_PREFIX = 'loras/';

  public readonly endpointName: string;
  public readonly inferenceComponentName: string;
  /** The production variant the inference component is placed on (the endpoint's metrics' VariantName). */
  public readonly variantName = VARIANT_NAME;
  public readonly endpointArn: string;
  public readonly inferenceComponentArn: string;
  /** The CloudWatch embedded-metric-format namespace of the server's metrics. */
  public readonly metricsNamespace: string;
  /** SageMaker writes the inference component's container logs (and the EMF metric lines) here. */
  public readonly logGroupName: string;
  public readonly role: iam.IRole;
  public readonly model: sagemaker.CfnModel;
  public readonly endpointConfig: sagemaker.CfnEndpointConfig;
  public readonly endpoint: sagemaker.CfnEndpoint;
  public readonly inferenceComponent: sagemaker.CfnInferenceComponent;
  public readonly scalableTarget: appscaling.CfnScalableTarget;

  constructor(scope: Construct, id: string, props: SharedEndpointProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const { endpoint } = props;
    this.endpointName = SharedEndpoint.nameFor(props.namePrefix, props.modelType);
    this.inferenceComponentName = this.endpointName;
    this.metricsNamespace = `${stack.stackName}/Serving`;
    this.logGroupName = `/aws/sagemaker/InferenceComponents/${this.inferenceComponentName}`;

    const executionRole = props.serving.endpointRole(
      this,
      'ExecutionRole',
      'Runs the shared LoRA endpoint: reads the LoRA registry, the LoRA copies and the base model, writes endpoint logs',
      {
        // Only the copies the registry function makes: never the training jobs' output under models/.
        loraPrefix: SharedEndpoint.LORAS_PREFIX,
        telemetry: {
          // An inference component's container logs go to a group of its own, not the endpoint's.
          logGroups: [`/aws/sagemaker/Endpoints/${this.endpointName}`, this.logGroupName],
          metricNamespaces: ['/aws/sagemaker/Endpoints', '/aws/sagemaker/InferenceComponents'],
        },
      },
    );
    props.registry.grantReadOnly(executionRole.role);
    this.role = executionRole.role;

    this.model = new sagemaker.CfnModel(this, 'Model', {
      executionRoleArn: this.role.roleArn,
      enableNetworkIsolation: false,
      primaryContainer: {
        image: props.serving.imageUri,
        environment: this.environment(props),
        ...baseModelData(props.baseModel),
      },
    });
    // The model is created (and its image and data checked) with the role: its policy must exist first.
    this.model.node.addDependency(this.role);

    this.endpointConfig = new sagemaker.CfnEndpointConfig(this, 'Config', {
      executionRoleArn: this.role.roleArn,
      // SageMaker refuses a key for instance types whose local NVMe storage the hardware encrypts.
      ...(hasInstanceStorage(endpoint.instanceType) ? {} : { kmsKeyId: props.storage.key.keyArn }),
      productionVariants: [
        {
          variantName: VARIANT_NAME,
          instanceType: endpoint.instanceType,
          initialInstanceCount: Math.max(1, endpoint.minInstances),
          managedInstanceScaling: { status: 'ENABLED', minInstanceCount: endpoint.minInstances, maxInstanceCount: endpoint.maxInstances },
          routingConfig: { routingStrategy: 'LEAST_OUTSTANDING_REQUESTS' },
        },
      ],
    });
    this.endpointConfig.node.addDependency(this.role);

    this.endpoint = new sagemaker.CfnEndpoint(this, 'Endpoint', {
      endpointName: this.endpointName,
      endpointConfigName: this.endpointConfig.attrEndpointConfigName,
    });
    this.endpointArn = this.endpoint.attrEndpointArn;

    this.inferenceComponent = new sagemaker.CfnInferenceComponent(this, 'InferenceComponent', {
      inferenceComponentName: this.inferenceComponentName,
      endpointName: this.endpoint.attrEndpointName,
      variantName: VARIANT_NAME,
      specification: {
        modelName: this.model.attrModelName,
        startupParameters: {
          containerStartupHealthCheckTimeoutInSeconds: props.serving.startupHealthCheckTimeoutSeconds,
          modelDataDownloadTimeoutInSeconds: ServingContainer.MODEL_DATA_DOWNLOAD_TIMEOUT_SECONDS,
        },
        computeResourceRequirements: {
          numberOfAcceleratorDevicesRequired: 1,
          // Checked against known instance types when the configuration is read (lib/shared-endpoint-sizing.ts).
          minMemoryRequiredInMb: reservedHostMb(props.modelType, endpoint.loraCache.hostMb),
        },
      },
      runtimeConfig: { copyCount: Math.max(1, endpoint.minInstances) },
    });
    this.inferenceComponentArn = this.inferenceComponent.attrInferenceComponentArn;

    const note = sizingNote(endpoint.instanceType);
    if (note !== undefined) Annotations.of(this).addInfo(note);

    this.scalableTarget = this.scaleOnLoad(endpoint.minInstances, endpoint.maxInstances);
    if (endpoint.minInstances === 0) this.scaleOutFromZero();
  }

  /** The shared endpoint's (and its inference component's) fixed name: `<namePrefix>-shared-<modelType>`. */
  public static nameFor(namePrefix: string, modelType: ModelType): string {
    return `${namePrefix}-shared-${modelType}`;
  }

  /** The server's environment in shared mode (containers/inference/README.md lists each variable). */
  private environment(props: SharedEndpointProps): Record<string, string> {
    const { storage, registry, serving, endpoint } = props;
    const inputs = ServingContainer.modelInputs(props.modelType, props.baseModel, serving.loraScale, serving.huggingFaceTokenSecret);
    return {
      ...inputs.environment,
      ...(isS3BaseModel(props.baseModel) ? { BASE_MODEL_PATH: MODEL_DATA_DIR } : {}),
      SERVING_MODE: 'shared',
      SERVED_BASE_MODEL: props.baseModel,
      LORA_REGISTRY_TABLE: registry.table.tableName,
      LORA_BUCKET: storage.artifactsBucket.bucketName,
      LORA_PREFIX: SharedEndpoint.LORAS_PREFIX,
      LORA_CACHE_GPU_BYTES: String(endpoint.loraCache.gpuMb * MB),
      LORA_CACHE_HOST_BYTES: String(endpoint.loraCache.hostMb * MB),
      LORA_CACHE_DISK_BYTES: String(endpoint.loraCache.diskMb * MB),
      LORA_CACHE_DIR: '/tmp/lora-cache',
      AWS_DEFAULT_REGION: Stack.of(this).region,
      METRICS_NAMESPACE: this.metricsNamespace,
    };
  }

  /**
   * Copies between the bounds, by target tracking on concurrent requests per copy (high
   * resolution: 10-second data, so scale-out starts within about a minute). Concurrency rather
   * than invocations per minute: a generation takes seconds, so how many requests wait on a copy
   * says whether it is saturated, whatever the image size or step count of the requests.
   */
  private scaleOnLoad(minCapacity: number, maxCapacity: number): appscaling.CfnScalableTarget {
    // No RoleARN: Application Auto Scaling then uses its SageMaker service-linked role.
    const target = new appscaling.CfnScalableTarget(this, 'ScalableTarget', {
      serviceNamespace: 'sagemaker',
      resourceId: `inference-component/${this.inferenceComponentName}`,
      scalableDimension: 'sagemaker:inference-component:DesiredCopyCount',
      minCapacity,
      maxCapacity,
    });
    target.node.addDependency(this.inferenceComponent);
    new appscaling.CfnScalingPolicy(this, 'ScaleOnConcurrency', {
      policyName: `${this.inferenceComponentName}-concurrency`,
      policyType: 'TargetTrackingScaling',
      scalingTargetId: target.ref,
      targetTrackingScalingPolicyConfiguration: {
        predefinedMetricSpecification: { predefinedMetricType: 'SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution' },
        targetValue: TARGET_CONCURRENT_REQUESTS_PER_COPY,
        scaleInCooldown: 300,
        scaleOutCooldown: 60,
      },
    });
    return target;
  }

  /**
   * With no copy, a request fails at once and SageMaker counts it in NoCapacityInvocationFailures;
   * this alarm then runs a step policy adding one copy, for which managed instance scaling starts an
   * instance. The alarm fires on the first failure of a minute (≥ 1; AWS's CLI example uses > 1,
   * which one caller retrying once a minute would never trip).
   */
  private scaleOutFromZero(): void {
    const step = new appscaling.CfnScalingPolicy(this, 'ScaleOutFromZero', {
      policyName: `${this.inferenceComponentName}-from-zero`,
      policyType: 'StepScaling',
      scalingTargetId: this.scalableTarget.ref,
      stepScalingPolicyConfiguration: {
        adjustmentType: 'ChangeInCapacity',
        metricAggregationType: 'Maximum',
        cooldown: 60,
        stepAdjustments: [{ metricIntervalLowerBound: 0, scalingAdjustment: 1 }],
      },
    });
    new cloudwatch.CfnAlarm(this, 'NoCapacityAlarm', {
      alarmDescription: `A request reached ${this.inferenceComponentName} while it had no copy: add one (scale out from zero)`,
      ...NO_CAPACITY_METRIC,
      dimensions: [{ name: 'InferenceComponentName', value: this.inferenceComponentName }],
      statistic: 'Sum',
      period: 60,
      evaluationPeriods: 1,
      datapointsToAlarm: 1,
      threshold: 1,
      comparisonOperator: 'GreaterThanOrEqualToThreshold',
      // No failures, no data point: that is the healthy state, not an unknown one.
      treatMissingData: 'notBreaching',
      alarmActions: [step.ref],
    });
  }
}

/** An S3 base model is the model's own uncompressed data (see {@link SharedEndpoint}); a Hub id needs none. */
function baseModelData(baseModel: string): Pick<sagemaker.CfnModel.ContainerDefinitionProperty, 'modelDataSource'> {
  if (!isS3BaseModel(baseModel)) return {};
  // Like the dedicated mount: a folder object by object under its prefix, a file under its own name.
  const s3DataType = baseModel.endsWith('/') ? 'S3Prefix' : 'S3Object';
  return { modelDataSource: { s3DataSource: { s3Uri: baseModel, s3DataType, compressionType: 'None' } } };
}
