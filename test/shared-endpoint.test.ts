import { Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import type * as iam from 'aws-cdk-lib/aws-iam';
import { AwsSolutionsChecks } from 'cdk-nag';
import { parseConfig } from '../lib/config';
import { LoraRegistry } from '../lib/lora-registry';
import { PipelineStorage } from '../lib/pipeline-storage';
import { ServingContainer } from '../lib/serving-container';
import { SharedEndpoint } from '../lib/shared-endpoint';
import { createTestApp, synthPipeline } from './support/app';
import { resolveIntrinsics } from './support/asl';
import { actionsOf, allows, type PolicyStatement, roleStatements } from './support/iam';

/** The shared endpoint alone, with the storage, image and registry it needs, configured as `cdk.json` would. */
function build(values: Record<string, unknown> = {}) {
  const config = parseConfig(values);
  const app = createTestApp();
  const stack = new Stack(app, 'SharedStack', { env: { account: '123456789012', region: 'us-east-1' } });
  const storage = new PipelineStorage(stack, 'Storage');
  const serving = new ServingContainer(stack, 'Serving', { storage, modelType: config.modelType, baseModel: config.baseModel });
  const registry = new LoraRegistry(stack, 'Registry', { key: storage.key });
  const shared = new SharedEndpoint(stack, 'Shared', {
    storage,
    serving,
    registry,
    namePrefix: config.namePrefix,
    modelType: config.modelType,
    baseModel: config.baseModel,
    endpoint: config.endpoint,
  });
  const template = Template.fromStack(stack);
  return { app, stack, template, shared, serving, storage };
}

/** The template's resources, for resolving intrinsics to plain ARNs. */
const templateResources = (built: ReturnType<typeof build>) => built.template.toJSON().Resources as never;

/** A role's statements with their resources as plain ARNs. */
function plainStatements(built: ReturnType<typeof build>, role: iam.IRole): PolicyStatement[] {
  const { statements } = roleStatements(built.stack, built.template, role);
  return statements.map((s) => ({ ...s, Resource: resolveIntrinsics(s.Resource, templateResources(built)) }));
}

/** The one resource of a type, its properties resolved. */
function only(built: ReturnType<typeof build>, type: string): Record<string, unknown> {
  const resources = Object.values(built.template.findResources(type)) as Array<{ Properties: Record<string, unknown> }>;
  expect(resources).toHaveLength(1);
  return built.stack.resolve(resources[0].Properties) as Record<string, unknown>;
}

const ROLE = { 'Fn::GetAtt': [expect.stringMatching(/^SharedExecutionRole/), 'Arn'] };
const KEY = { 'Fn::GetAtt': [expect.stringMatching(/^StorageDataKey/), 'Arn'] };
const ARTIFACTS_BUCKET = { 'Fn::GetAtt': [expect.stringMatching(/^StorageArtifactsBucket/), 'Arn'] };

describe('SharedEndpoint model', () => {
  test('runs the inference image in shared mode with the registry, bucket, prefix and cache sizes', () => {
    const built = build();
    const model = only(built, 'AWS::SageMaker::Model');
    expect(model).toEqual({
      ExecutionRoleArn: ROLE,
      EnableNetworkIsolation: false,
      PrimaryContainer: { Image: { 'Fn::Sub': expect.stringContaining('container-assets') }, Environment: expect.any(Object) },
    });
    expect((model.PrimaryContainer as { Environment: unknown }).Environment).toEqual({
      MODEL_TYPE: 'sd15',
      LORA_SCALE: '1',
      BASE_MODEL_ID: 'stable-diffusion-v1-5/stable-diffusion-v1-5',
      SERVING_MODE: 'shared',
      SERVED_BASE_MODEL: 'stable-diffusion-v1-5/stable-diffusion-v1-5',
      LORA_REGISTRY_TABLE: { Ref: expect.stringMatching(/^RegistryTable/) },
      LORA_BUCKET: { Ref: expect.stringMatching(/^StorageArtifactsBucket/) },
      LORA_PREFIX: 'loras/',
      LORA_CACHE_GPU_BYTES: String(2048 * 1024 * 1024),
      LORA_CACHE_HOST_BYTES: String(4096 * 1024 * 1024),
      LORA_CACHE_DISK_BYTES: String(20480 * 1024 * 1024),
      LORA_CACHE_DIR: '/tmp/lora-cache',
      AWS_DEFAULT_REGION: 'us-east-1',
      METRICS_NAMESPACE: 'SharedStack/Serving',
    });
  });

  test.each([
    ['s3://models/sd/chilloutmix.safetensors', 'S3Object'],
    ['s3://models/sdxl/', 'S3Prefix'],
  ])('an S3 base model %s is the model data (%s, uncompressed), which the server reads at /opt/ml/model', (baseModel, type) => {
    const model = only(build({ baseModel, modelType: 'sdxl' }), 'AWS::SageMaker::Model');
    const container = model.PrimaryContainer as { ModelDataSource: unknown; Environment: Record<string, unknown> };
    expect(container.ModelDataSource).toEqual({ S3DataSource: { S3Uri: baseModel, S3DataType: type, CompressionType: 'None' } });
    expect(container.Environment).toMatchObject({ BASE_MODEL_PATH: '/opt/ml/model', SERVED_BASE_MODEL: baseModel });
    expect(container.Environment.BASE_MODEL_ID).toBeUndefined();
  });

  test('cache sizes follow the configuration', () => {
    const built = build({ 'endpoint.loraCacheGpuMb': 1024, 'endpoint.loraCacheHostMb': 1500, 'endpoint.loraCacheDiskMb': 2000 });
    expect((only(built, 'AWS::SageMaker::Model').PrimaryContainer as { Environment: unknown }).Environment).toMatchObject({
      LORA_CACHE_GPU_BYTES: String(1024 * 1024 * 1024),
      LORA_CACHE_HOST_BYTES: String(1500 * 1024 * 1024),
      LORA_CACHE_DISK_BYTES: String(2000 * 1024 * 1024),
    });
    // The host cache is reserved beside the pristine weight copies and the server process.
    const component = only(built, 'AWS::SageMaker::InferenceComponent') as { Specification: { ComputeResourceRequirements: unknown } };
    expect(component.Specification.ComputeResourceRequirements).toEqual({ NumberOfAcceleratorDevicesRequired: 1, MinMemoryRequiredInMb: 1500 + 1024 + 2048 });
  });

  test("SDXL's larger pristine copies are reserved too", () => {
    const component = only(build({ modelType: 'sdxl' }), 'AWS::SageMaker::InferenceComponent') as { Specification: { ComputeResourceRequirements: unknown } };
    expect(component.Specification.ComputeResourceRequirements).toEqual({ NumberOfAcceleratorDevicesRequired: 1, MinMemoryRequiredInMb: 4096 + 6144 + 2048 });
  });
});

describe('SharedEndpoint endpoint and inference component', () => {
  test('the endpoint config: managed instance scaling, least outstanding requests, no model in the variant', () => {
    expect(only(build({ 'endpoint.minInstances': 0, 'endpoint.maxInstances': 3 }), 'AWS::SageMaker::EndpointConfig')).toEqual({
      ExecutionRoleArn: ROLE,
      ProductionVariants: [
        {
          VariantName: 'AllTraffic',
          InstanceType: 'ml.g4dn.xlarge',
          InitialInstanceCount: 1,
          ManagedInstanceScaling: { Status: 'ENABLED', MinInstanceCount: 0, MaxInstanceCount: 3 },
          RoutingConfig: { RoutingStrategy: 'LEAST_OUTSTANDING_REQUESTS' },
        },
      ],
    });
  });

  test.each([
    ['ml.p3.2xlarge', true],
    ['ml.g5.xlarge', false],
  ])('%s: the pipeline key encrypts the volume only where SageMaker accepts one (%s)', (instanceType, withKey) => {
    const config = only(build({ 'endpoint.instanceType': instanceType }), 'AWS::SageMaker::EndpointConfig');
    expect(config.KmsKeyId).toEqual(withKey ? KEY : undefined);
  });

  test('the endpoint has the fixed shared name and uses the config', () => {
    expect(only(build({ namePrefix: 'acme', modelType: 'sdxl' }), 'AWS::SageMaker::Endpoint')).toEqual({
      EndpointName: 'acme-shared-sdxl',
      EndpointConfigName: { 'Fn::GetAtt': [expect.stringMatching(/^SharedConfig/), 'EndpointConfigName'] },
    });
  });

  test.each([
    [{}, 1],
    [{ 'endpoint.minInstances': 0 }, 1],
    [{ 'endpoint.minInstances': 3, 'endpoint.maxInstances': 5 }, 3],
  ])('the inference component with %j: the model on one GPU, its start-up limits, %i copies', (values, copies) => {
    expect(only(build(values), 'AWS::SageMaker::InferenceComponent')).toEqual({
      InferenceComponentName: 'lora-shared-sd15',
      EndpointName: { 'Fn::GetAtt': [expect.stringMatching(/^SharedEndpoint/), 'EndpointName'] },
      VariantName: 'AllTraffic',
      Specification: {
        ModelName: { 'Fn::GetAtt': [expect.stringMatching(/^SharedModel/), 'ModelName'] },
        StartupParameters: {
          ContainerStartupHealthCheckTimeoutInSeconds: 1200,
          ModelDataDownloadTimeoutInSeconds: ServingContainer.MODEL_DATA_DOWNLOAD_TIMEOUT_SECONDS,
        },
        ComputeResourceRequirements: { NumberOfAcceleratorDevicesRequired: 1, MinMemoryRequiredInMb: 4096 + 1024 + 2048 },
      },
      RuntimeConfig: { CopyCount: copies },
    });
  });

  test('names and ARNs for the workflow', () => {
    const { shared, stack } = build();
    expect([shared.endpointName, shared.inferenceComponentName]).toEqual(['lora-shared-sd15', 'lora-shared-sd15']);
    expect(SharedEndpoint.nameFor('lora', 'sdxl')).toBe('lora-shared-sdxl');
    expect(stack.resolve([shared.endpointArn, shared.inferenceComponentArn])).toEqual([
      { 'Fn::GetAtt': [expect.stringMatching(/^SharedEndpoint/), 'EndpointArn'] },
      { 'Fn::GetAtt': [expect.stringMatching(/^SharedInferenceComponent/), 'InferenceComponentArn'] },
    ]);
  });
});

describe('SharedEndpoint autoscaling', () => {
  const policies = (built: ReturnType<typeof build>) =>
    Object.values(built.template.findResources('AWS::ApplicationAutoScaling::ScalingPolicy')).map(
      (r) => built.stack.resolve((r as { Properties: Record<string, unknown> }).Properties) as Record<string, unknown>,
    );

  test('copies of the inference component scale between minInstances and maxInstances, after it exists', () => {
    const built = build({ 'endpoint.minInstances': 2, 'endpoint.maxInstances': 6 });
    expect(only(built, 'AWS::ApplicationAutoScaling::ScalableTarget')).toEqual({
      ServiceNamespace: 'sagemaker',
      ResourceId: 'inference-component/lora-shared-sd15',
      ScalableDimension: 'sagemaker:inference-component:DesiredCopyCount',
      MinCapacity: 2,
      MaxCapacity: 6,
    });
    const [target] = Object.values(built.template.findResources('AWS::ApplicationAutoScaling::ScalableTarget')) as Array<{ DependsOn: string[] }>;
    expect(target.DependsOn).toEqual([expect.stringMatching(/^SharedInferenceComponent/)]);
  });

  test('target tracking keeps two concurrent requests per copy', () => {
    expect(policies(build())).toEqual([
      {
        PolicyName: 'lora-shared-sd15-concurrency',
        PolicyType: 'TargetTrackingScaling',
        ScalingTargetId: { Ref: expect.stringMatching(/^SharedScalableTarget/) },
        TargetTrackingScalingPolicyConfiguration: {
          PredefinedMetricSpecification: { PredefinedMetricType: 'SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution' },
          TargetValue: 2,
          ScaleInCooldown: 300,
          ScaleOutCooldown: 60,
        },
      },
    ]);
  });

  test('with minInstances 0, a NoCapacityInvocationFailures alarm runs a step policy adding one copy', () => {
    const built = build({ 'endpoint.minInstances': 0 });
    const step = policies(built).find((p) => p.PolicyType === 'StepScaling');
    expect(step).toEqual({
      PolicyName: 'lora-shared-sd15-from-zero',
      PolicyType: 'StepScaling',
      ScalingTargetId: { Ref: expect.stringMatching(/^SharedScalableTarget/) },
      StepScalingPolicyConfiguration: {
        AdjustmentType: 'ChangeInCapacity',
        MetricAggregationType: 'Maximum',
        Cooldown: 60,
        StepAdjustments: [{ MetricIntervalLowerBound: 0, ScalingAdjustment: 1 }],
      },
    });
    expect(only(built, 'AWS::CloudWatch::Alarm')).toEqual({
      AlarmDescription: expect.stringContaining('scale out from zero'),
      Namespace: 'AWS/SageMaker',
      MetricName: 'NoCapacityInvocationFailures',
      Dimensions: [{ Name: 'InferenceComponentName', Value: 'lora-shared-sd15' }],
      Statistic: 'Sum',
      Period: 60,
      EvaluationPeriods: 1,
      DatapointsToAlarm: 1,
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      TreatMissingData: 'notBreaching',
      AlarmActions: [{ Ref: expect.stringMatching(/^SharedScaleOutFromZero/) }],
    });
  });

  test('with instances always on, there is no scale-from-zero policy or alarm', () => {
    const built = build({ 'endpoint.minInstances': 1 });
    expect(policies(built).map((p) => p.PolicyType)).toEqual(['TargetTrackingScaling']);
    built.template.resourceCountIs('AWS::CloudWatch::Alarm', 0);
  });
});

describe('SharedEndpoint execution role', () => {
  function statementsOf(values: Record<string, unknown> = {}) {
    const built = build(values);
    const { statements } = roleStatements(built.stack, built.template, built.shared.role);
    return { built, statements: built.stack.resolve(statements) as PolicyStatement[] };
  }
  const resourcesOf = (statements: PolicyStatement[], action: string) => statements.filter((s) => actionsOf(s).includes(action)).map((s) => s.Resource);

  test('reads the LoRA copies under loras/ only: never the training output under models/, checkpoints/ or the datasets, and writes nothing to S3', () => {
    const { built, statements } = statementsOf();
    const s3 = statements.filter((s) => actionsOf(s).some((a) => a.startsWith('s3:')));
    expect(s3.map((s) => [s.Action, s.Resource, s.Condition])).toEqual([
      ['s3:ListBucket', ARTIFACTS_BUCKET, { StringLike: { 's3:prefix': ['loras/*'] } }],
      ['s3:GetObject', { 'Fn::Join': ['', [ARTIFACTS_BUCKET, '/loras/*']] }, undefined],
    ]);
    expect(JSON.stringify(s3)).not.toMatch(/checkpoints|DatasetsBucket/);
    const plain = plainStatements(built, built.shared.role);
    const bucket = String(resolveIntrinsics(built.stack.resolve(built.storage.artifactsBucket.bucketName), templateResources(built)));
    const object = (key: string) => `arn:aws:s3:::${bucket}/${key}`;
    expect(allows(plain, 's3:GetObject', object('loras/pokemon/3.safetensors'))).toBe(true);
    // Negative controls: a training job's output, and writing a copy, are out of its reach.
    expect(allows(plain, 's3:GetObject', object('models/run-1/output/model.tar.gz'))).toBe(false);
    expect(allows(plain, 's3:GetObject', object('checkpoints/run-1/state'))).toBe(false);
    expect(allows(plain, 's3:PutObject', object('loras/pokemon/3.safetensors'))).toBe(false);
    // Control: the dedicated endpoints' role reads the training output (each run's model.tar.gz), not the copies.
    const dedicated = plainStatements(built, built.serving.role);
    expect(allows(dedicated, 's3:GetObject', object('models/run-1/output/model.tar.gz'))).toBe(true);
    expect(allows(dedicated, 's3:GetObject', object('loras/pokemon/3.safetensors'))).toBe(false);
  });

  test('reads an S3 base model at exactly its key', () => {
    const { statements } = statementsOf({ baseModel: 's3://base-models/sd/v15.safetensors' });
    expect(resourcesOf(statements, 's3:GetObject').flat()).toEqual([
      'arn:aws:s3:::base-models/sd/v15.safetensors',
      { 'Fn::Join': ['', [ARTIFACTS_BUCKET, '/loras/*']] },
    ]);
  });

  test('only reads the registry: GetItem, BatchGetItem, Query; decrypts through S3 and DynamoDB only', () => {
    const { statements } = statementsOf();
    const dynamodb = statements.flatMap(actionsOf).filter((a) => a.startsWith('dynamodb:'));
    expect(dynamodb.sort()).toEqual(['dynamodb:BatchGetItem', 'dynamodb:GetItem', 'dynamodb:Query']);
    expect(resourcesOf(statements, 'dynamodb:GetItem')).toEqual([{ 'Fn::GetAtt': [expect.stringMatching(/^RegistryTable/), 'Arn'] }]);
    const decrypt = statements.filter((s) => actionsOf(s).includes('kms:Decrypt'));
    expect(decrypt.map((s) => [s.Resource, s.Condition])).toEqual([
      [KEY, { StringEquals: { 'kms:ViaService': 's3.us-east-1.amazonaws.com' } }],
      [KEY, { StringEquals: { 'kms:ViaService': 'dynamodb.us-east-1.amazonaws.com' } }],
    ]);
    expect(statements.flatMap(actionsOf).filter((a) => /kms:(Encrypt|GenerateDataKey)|s3:(Put|Delete)/.test(a))).toEqual([]);
  });

  test("logs only to its endpoint's and its inference component's log groups, not every endpoint's", () => {
    const { statements } = statementsOf();
    const group = (name: string) => `arn:aws:logs:us-east-1:123456789012:log-group:${name}`;
    const names = ['/aws/sagemaker/Endpoints/lora-shared-sd15', '/aws/sagemaker/InferenceComponents/lora-shared-sd15'];
    expect(resourcesOf(statements, 'logs:CreateLogGroup')).toEqual([names.map(group)]);
    expect(resourcesOf(statements, 'logs:PutLogEvents')).toEqual([names.map((n) => `${group(n)}:log-stream:*`)]);
    expect(statements.find((s) => s.Sid === 'PutItsMetrics')?.Condition).toEqual({
      StringEquals: { 'cloudwatch:namespace': ['/aws/sagemaker/Endpoints', '/aws/sagemaker/InferenceComponents'] },
    });
    // Negative control: the dedicated role keeps every endpoint's group, whose names runs choose.
    const { built } = statementsOf();
    const dedicated = built.stack.resolve(roleStatements(built.stack, built.template, built.serving.role).statements) as PolicyStatement[];
    expect(resourcesOf(dedicated, 'logs:CreateLogGroup')).toEqual([group('/aws/sagemaker/Endpoints/*')]);
  });

  test('is its own role: the dedicated endpoints cannot read the registry (negative control)', () => {
    const { built } = statementsOf();
    expect(built.stack.resolve(built.shared.role.roleArn)).not.toEqual(built.stack.resolve(built.serving.role.roleArn));
    const { statements } = roleStatements(built.stack, built.template, built.serving.role);
    expect(statements.flatMap(actionsOf).filter((a) => a.startsWith('dynamodb:'))).toEqual([]);
  });
});

describe('SharedEndpoint and cdk-nag', () => {
  test.each([{}, { 'endpoint.minInstances': 0 }, { baseModel: 's3://models/sdxl/', modelType: 'sdxl' }])('finds nothing unacknowledged with %j', (values) => {
    const { app, stack } = build(values);
    const report = new AwsSolutionsChecks(app).validateScope(stack);
    expect(report.violations.filter((v) => v.violatingResources.some((r) => r.constructPath?.startsWith('SharedStack/Shared/')))).toEqual([]);
  });
});

describe('the pipeline stack', () => {
  test('shared mode (the default): the registry, the shared endpoint, and their outputs', () => {
    const { stack, template } = synthPipeline();
    template.resourceCountIs('AWS::DynamoDB::Table', 1);
    template.resourceCountIs('AWS::SageMaker::InferenceComponent', 1);
    expect(stack.sharedEndpoint?.endpointName).toBe('lora-shared-sd15');
    const outputs = stack.resolve(template.toJSON().Outputs) as Record<string, { Value: unknown }>;
    expect(outputs.RegistryTableName.Value).toEqual({ Ref: expect.stringMatching(/^RegistryTable/) });
    expect([outputs.SharedEndpointName.Value, outputs.SharedInferenceComponentName.Value]).toEqual(['lora-shared-sd15', 'lora-shared-sd15']);
  });

  test('dedicated mode keeps the registry (its history) and has no shared endpoint', () => {
    const { stack, template } = synthPipeline({ 'endpoint.mode': 'dedicated' });
    template.resourceCountIs('AWS::DynamoDB::Table', 1);
    for (const type of ['AWS::SageMaker::Model', 'AWS::SageMaker::Endpoint', 'AWS::SageMaker::InferenceComponent', 'AWS::ApplicationAutoScaling::ScalableTarget']) {
      template.resourceCountIs(type, 0);
    }
    expect(stack.sharedEndpoint).toBeUndefined();
    expect(Object.keys(template.toJSON().Outputs)).not.toContain('SharedEndpointName');
  });
});
