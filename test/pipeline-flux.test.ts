import type * as iam from 'aws-cdk-lib/aws-iam';
import type { PrepareSettings } from '../lambda/shared/contract';
import { synthPipeline } from './support/app';
import { LORA_ERRORS, STATES } from '../lambda/shared/contract';
import { extractDefinition, resolveIntrinsics } from './support/asl';
import { actionsOf, allows, policyStatements, roleStatements } from './support/iam';

/** A FLUX.1 deployment: the stack's model settings, its Hugging Face token grants and its shared endpoint. */

const SECRET = 'hf/token';
const SECRET_ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:hf/token-AbC123';
const DEV = { modelType: 'flux1', baseModel: 'black-forest-labs/FLUX.1-dev', huggingFaceTokenSecret: SECRET };

function deployed(values: Record<string, unknown>) {
  const built = synthPipeline({ ...values });
  const resources = built.template.toJSON().Resources as Record<string, { Type: string; Properties: any }>;
  const plain = (value: unknown) => resolveIntrinsics(value, resources as never);
  const resourceOf = (construct: { node: { defaultChild?: unknown } }) => resources[built.stack.getLogicalId(construct.node.defaultChild as never)];
  const settings = JSON.parse(plain(resourceOf(built.stack.workflow.prepareFunction.function).Properties.Environment.Variables.SETTINGS) as string) as PrepareSettings;
  const sharedModel = () => Object.values(resources).find((r) => r.Type === 'AWS::SageMaker::Model')!.Properties;
  const statementsOf = (role: iam.IRole) => roleStatements(built.stack, built.template, role).statements.map((s) => ({ ...s, Resource: plain(s.Resource) }));
  return { ...built, resources, plain, settings, sharedModel, statementsOf };
}

/** Every role of the template that may read a secret value, by logical id. */
function secretReaders(built: ReturnType<typeof deployed>): string[] {
  const roles = Object.entries(built.resources).filter(([, r]) => r.Type === 'AWS::IAM::Role').map(([id]) => id);
  return roles.filter((roleId) =>
    policyStatements(built.template, roleId).some((s) => actionsOf(s).some((a) => /^secretsmanager:(GetSecretValue|\*)$|^\*$/i.test(a))),
  );
}

describe('a FLUX.1-dev deployment with a Hugging Face token secret', () => {
  const built = deployed(DEV);
  const { stack } = built;
  const roleId = (role: iam.IRole) => stack.getLogicalId(role.node.defaultChild as never);

  test('only the training role and the two serving roles may read the secret, and only GetSecretValue on it', () => {
    expect(secretReaders(built).sort()).toEqual([roleId(stack.training.role), roleId(stack.serving.role), roleId(stack.sharedEndpoint!.role)].sort());
    for (const role of [stack.training.role, stack.serving.role, stack.sharedEndpoint!.role]) {
      const statements = built.statementsOf(role).filter((s) => actionsOf(s).some((a) => a.startsWith('secretsmanager:')));
      expect(statements.map((s) => [actionsOf(s), s.Resource])).toEqual([[['secretsmanager:GetSecretValue'], 'arn:aws:secretsmanager:us-east-1:123456789012:secret:hf/token-??????']]);
      const plain = built.statementsOf(role);
      expect(allows(plain, 'secretsmanager:GetSecretValue', 'arn:aws:secretsmanager:us-east-1:123456789012:secret:hf/token-Xy9AbC')).toBe(true);
      // Negative controls: another secret, one whose name only starts alike, another action.
      expect(allows(plain, 'secretsmanager:GetSecretValue', 'arn:aws:secretsmanager:us-east-1:123456789012:secret:hf/token-other-Xy9AbC')).toBe(false);
      expect(allows(plain, 'secretsmanager:GetSecretValue', 'arn:aws:secretsmanager:us-east-1:123456789012:secret:db/password-Xy9AbC')).toBe(false);
      expect(allows(plain, 'secretsmanager:PutSecretValue', 'arn:aws:secretsmanager:us-east-1:123456789012:secret:hf/token-Xy9AbC')).toBe(false);
    }
  });

  test('Prepare gets the secret id, and the shared model names it (never the token) beside its FLUX.1 settings', () => {
    expect(built.settings).toMatchObject({ modelType: 'flux1', baseModel: DEV.baseModel, huggingFaceTokenSecretId: SECRET });
    expect(built.settings.training).toMatchObject({ instanceType: 'ml.g5.2xlarge', volumeSizeGb: 150 });
    expect(built.settings.endpoint).toMatchObject({ instanceType: 'ml.g6e.2xlarge', shared: { endpointName: 'lora-shared-flux1' } });
    expect(built.sharedModel().PrimaryContainer.Environment).toMatchObject({
      MODEL_TYPE: 'flux1',
      BASE_MODEL_ID: DEV.baseModel,
      SERVED_BASE_MODEL: DEV.baseModel,
      HF_TOKEN_SECRET_ID: SECRET,
    });
  });

  test("the shared endpoint runs on the L40S with 64 GiB and reserves FLUX.1's pristine copies and its larger server", () => {
    const component = Object.values(built.resources).find((r) => r.Type === 'AWS::SageMaker::InferenceComponent')!.Properties;
    expect(component.Specification.ComputeResourceRequirements).toEqual({ NumberOfAcceleratorDevicesRequired: 1, MinMemoryRequiredInMb: 4096 + 22600 + 4096 });
    const config = Object.values(built.resources).find((r) => r.Type === 'AWS::SageMaker::EndpointConfig')!.Properties;
    expect(config.ProductionVariants[0].InstanceType).toBe('ml.g6e.2xlarge');
  });

  test('its endpoints may take 30 minutes to start (a Hub FLUX.1 downloads ~34 GB at start): the shared one and, through Prepare, a dedicated one', () => {
    const component = Object.values(built.resources).find((r) => r.Type === 'AWS::SageMaker::InferenceComponent')!.Properties;
    expect(component.Specification.StartupParameters.ContainerStartupHealthCheckTimeoutInSeconds).toBe(1800);
    expect(built.settings.endpoint.startupHealthCheckTimeoutSeconds).toBe(1800);
    expect(deployed({ ...DEV, 'endpoint.mode': 'dedicated' }).settings.endpoint.startupHealthCheckTimeoutSeconds).toBe(1800);
  });

  test('a LoRA is tried on the shared endpoint for as long as it may warm from zero: 30 minutes, where SD waits 20', () => {
    const warming = (b: ReturnType<typeof deployed>) => {
      const definition = extractDefinition(b.template, b.stack.getLogicalId(b.stack.workflow.stateMachine.node.defaultChild as never));
      const retry = (definition.States[STATES.tryLora] as any).Retry.find((r: { ErrorEquals: string[] }) => r.ErrorEquals.includes(LORA_ERRORS.sharedEndpointWarming));
      return retry.IntervalSeconds * retry.MaxAttempts;
    };
    expect(warming(built)).toBe(1800);
    expect(warming(deployed({ 'endpoint.mode': 'shared' }))).toBe(1200);
  });

  test('the stack outputs keep their names', () => {
    const outputs = Object.keys(built.template.toJSON().Outputs as object);
    expect(outputs).toEqual(expect.arrayContaining(['ModelType', 'BaseModel', 'SharedEndpointName', 'SharedInferenceComponentName', 'DatasetsBucketName']));
    expect((built.template.toJSON().Outputs as Record<string, { Value: unknown }>).ModelType.Value).toBe('flux1');
  });
});

describe('the secret, elsewhere', () => {
  test('given by complete ARN, the grant names exactly that ARN', () => {
    const built = deployed({ ...DEV, huggingFaceTokenSecret: SECRET_ARN, 'endpoint.mode': 'dedicated' });
    const plain = built.statementsOf(built.stack.training.role);
    expect(allows(plain, 'secretsmanager:GetSecretValue', SECRET_ARN)).toBe(true);
    expect(allows(plain, 'secretsmanager:GetSecretValue', `${SECRET_ARN.slice(0, -6)}Zz9999`)).toBe(false);
    expect(built.settings.huggingFaceTokenSecretId).toBe(SECRET_ARN);
    // An ARN names its region, which the containers read: the deployment's is not added.
    expect(built.stack.serving.defaults.environment).toEqual({ MODEL_TYPE: 'flux1', LORA_SCALE: '1', BASE_MODEL_ID: DEV.baseModel, HF_TOKEN_SECRET_ID: SECRET_ARN });
  });

  test('given by name, a model is also told the region to find it in (boto3 reads only AWS_DEFAULT_REGION)', () => {
    const built = deployed({ ...DEV, 'endpoint.mode': 'dedicated' });
    expect(built.plain(built.stack.resolve(built.stack.serving.defaults.environment))).toMatchObject({ HF_TOKEN_SECRET_ID: SECRET, AWS_DEFAULT_REGION: 'us-east-1' });
  });

  test('an S3 base model: the roles may still read the secret, but the shared model is not told of it (no network to use it)', () => {
    const built = deployed({ modelType: 'flux1', baseModel: 's3://models/flux1-dev/', huggingFaceTokenSecret: SECRET });
    expect(built.sharedModel().PrimaryContainer.Environment).not.toHaveProperty('HF_TOKEN_SECRET_ID');
    expect(built.sharedModel().PrimaryContainer.Environment).toMatchObject({ MODEL_TYPE: 'flux1', BASE_MODEL_PATH: '/opt/ml/model' });
  });

  test("an S3 FLUX.1 folder: Prepare may list that folder (to check its four files), nothing else of the bucket; a Hub model or an SDXL folder, not at all", () => {
    const listing = (values: Record<string, unknown>) => {
      const built = deployed(values);
      return built.statementsOf(built.stack.workflow.prepareFunction.role).filter((s) => s.Sid === 'ListTheFluxBaseModelFolder');
    };
    expect(listing({ modelType: 'flux1', baseModel: 's3://models/flux/dev/' }).map((s) => [actionsOf(s), s.Resource, s.Condition])).toEqual([
      [['s3:ListBucket'], 'arn:aws:s3:::models', { StringLike: { 's3:prefix': ['flux/dev/*'] } }],
    ]);
    expect(listing({ modelType: 'flux1' })).toEqual([]);
    expect(listing({ modelType: 'sdxl', baseModel: 's3://models/sdxl/' })).toEqual([]);
  });

  test('without a secret, no role may read any secret and nothing names one', () => {
    const built = deployed({ modelType: 'flux1' });
    expect(secretReaders(built)).toEqual([]);
    expect(built.settings).not.toHaveProperty('huggingFaceTokenSecretId');
    expect(JSON.stringify(built.template.toJSON())).not.toContain('HF_TOKEN_SECRET_ID');
  });
});

test('the default (SD 1.5) deployment is unchanged: no caption default is set, so the model type decides', () => {
  const built = deployed({});
  expect(built.settings.training).toEqual({ instanceType: 'ml.g4dn.xlarge', spot: true, maxRuntimeSeconds: 3600, maxWaitSeconds: 7200, volumeSizeGb: 50 });
  expect(deployed({ 'training.captionMissing': true }).settings.training.captionMissing).toBe(true);
});

test.each([{}, { modelType: 'sdxl' }, { 'endpoint.mode': 'shared' }])('SD endpoints keep their 20-minute start-up limit (%j)', (values) => {
  const built = deployed(values);
  expect(built.settings.endpoint.startupHealthCheckTimeoutSeconds).toBe(1200);
  const component = Object.values(built.resources).find((r) => r.Type === 'AWS::SageMaker::InferenceComponent');
  if (component) expect(component.Properties.Specification.StartupParameters.ContainerStartupHealthCheckTimeoutInSeconds).toBe(1200);
});
