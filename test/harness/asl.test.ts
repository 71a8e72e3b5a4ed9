import { Template } from 'aws-cdk-lib/assertions';
import { assertValidAsl, extractDefinition, FAKE_ENV, resolveIntrinsics } from '../support/asl';
import { createTestApp } from '../support/app';
import { buildFixtureStack } from '../fixtures/fixture-state-machine';

const template = Template.fromStack(buildFixtureStack(createTestApp()));
const ids = (type: string) => Object.keys(template.findResources(type));
const [functionId] = ids('AWS::Lambda::Function');
const [roleId] = ids('AWS::IAM::Role').filter((id) => id.startsWith('TrainingRole'));
const [bucketId] = ids('AWS::S3::Bucket');

describe('extractDefinition', () => {
  const definition = extractDefinition(template);
  const states = definition.States as Record<string, any>;

  test('the synthesized definition really is a token-laden Fn::Join', () => {
    const [machine] = Object.values(template.findResources('AWS::StepFunctions::StateMachine'));
    expect(Object.keys(machine.Properties.DefinitionString)).toEqual(['Fn::Join']);
  });

  test('yields plain ASL with every token resolved', () => {
    const text = JSON.stringify(definition);
    expect(text).not.toMatch(/Fn::|"Ref"|\$\{Token\[|AWS::/);
    expect(definition.StartAt).toBe('Prepare');
    expect(Object.keys(states).sort()).toEqual(['Done', 'IsReady', 'Prepare', 'Train', 'TrainingFailed', 'WaitForUpload']);
  });

  test('resolves Fn::GetAtt to well-formed fake ARNs and Ref to names', () => {
    const { partition, region, account } = FAKE_ENV;
    expect(states.Prepare.Parameters.FunctionName).toBe(`arn:${partition}:lambda:${region}:${account}:function:${functionId}`);
    expect(states.Train.Parameters.RoleArn).toBe(`arn:${partition}:iam::${account}:role/${roleId}`);
    expect(states.Train.Parameters.OutputDataConfig.S3OutputPath).toBe(`s3://${bucketId.toLowerCase()}/models/`);
    expect(states.Train.Resource).toBe(`arn:${partition}:states:::sagemaker:createTrainingJob.sync`);
  });

  test('uses the physical values a test supplies in place of fake ones', () => {
    const custom = extractDefinition(template, undefined, { [roleId]: { Arn: 'arn:aws:iam::111122223333:role/custom' } });
    expect((custom.States as Record<string, any>).Train.Parameters.RoleArn).toBe('arn:aws:iam::111122223333:role/custom');
  });

  test('the result passes asl-validator', () => {
    expect(() => assertValidAsl(definition)).not.toThrow();
  });

  test('asl-validator is given a copy: the definition is not changed by validation', () => {
    const before = JSON.stringify(definition);
    assertValidAsl(definition);
    expect(JSON.stringify(definition)).toBe(before);
  });

  test('also reads a Definition object with DefinitionSubstitutions', () => {
    const fromJson = Template.fromJSON({
      Resources: {
        Fn1: { Type: 'AWS::Lambda::Function', Properties: {} },
        Machine: {
          Type: 'AWS::StepFunctions::StateMachine',
          Properties: {
            Definition: {
              StartAt: 'Call',
              States: { Call: { Type: 'Task', Resource: '${FnArn}', Comment: 'says ${Quote}', End: true } },
            },
            DefinitionSubstitutions: { FnArn: { 'Fn::GetAtt': ['Fn1', 'Arn'] }, Quote: 'a "quoted" \\ value' },
          },
        },
      },
    });
    const resolved = extractDefinition(fromJson);
    expect((resolved.States as Record<string, any>).Call.Resource).toBe('arn:aws:lambda:us-east-1:123456789012:function:Fn1');
    expect((resolved.States as Record<string, any>).Call.Comment).toBe('says a "quoted" \\ value');
    assertValidAsl(resolved);
  });

  test('an unknown state machine id is an error that lists the ones there are', () => {
    expect(() => extractDefinition(template, 'Nope')).toThrow(/Name one state machine of \["Fixture/);
  });
});

describe('assertValidAsl (negative controls)', () => {
  const definition = extractDefinition(template);

  test('a transition to a missing state is rejected', () => {
    const broken = structuredClone(definition) as any;
    broken.States.WaitForUpload.Next = 'NoSuchState';
    expect(() => assertValidAsl(broken)).toThrow(/Invalid ASL: .*NoSuchState/s);
  });

  test('an invalid JSONPath is rejected', () => {
    const broken = structuredClone(definition) as any;
    broken.States.IsReady.Choices[0].Variable = 'prepare.ready';
    expect(() => assertValidAsl(broken)).toThrow(/Invalid ASL/);
  });
});

describe('resolveIntrinsics', () => {
  const resources = {
    Fn1: { Type: 'AWS::Lambda::Function' },
    Topic: { Type: 'AWS::SNS::Topic' },
  };

  test('resolves Fn::Sub, Fn::Select, Fn::Split and pseudo parameters', () => {
    expect(resolveIntrinsics({ 'Fn::Sub': 'arn:${AWS::Partition}:x:${AWS::Region}:${AWS::AccountId}:${Fn1}/${Fn1.Arn}' }, resources)).toBe(
      `arn:aws:x:us-east-1:123456789012:Fn1/arn:aws:lambda:us-east-1:123456789012:function:Fn1`,
    );
    expect(resolveIntrinsics({ 'Fn::Sub': ['${X}-${Topic}', { X: { Ref: 'AWS::StackName' } }] }, resources)).toBe(
      'TestStack-arn:aws:sns:us-east-1:123456789012:Topic',
    );
    expect(resolveIntrinsics({ 'Fn::Select': [1, { 'Fn::Split': ['/', 'a/b/c'] }] }, resources)).toBe('b');
    expect(resolveIntrinsics({ 'Fn::Sub': 'keep ${!Literal} as is' }, resources)).toBe('keep ${Literal} as is');
  });

  test('names a SageMaker endpoint and inference component in their ARNs by the name their properties give, lowercase', () => {
    const hosting = {
      Endpoint: { Type: 'AWS::SageMaker::Endpoint', Properties: { EndpointName: 'Lora-Shared-SD15' } },
      Component: { Type: 'AWS::SageMaker::InferenceComponent', Properties: { InferenceComponentName: 'lora-shared-sd15' } },
      Unnamed: { Type: 'AWS::SageMaker::Endpoint', Properties: {} },
    };
    expect(resolveIntrinsics({ 'Fn::GetAtt': ['Endpoint', 'EndpointArn'] }, hosting)).toBe('arn:aws:sagemaker:us-east-1:123456789012:endpoint/lora-shared-sd15');
    expect(resolveIntrinsics({ 'Fn::GetAtt': ['Component', 'InferenceComponentArn'] }, hosting)).toBe(
      'arn:aws:sagemaker:us-east-1:123456789012:inference-component/lora-shared-sd15',
    );
    expect(resolveIntrinsics({ 'Fn::GetAtt': ['Unnamed', 'EndpointArn'] }, hosting)).toBe('arn:aws:sagemaker:us-east-1:123456789012:endpoint/unnamed');
    // Another attribute of the same resource stays a fake value (control).
    expect(resolveIntrinsics({ 'Fn::GetAtt': ['Endpoint', 'EndpointName'] }, hosting)).toBe('Endpoint.EndpointName');
  });

  test('leaves ordinary objects and values alone, resolving only inside them', () => {
    expect(resolveIntrinsics({ a: [1, { Ref: 'Fn1' }], b: null, Fn: 'x' }, resources)).toEqual({ a: [1, 'Fn1'], b: null, Fn: 'x' });
  });

  test('refuses what it cannot resolve, naming it', () => {
    expect(() => resolveIntrinsics({ 'Fn::ImportValue': 'Shared' }, resources)).toThrow(/Fn::ImportValue/);
    expect(() => resolveIntrinsics({ Ref: 'Missing' }, resources)).toThrow(/unknown resource "Missing"/);
  });
});
