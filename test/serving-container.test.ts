import * as fs from 'node:fs';
import * as path from 'node:path';
import { Stack } from 'aws-cdk-lib';
import { ServingContainer } from '../lib/serving-container';
import { dockerImageSource, synthPipeline } from './support/app';
import { actionsOf, type PolicyStatement, roleStatements } from './support/iam';

const ARTIFACTS_BUCKET = { 'Fn::GetAtt': [expect.stringMatching(/^StorageArtifactsBucket/), 'Arn'] };
const TRAINED_MODELS = { 'Fn::Join': ['', [ARTIFACTS_BUCKET, '/models/*']] };

/** The statements of the serving role's policy, with references resolved to logical ids. */
function servingStatements(configValues: Record<string, unknown> = {}) {
  const { stack, template } = synthPipeline(configValues);
  return { stack, template, ...roleStatements(stack, template, stack.serving.role) };
}

describe('ServingContainer image', () => {
  const { app, stack } = synthPipeline();
  const image = dockerImageSource(app, stack, stack.serving.image);
  const staged = image.directory;

  test('is built from containers/inference for linux/amd64', () => {
    expect(image.platform).toBe('linux/amd64');
    expect(fs.readFileSync(path.join(staged, 'Dockerfile'), 'utf8')).toBe(fs.readFileSync(path.join(ServingContainer.DIRECTORY, 'Dockerfile'), 'utf8'));
    expect(ServingContainer.DIRECTORY).toBe(path.resolve(__dirname, '..', 'containers', 'inference'));
  });

  test('its build context is what .dockerignore lets in: the server and its requirements, not the tests', () => {
    expect(fs.existsSync(path.join(staged, 'lora_server', 'app.py'))).toBe(true);
    expect(fs.existsSync(path.join(staged, 'requirements.txt'))).toBe(true);
    expect(fs.existsSync(path.join(staged, 'constraints.txt'))).toBe(true);
    for (const excluded of ['tests', 'README.md', 'requirements-test.txt']) {
      expect([excluded, fs.existsSync(path.join(staged, excluded))]).toEqual([excluded, false]);
    }
  });

  test('the stack exposes its URI for the workflow', () => {
    const [destination] = Object.values(image.destinations);
    expect(stack.resolve(stack.serving.imageUri)).toEqual({ 'Fn::Sub': expect.stringContaining(destination.imageTag) });
  });
});


describe('ServingContainer execution role', () => {
  test('only SageMaker assumes it', () => {
    const { template, roleId } = servingStatements();
    expect(template.toJSON().Resources[roleId].Properties.AssumeRolePolicyDocument.Statement).toEqual([
      expect.objectContaining({ Action: 'sts:AssumeRole', Principal: { Service: 'sagemaker.amazonaws.com' } }),
    ]);
  });

  test('no statement has a wildcard action', () => {
    const { statements } = servingStatements({ modelType: 'sdxl', baseModel: 's3://models/sdxl/' });
    expect(statements.flatMap(actionsOf).filter((a) => a.includes('*'))).toEqual([]);
  });

  test('reads trained models under models/ only, and writes nothing to S3', () => {
    const { stack, statements } = servingStatements();
    const s3 = stack.resolve(statements.filter((s) => actionsOf(s).some((a) => a.startsWith('s3:')))) as PolicyStatement[];
    expect(s3.map((s) => [s.Action, s.Resource, s.Condition])).toEqual([
      ['s3:ListBucket', ARTIFACTS_BUCKET, { StringLike: { 's3:prefix': ['models/*'] } }],
      ['s3:GetObject', TRAINED_MODELS, undefined],
    ]);
  });

  test.each([
    ['s3://models/sdxl/', 'models/sdxl/*'],
    // A file is mounted as one S3Object: exactly that key, not every key it prefixes.
    ['s3://base-models/sd/chilloutmix_NiPrunedFp32Fix.safetensors', 'base-models/sd/chilloutmix_NiPrunedFp32Fix.safetensors'],
  ])('reads an S3 base model %s at exactly its location', (baseModel, objects) => {
    const { stack, statements } = servingStatements({ baseModel });
    const reads = stack.resolve(statements.filter((s) => actionsOf(s).includes('s3:GetObject')).flatMap((s) => s.Resource));
    expect(reads).toEqual([
      { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, `:s3:::${objects}`]] },
      TRAINED_MODELS,
    ]);
  });

  test('a Hugging Face base model grants no further S3 access', () => {
    const { stack, statements } = servingStatements({ baseModel: 'stabilityai/stable-diffusion-xl-base-1.0', modelType: 'sdxl' });
    const reads = stack.resolve(statements.filter((s) => actionsOf(s).includes('s3:GetObject')).flatMap((s) => s.Resource));
    expect(reads).toEqual([TRAINED_MODELS]);
  });

  test('uses exactly the pipeline key, pulls exactly its image repository, logs to endpoint log groups', () => {
    const { stack, statements } = servingStatements();
    const resourcesOf = (action: string) => statements.filter((s) => actionsOf(s).includes(action)).map((s) => stack.resolve(s.Resource));
    expect(resourcesOf('kms:Decrypt')).toEqual([{ 'Fn::GetAtt': [expect.stringMatching(/^StorageDataKey/), 'Arn'] }]);
    // An endpoint only reads: it may decrypt, never encrypt or make data keys.
    expect(statements.flatMap(actionsOf).filter((a) => a.startsWith('kms:')).sort()).toEqual(['kms:CreateGrant', 'kms:Decrypt', 'kms:DescribeKey']);
    expect(resourcesOf('ecr:BatchGetImage')).toEqual([
      { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':ecr:', { Ref: 'AWS::Region' }, ':', { Ref: 'AWS::AccountId' }, ':repository/', { 'Fn::Sub': expect.stringContaining('container-assets') }]] },
    ]);
    expect(JSON.stringify(resourcesOf('logs:PutLogEvents'))).toContain('log-group:/aws/sagemaker/Endpoints/*:log-stream:*');
    expect(Stack.of(stack.serving).resolve(stack.serving.role.roleArn)).toEqual({ 'Fn::GetAtt': [expect.stringMatching(/^ServingExecutionRole/), 'Arn'] });
  });
});

describe('ServingContainer.modelInputs', () => {
  test('a Hugging Face base model is passed by id, nothing mounted', () => {
    expect(ServingContainer.modelInputs('sd15', 'stable-diffusion-v1-5/stable-diffusion-v1-5')).toEqual({
      environment: { MODEL_TYPE: 'sd15', LORA_SCALE: '1', BASE_MODEL_ID: 'stable-diffusion-v1-5/stable-diffusion-v1-5' },
      additionalModelDataSources: [],
    });
  });

  test.each([
    ['s3://models/sd/chilloutmix_NiPrunedFp32Fix.safetensors', 'S3Object'],
    ['s3://models/sdxl/', 'S3Prefix'],
  ])('an S3 base model %s is mounted as the base_model channel (%s)', (baseModel, type) => {
    expect(ServingContainer.modelInputs('sdxl', baseModel, 0.8)).toEqual({
      environment: { MODEL_TYPE: 'sdxl', LORA_SCALE: '0.8' },
      additionalModelDataSources: [{ ChannelName: 'base_model', S3DataSource: { S3Uri: baseModel, S3DataType: type, CompressionType: 'None' } }],
    });
  });

  test('the stack exposes the deploy-time defaults', () => {
    const { stack } = synthPipeline({ modelType: 'sdxl' });
    expect(stack.serving.defaults.environment).toEqual({ MODEL_TYPE: 'sdxl', LORA_SCALE: '1', BASE_MODEL_ID: 'stabilityai/stable-diffusion-xl-base-1.0' });
  });

  test.each([-0.1, 2.5, Number.NaN])('refuses a LoRA scale the server would refuse: %s', (scale) => {
    expect(() => ServingContainer.modelInputs('sd15', 'owner/model', scale)).toThrow('loraScale must be from 0 to 2');
  });

  test('the channel is where the server looks for the base model', () => {
    const settings = fs.readFileSync(path.join(ServingContainer.DIRECTORY, 'lora_server', 'settings.py'), 'utf8');
    expect(settings).toContain(`BASE_MODEL_CHANNEL = "${ServingContainer.BASE_MODEL_CHANNEL}"`);
    expect(settings).toContain('BASE_MODEL_PATH = f"/opt/ml/additional-model-data-sources/{BASE_MODEL_CHANNEL}"');
  });
});
