import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Stack } from 'aws-cdk-lib';
import { dockerImageSource, synthPipeline } from './support/app';
import { actionsOf, type PolicyStatement, roleStatements } from './support/iam';

function trainingRole(configValues: Record<string, unknown> = {}) {
  const synthesized = synthPipeline(configValues);
  return { ...synthesized, ...roleStatements(synthesized.stack, synthesized.template, synthesized.stack.training.role) };
}

/** Flattens intrinsic references so ARNs read like `<StorageArtifactsBucket….Arn>/checkpoints/*`. */
function flat(stack: Stack, value: unknown): string {
  const resolved = stack.resolve(value) as unknown;
  const walk = (v: unknown): string => {
    if (typeof v === 'string') return v;
    if (Array.isArray(v)) return v.map(walk).join('');
    const o = v as Record<string, unknown>;
    if ('Fn::Join' in o) return ((o['Fn::Join'] as [string, unknown[]])[1]).map(walk).join((o['Fn::Join'] as [string])[0]);
    if ('Fn::GetAtt' in o) return `<${(o['Fn::GetAtt'] as string[])[0].replace(/[0-9A-F]{8}$/, '')}.${(o['Fn::GetAtt'] as string[])[1]}>`;
    if ('Ref' in o) return `<${String(o.Ref).replace(/[0-9A-F]{8}$/, '')}>`;
    return JSON.stringify(o);
  };
  return walk(resolved);
}

/** Each (actions, resource, condition) the statements with a matching action grant, one line per resource, sorted. */
function grants(stack: Stack, statements: PolicyStatement[], actionPrefix: string): string[] {
  return statements
    .filter((s) => actionsOf(s).some((a) => a.startsWith(actionPrefix)))
    .flatMap((s) =>
      (Array.isArray(s.Resource) ? s.Resource : [s.Resource]).map(
        (resource) => `${[...actionsOf(s)].sort().join(',')} ${flat(stack, resource)}${s.Condition ? ` if ${JSON.stringify(s.Condition)}` : ''}`,
      ),
    )
    .sort();
}

describe('TrainingContainer', () => {
  test('the image is built from containers/training for linux/amd64', () => {
    const { app, stack } = synthPipeline();
    const training = dockerImageSource(app, stack, stack.training.image);
    expect(training.platform).toBe('linux/amd64');
    expect(fs.existsSync(path.join(training.directory, 'lora_trainer'))).toBe(true);
    expect(fs.readFileSync(path.join(training.directory, 'Dockerfile'), 'utf8')).toContain('kohya-ss/sd-scripts');
    // .dockerignore keeps the tests out of the build context.
    expect(fs.existsSync(path.join(training.directory, 'tests'))).toBe(false);
  });

  test('only SageMaker assumes the role', () => {
    const { template, roleId } = trainingRole();
    const role = template.findResources('AWS::IAM::Role')[roleId] as { Properties: { AssumeRolePolicyDocument: { Statement: { Principal: unknown }[] } } };
    expect(role.Properties.AssumeRolePolicyDocument.Statement.map((s) => s.Principal)).toEqual([{ Service: 'sagemaker.amazonaws.com' }]);
  });

  test('no statement has a wildcard action', () => {
    const { statements } = trainingRole({ baseModel: 's3://models/sd/base.safetensors' });
    expect(statements.flatMap(actionsOf).filter((action) => action.includes('*'))).toEqual([]);
  });

  test('S3 access is exactly: read datasets, read/write checkpoints and models, read the base model', () => {
    const { stack, statements } = trainingRole({ baseModel: 's3://models/sd/base.safetensors' });
    expect(grants(stack, statements, 's3:')).toEqual([
      's3:AbortMultipartUpload,s3:DeleteObject,s3:GetObject,s3:PutObject <StorageArtifactsBucket.Arn>/checkpoints/*',
      's3:AbortMultipartUpload,s3:DeleteObject,s3:GetObject,s3:PutObject <StorageArtifactsBucket.Arn>/models/*',
      's3:GetObject <StorageDatasetsBucket.Arn>/datasets/*',
      's3:GetObject arn:<AWS::Partition>:s3:::models/sd/base.safetensors*',
      's3:ListBucket <StorageArtifactsBucket.Arn> if {"StringLike":{"s3:prefix":["checkpoints/*"]}}',
      's3:ListBucket <StorageArtifactsBucket.Arn> if {"StringLike":{"s3:prefix":["models/*"]}}',
      's3:ListBucket <StorageDatasetsBucket.Arn> if {"StringLike":{"s3:prefix":["datasets/*"]}}',
      's3:ListBucket arn:<AWS::Partition>:s3:::models if {"StringLike":{"s3:prefix":["sd/base.safetensors*"]}}',
    ]);
  });

  test('a Hugging Face base model adds no S3 grant, and the dataset prefix follows the configuration', () => {
    const { stack, statements } = trainingRole({ datasetPrefix: 'teams/a/' });
    expect(grants(stack, statements, 's3:GetObject')).toEqual([
      's3:AbortMultipartUpload,s3:DeleteObject,s3:GetObject,s3:PutObject <StorageArtifactsBucket.Arn>/checkpoints/*',
      's3:AbortMultipartUpload,s3:DeleteObject,s3:GetObject,s3:PutObject <StorageArtifactsBucket.Arn>/models/*',
      's3:GetObject <StorageDatasetsBucket.Arn>/teams/a/*',
    ]);
  });

  test('KMS use is limited to the pipeline key', () => {
    const { stack, statements } = trainingRole();
    expect(grants(stack, statements, 'kms:')).toEqual([
      'kms:CreateGrant,kms:DescribeKey <StorageDataKey.Arn> if {"Bool":{"kms:GrantIsForAWSResource":"true"}}',
      'kms:Decrypt,kms:Encrypt,kms:GenerateDataKey <StorageDataKey.Arn>',
    ]);
  });

  test('the workflow gets the schema, the metric definitions and the channel names', () => {
    const { stack } = synthPipeline();
    expect(Object.keys(stack.training.hyperparameterSchema.hyperparameters)).toContain('max_train_steps');
    expect(stack.training.metricDefinitions.map((d) => d.Name)).toEqual([
      'train:loss',
      'train:step',
      'train:epoch',
      'train:seconds_per_step',
      'train:total_steps',
      'train:total_epochs',
      'train:captions_written',
    ]);
    expect([stack.training.checkpointsPrefix, stack.training.outputPrefix]).toEqual(['checkpoints/', 'models/']);
    expect(stack.resolve(stack.training.imageUri)).toMatchObject({ 'Fn::Sub': expect.stringContaining('.dkr.ecr.') });
  });
});
