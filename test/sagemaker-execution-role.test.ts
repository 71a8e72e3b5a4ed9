import * as path from 'node:path';
import { Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { AwsSolutionsChecks } from 'cdk-nag';
import { parseS3Uri, SageMakerExecutionRole, type SageMakerWorkload } from '../lib/sagemaker-execution-role';
import { createTestApp } from './support/app';
import { actionsOf, policyStatements } from './support/iam';

function build(workload: SageMakerWorkload, grant?: (role: SageMakerExecutionRole, bucket: s3.Bucket) => void) {
  const app = createTestApp();
  const stack = new Stack(app, 'RoleStack', { env: { account: '123456789012', region: 'us-east-1' } });
  const key = new kms.Key(stack, 'Key', { enableKeyRotation: true });
  const bucket = new s3.Bucket(stack, 'Data', { encryptionKey: key, enforceSSL: true });
  const image = new ecrAssets.DockerImageAsset(stack, 'Image', { directory: path.join(__dirname, 'fixtures', 'assets', 'image') });
  const role = new SageMakerExecutionRole(stack, 'Exec', { workload, image, key, description: 'test role' });
  grant?.(role, bucket);
  return { stack, template: Template.fromStack(stack), report: new AwsSolutionsChecks(app).validateScope(stack) };
}

const statements = (template: Template) => policyStatements(template);

describe('SageMakerExecutionRole', () => {
  test.each<[SageMakerWorkload, string[]]>([
    ['training', ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey']],
    ['hosting', ['kms:Decrypt']],
  ])('%s uses the key for exactly %j (and volume grants)', (workload, keyActions) => {
    const all = statements(build(workload).template);
    expect(actionsOf(all.find((s) => s.Sid === 'UseTheDataKey')!)).toEqual(keyActions);
  });

  test('an endpoint decrypts only what S3 decrypts for it; a training job is not limited to S3 (negative control)', () => {
    const keyStatement = (workload: SageMakerWorkload) => statements(build(workload).template).find((s) => s.Sid === 'UseTheDataKey')!;
    expect(keyStatement('hosting').Condition).toEqual({ StringEquals: { 'kms:ViaService': 's3.us-east-1.amazonaws.com' } });
    expect(keyStatement('training').Condition).toBeUndefined();
  });

  test('only SageMaker in this account can assume it', () => {
    const { template } = build('training');
    template.hasResourceProperties('AWS::IAM::Role', {
      AssumeRolePolicyDocument: {
        Statement: [
          Match.objectLike({
            Principal: { Service: 'sagemaker.amazonaws.com' },
            Condition: { StringEquals: { 'aws:SourceAccount': '123456789012' } },
          }),
        ],
      },
    });
  });

  test.each<[SageMakerWorkload, string, string]>([
    ['training', 'arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/TrainingJobs', '/aws/sagemaker/TrainingJobs'],
    ['hosting', 'arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/*', '/aws/sagemaker/Endpoints'],
  ])('%s logs and metrics go only to SageMaker’s own log group and namespace', (workload, logGroup, namespace) => {
    const all = statements(build(workload).template);
    expect(all.find((s) => s.Sid === 'CreateItsLogGroup')?.Resource).toBe(logGroup);
    expect(all.find((s) => s.Sid === 'WriteItsLogStreams')?.Resource).toBe(`${logGroup}:log-stream:*`);
    expect(all.find((s) => s.Sid === 'PutItsMetrics')?.Condition).toEqual({ StringEquals: { 'cloudwatch:namespace': namespace } });
  });

  test('no statement allows a wildcard action', () => {
    const { template } = build('training', (role, bucket) => role.grantReadWrite(bucket, 'checkpoints/'));
    const wildcards = statements(template).flatMap(actionsOf).filter((a) => a.includes('*'));
    expect(wildcards).toEqual([]);
  });

  test('Resource "*" is used only where AWS has no resource-level permission', () => {
    const { template } = build('training', (role, bucket) => role.grantRead(bucket, 'datasets/'));
    const unscoped = statements(template)
      .filter((s) => s.Resource === '*')
      .flatMap(actionsOf)
      .sort();
    expect(unscoped).toEqual(['cloudwatch:PutMetricData', 'ecr:GetAuthorizationToken']);
  });

  test('S3 grants are limited to the given prefix, for objects and for listing', () => {
    const { stack, template } = build('training', (role, bucket) => role.grantRead(bucket, 'datasets/'));
    const s3Statements = statements(template).filter((s) => actionsOf(s).some((a) => a.startsWith('s3:')));
    const resolved = stack.resolve(s3Statements);
    expect(resolved).toEqual([
      {
        Action: 's3:ListBucket',
        Effect: 'Allow',
        Resource: { 'Fn::GetAtt': [expect.stringMatching(/^Data/), 'Arn'] },
        Condition: { StringLike: { 's3:prefix': ['datasets/*'] } },
      },
      {
        Action: 's3:GetObject',
        Effect: 'Allow',
        Resource: { 'Fn::Join': ['', [{ 'Fn::GetAtt': [expect.stringMatching(/^Data/), 'Arn'] }, '/datasets/*']] },
      },
    ]);
  });

  test('read-write adds put, delete (SageMaker mirrors deleted checkpoints) and multipart abort, nothing else', () => {
    const { template } = build('training', (role, bucket) => role.grantReadWrite(bucket, 'checkpoints/'));
    const objectActions = statements(template)
      .flatMap(actionsOf)
      .filter((a) => a.startsWith('s3:') && a !== 's3:ListBucket')
      .sort();
    expect(objectActions).toEqual(['s3:AbortMultipartUpload', 's3:DeleteObject', 's3:GetObject', 's3:PutObject']);
  });

  test('an s3:// base model outside the pipeline is readable at exactly its key', () => {
    const { template } = build('hosting', (role) => role.grantReadUri('s3://models-bucket/sd/base.safetensors'));
    const s3Statements = statements(template).filter((s) => actionsOf(s).some((a) => a.startsWith('s3:')));
    expect(s3Statements).toEqual([
      expect.objectContaining({
        Action: 's3:ListBucket',
        Resource: 'arn:aws:s3:::models-bucket',
        Condition: { StringLike: { 's3:prefix': ['sd/base.safetensors*'] } },
      }),
      expect.objectContaining({
        Action: 's3:GetObject',
        Resource: 'arn:aws:s3:::models-bucket/sd/base.safetensors*',
      }),
    ]);
  });

  test('an exact object grant reads that key alone, with no listing; a folder stays a prefix', () => {
    const { template } = build('hosting', (role) => {
      role.grantReadUri('s3://models-bucket/sd/base.safetensors', { exactObject: true });
      role.grantReadUri('s3://models-bucket/sdxl/', { exactObject: true });
    });
    const s3Statements = statements(template).filter((s) => actionsOf(s).some((a) => a.startsWith('s3:')));
    expect(s3Statements.map((s) => [s.Action, s.Resource])).toEqual([
      ['s3:GetObject', ['arn:aws:s3:::models-bucket/sd/base.safetensors', 'arn:aws:s3:::models-bucket/sdxl/*']],
      ['s3:ListBucket', 'arn:aws:s3:::models-bucket'],
    ]);
  });

  test('grantReadUri refuses what is not an s3:// URI', () => {
    expect(() => build('hosting', (role) => role.grantReadUri('owner/model'))).toThrow('not an s3:// URI: owner/model');
  });

  test.each<SageMakerWorkload>(['training', 'hosting'])('%s: cdk-nag finds nothing unacknowledged', (workload) => {
    const { report } = build(workload, (role, bucket) => {
      role.grantReadWrite(bucket, 'checkpoints/');
      role.grantReadUri('s3://models-bucket/sd/');
    });
    const onTheRole = report.violations.filter((v) => v.violatingResources.some((r) => r.constructPath?.startsWith('RoleStack/Exec/')));
    expect(onTheRole).toEqual([]);
  });

  test('negative control: the same check reports an unacknowledged wildcard on the role', () => {
    const { report } = build('training', (role) => role.role.addToPrincipalPolicy(new iam.PolicyStatement({ actions: ['s3:GetObject'], resources: ['arn:aws:s3:::other/*'] })));
    expect(report.violations.map((v) => v.ruleName)).toContain('AwsSolutions-IAM5[Resource::arn:aws:s3:::other/*]');
  });
});

describe('parseS3Uri', () => {
  test.each([
    ['s3://bucket/a/b.safetensors', { bucket: 'bucket', key: 'a/b.safetensors' }],
    ['s3://bucket/folder/', { bucket: 'bucket', key: 'folder/' }],
    ['s3://bucket', { bucket: 'bucket', key: '' }],
    ['owner/name', undefined],
    ['https://bucket/key', undefined],
  ])('%s', (uri, expected) => {
    expect(parseS3Uri(uri)).toEqual(expected);
  });
});
