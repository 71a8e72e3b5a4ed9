import { CloudFormationClient, CloudFormationServiceException, DescribeStacksCommand } from '@aws-sdk/client-cloudformation';
import { mockClient } from 'aws-sdk-client-mock';
import 'aws-sdk-client-mock-jest';
import { ConfigurationError } from '../../cli/command';
import { DEFAULT_STACK_NAME, outputEnv, outputReader, type OutputSources, stackNameOf } from '../../cli/stack-outputs';
import { CONFIG_FIELDS } from '../../lib/config-fields';
import { cli } from './fake-io';

const cfn = mockClient(CloudFormationClient);
beforeEach(() => cfn.reset());

const STACK = {
  StackName: 'SageMakerLoraPipeline',
  StackStatus: 'UPDATE_COMPLETE' as const,
  CreationTime: new Date(),
  Outputs: [
    { OutputKey: 'DatasetsBucketName', OutputValue: 'stack-datasets' },
    { OutputKey: 'DatasetPrefix', OutputValue: 'datasets/' },
    { OutputKey: 'TriggerFileName', OutputValue: 'dataset.toml' },
    { OutputKey: 'StatusFunctionName', OutputValue: 'stack-status' },
  ],
};

function sources(overrides: Partial<OutputSources> = {}): OutputSources {
  return { stackName: 'SageMakerLoraPipeline', flags: {}, env: {}, cloudformation: () => new CloudFormationClient({ region: 'eu-west-1' }), region: 'eu-west-1', ...overrides };
}

function notFound(name: string) {
  return new CloudFormationServiceException({ name: 'ValidationError', message: `Stack with id ${name} does not exist`, $fault: 'client', $metadata: {} });
}

function configurationError(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigurationError);
    return (error as Error).message;
  }
  throw new Error('expected a ConfigurationError');
}

describe('the stack name', () => {
  test('--stack, else LORA_PIPELINE_STACK, else the configuration default, which bin/app.ts deploys', () => {
    expect(DEFAULT_STACK_NAME).toBe(CONFIG_FIELDS.stackName.default);
    expect(DEFAULT_STACK_NAME).toBe('SageMakerLoraPipeline');
    expect(stackNameOf('Mine', { LORA_PIPELINE_STACK: 'Env' })).toBe('Mine');
    expect(stackNameOf(undefined, { LORA_PIPELINE_STACK: 'Env' })).toBe('Env');
    expect(stackNameOf(undefined, {})).toBe('SageMakerLoraPipeline');
  });
});

describe('stack outputs', () => {
  test('are read with DescribeStacks on the stack name, once however often a command asks', async () => {
    cfn.on(DescribeStacksCommand, { StackName: 'SageMakerLoraPipeline' }).resolves({ Stacks: [STACK] });
    const read = outputReader(sources());
    const outputs = await read('DatasetsBucketName');
    expect(outputs.get('DatasetsBucketName')).toBe('stack-datasets');
    expect((await read('StatusFunctionName')).get('StatusFunctionName')).toBe('stack-status');
    expect(cfn).toHaveReceivedCommandTimes(DescribeStacksCommand, 1);
  });

  test('a flag or env var wins over the stack; all needed given: no CloudFormation call at all', async () => {
    cfn.on(DescribeStacksCommand).resolves({ Stacks: [STACK] });
    const read = outputReader(sources({ flags: { DatasetsBucketName: 'flag-bucket' }, env: { [outputEnv('DatasetPrefix')]: 'env/' } }));
    const outputs = await read('DatasetsBucketName', 'DatasetPrefix');
    expect(outputs.get('DatasetsBucketName')).toBe('flag-bucket');
    expect(outputs.get('DatasetPrefix')).toBe('env/');
    // An optional output not given is unknown rather than an error when the stack was not read.
    expect(outputs.find('SharedEndpointName')).toBeUndefined();
    expect(cfn).toHaveReceivedCommandTimes(DescribeStacksCommand, 0);
    // Negative control: one needed output not given, and the stack is read.
    const mixed = await read('DatasetsBucketName', 'TriggerFileName');
    expect(mixed.get('TriggerFileName')).toBe('dataset.toml');
    expect(mixed.get('DatasetsBucketName')).toBe('flag-bucket');
    expect(cfn).toHaveReceivedCommandTimes(DescribeStacksCommand, 1);
  });

  test('the env var names: LORA_PIPELINE_ and the flag in capitals', () => {
    expect(outputEnv('DatasetsBucketName')).toBe('LORA_PIPELINE_DATASETS_BUCKET');
    expect(outputEnv('TriggerFileName')).toBe('LORA_PIPELINE_TRIGGER_FILE_NAME');
  });

  test('a missing stack: the error names the stack, the region, --stack and the flag that gives the output', async () => {
    cfn.on(DescribeStacksCommand).rejects(notFound('Nope'));
    const outputs = await outputReader(sources({ stackName: 'Nope' }))('DatasetsBucketName');
    expect(configurationError(() => outputs.get('DatasetsBucketName'))).toBe(
      'there is no CloudFormation stack "Nope" in eu-west-1: deploy it (npx cdk deploy), or name yours with --stack <name> or env LORA_PIPELINE_STACK, ' +
        'or pass --region; or give the output DatasetsBucketName directly: --datasets-bucket <value> or env LORA_PIPELINE_DATASETS_BUCKET',
    );
    // A value given still works without the stack.
    const given = await outputReader(sources({ stackName: 'Nope', flags: { DatasetsBucketName: 'b' } }))('DatasetsBucketName', 'TriggerFileName');
    expect(given.get('DatasetsBucketName')).toBe('b');
    expect(() => given.get('TriggerFileName')).toThrow(/--trigger-file-name <value> or env LORA_PIPELINE_TRIGGER_FILE_NAME/);
  });

  test('an output the stack lacks: the error names it, the stack status, and the flag and env var', async () => {
    cfn.on(DescribeStacksCommand).resolves({ Stacks: [STACK] });
    const outputs = await outputReader(sources())('DashboardName');
    expect(configurationError(() => outputs.get('DashboardName'))).toBe(
      'the stack "SageMakerLoraPipeline" (UPDATE_COMPLETE) has no output DashboardName: deploy the current version of this app (npx cdk deploy), ' +
        'or give it with --dashboard <value> or env LORA_PIPELINE_DASHBOARD',
    );
    expect(outputs.find('DashboardName')).toBeUndefined();
  });

  test('no region or no credentials: the error says how to set them, not which output to give', async () => {
    cfn.on(DescribeStacksCommand).rejects(new Error('Region is missing'));
    const noRegion = await outputReader(sources({ region: undefined }))('DatasetsBucketName');
    expect(configurationError(() => noRegion.get('DatasetsBucketName'))).toBe(
      'no AWS region is set: pass --region <region> or set AWS_REGION (or a region in your AWS profile)',
    );
    cfn.reset();
    cfn.on(DescribeStacksCommand).rejects(Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' }));
    const noCredentials = await outputReader(sources())('DatasetsBucketName');
    expect(configurationError(() => noCredentials.get('DatasetsBucketName'))).toMatch(/^AWS credentials are missing or invalid \(CredentialsProviderError: Could not load credentials from any providers\): set AWS_PROFILE/);
  });

  test('access denied: the error says which call failed and how to do without it', async () => {
    cfn.on(DescribeStacksCommand).rejects(new CloudFormationServiceException({ name: 'AccessDenied', message: 'not allowed', $fault: 'client', $metadata: {} }));
    const outputs = await outputReader(sources())('StatusFunctionName');
    expect(configurationError(() => outputs.get('StatusFunctionName'))).toBe(
      'reading the stack "SageMakerLoraPipeline" in eu-west-1 with CloudFormation DescribeStacks failed: AccessDenied: not allowed; ' +
        'or give the output StatusFunctionName directly: --status-function <value> or env LORA_PIPELINE_STATUS_FUNCTION',
    );
  });
});

describe('through the CLI', () => {
  const env = { AWS_REGION: 'eu-west-1', AWS_ACCESS_KEY_ID: 'testing', AWS_SECRET_ACCESS_KEY: 'testing' };

  test('upload against a missing stack exits 3 naming the stack; --stack picks another', async () => {
    cfn.on(DescribeStacksCommand).rejects(notFound('x'));
    const { code, err } = await cli(['upload', 'test/fixtures/datasets/clean', '--no-follow'], env);
    expect(code).toBe(3);
    expect(err).toMatch(/^lora-pipeline upload: there is no CloudFormation stack "SageMakerLoraPipeline" in eu-west-1/);
    expect(err).not.toMatch(/^\s+at /m);
    await cli(['--stack', 'Other', 'upload', 'test/fixtures/datasets/clean', '--no-follow'], env);
    expect(cfn).toHaveReceivedCommandWith(DescribeStacksCommand, { StackName: 'Other' });
    await cli(['upload', 'test/fixtures/datasets/clean', '--no-follow'], { ...env, LORA_PIPELINE_STACK: 'FromEnv' });
    expect(cfn).toHaveReceivedCommandWith(DescribeStacksCommand, { StackName: 'FromEnv' });
  });
});
