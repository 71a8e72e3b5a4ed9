import type { Template } from 'aws-cdk-lib/assertions';
import { SHARED_5XX_PERIODS, SHARED_5XX_THRESHOLD } from '../lib/pipeline-alarms';
import { synthPipeline } from './support/app';
import { FAKE_ENV, resolveIntrinsics } from './support/asl';

type Statement = { Sid?: string; Effect: string; Principal: any; Action: string | string[]; Resource: unknown; Condition?: Record<string, Record<string, unknown>> };

function resources(template: Template) {
  return template.toJSON().Resources as never;
}

function resolved<T>(template: Template, value: unknown): T {
  return resolveIntrinsics(value, resources(template)) as T;
}

function alarms(template: Template): Record<string, Record<string, any>> {
  const found = template.findResources('AWS::CloudWatch::Alarm') as Record<string, { Properties: Record<string, any> }>;
  return Object.fromEntries(Object.values(found).map((a) => [a.Properties.AlarmName, resolved<Record<string, any>>(template, a.Properties)]));
}

function topicArn(template: Template): string {
  const [id] = Object.keys(template.findResources('AWS::SNS::Topic'));
  return resolved<string>(template, { Ref: id });
}

function keyStatements(template: Template): Statement[] {
  const [key] = Object.values(template.findResources('AWS::KMS::Key')) as Array<{ Properties: { KeyPolicy: { Statement: Statement[] } } }>;
  return resolved<Statement[]>(template, key.Properties.KeyPolicy.Statement);
}

function topicStatements(template: Template): Statement[] {
  const [policy] = Object.values(template.findResources('AWS::SNS::TopicPolicy')) as Array<{ Properties: { PolicyDocument: { Statement: Statement[] } } }>;
  return resolved<Statement[]>(template, policy.Properties.PolicyDocument.Statement);
}

const asList = (value: unknown): unknown[] => (Array.isArray(value) ? value : [value]);
const glob = (pattern: string, text: string) => new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`).test(text);

interface ServiceRequest {
  readonly service: string;
  readonly action: string;
  readonly resource: string;
  readonly sourceAccount: string;
  readonly sourceArn: string;
}

/**
 * Whether an Allow statement of a resource policy lets a service principal make the request: its
 * principal, action, resource and the StringEquals / ArnEquals / ArnLike conditions the statements
 * here use (any other condition operator fails the check, rather than being ignored).
 */
function permits(statements: Statement[], request: ServiceRequest): boolean {
  const context: Record<string, string> = { 'aws:SourceAccount': request.sourceAccount, 'aws:SourceArn': request.sourceArn };
  return statements.some((s) => {
    if (s.Effect !== 'Allow' || !asList(s.Principal?.Service).includes(request.service)) return false;
    if (!asList(s.Action).some((a) => glob(String(a), request.action))) return false;
    if (!asList(s.Resource).some((r) => glob(String(r), request.resource))) return false;
    return Object.entries(s.Condition ?? {}).every(([operator, tests]) =>
      Object.entries(tests).every(([contextKey, expected]) => {
        const actual = context[contextKey];
        if (operator === 'StringEquals' || operator === 'ArnEquals') return asList(expected).includes(actual);
        if (operator === 'ArnLike') return asList(expected).some((p) => glob(String(p), actual));
        throw new Error(`condition operator ${operator} not modelled by this test`);
      }),
    );
  });
}

const { partition, region, account } = FAKE_ENV;
const alarmArn = (name: string, inAccount: string = account) => `arn:${partition}:cloudwatch:${region}:${inAccount}:alarm:${name}`;

describe('the alarms of a shared deployment', () => {
  const { template, stack } = synthPipeline();
  const all = alarms(template);
  const runsFailed = all[`${stack.stackName}-runs-failed`];
  const shared5xx = all[`${stack.stackName}-shared-endpoint-5xx`];

  test('there are two: failed runs and the shared endpoint 5xx', () => {
    expect(Object.keys(all).sort()).toEqual([`${stack.stackName}-runs-failed`, `${stack.stackName}-shared-endpoint-5xx`]);
  });

  test("failed runs: one failed execution of the stack's state machine in 5 minutes, no data is not a breach", () => {
    const [machine] = Object.keys(template.findResources('AWS::StepFunctions::StateMachine'));
    expect(runsFailed).toMatchObject({
      Namespace: 'AWS/States',
      MetricName: 'ExecutionsFailed',
      Dimensions: [{ Name: 'StateMachineArn', Value: resolved(template, { Ref: machine }) }],
      Statistic: 'Sum',
      Period: 300,
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      EvaluationPeriods: 1,
      TreatMissingData: 'notBreaching',
      AlarmActions: [topicArn(template)],
    });
  });

  test("shared endpoint 5xx: its inference component's Invocation5XXErrors, sustained over two periods", () => {
    const component = Object.values(template.findResources('AWS::SageMaker::InferenceComponent'))[0] as { Properties: { InferenceComponentName: string } };
    expect(shared5xx).toMatchObject({
      Namespace: 'AWS/SageMaker',
      MetricName: 'Invocation5XXErrors',
      Dimensions: [{ Name: 'InferenceComponentName', Value: component.Properties.InferenceComponentName }],
      Statistic: 'Sum',
      Period: 300,
      Threshold: SHARED_5XX_THRESHOLD,
      EvaluationPeriods: SHARED_5XX_PERIODS,
      DatapointsToAlarm: SHARED_5XX_PERIODS,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      TreatMissingData: 'notBreaching',
      AlarmActions: [topicArn(template)],
    });
    expect(SHARED_5XX_THRESHOLD).toBeGreaterThan(1); // one 503 of a busy server is not an incident
  });

  describe.each([
    ['the key', () => keyStatements(template), 'kms:GenerateDataKey', 'arn:aws:kms:us-east-1:123456789012:key/any'],
    ['the key (decrypt)', () => keyStatements(template), 'kms:Decrypt', 'arn:aws:kms:us-east-1:123456789012:key/any'],
    ['the topic', () => topicStatements(template), 'sns:Publish', topicArn(template)],
  ])("%s's policy lets CloudWatch publish for these alarms only", (_, statements, action, resource) => {
    const ours = { service: 'cloudwatch.amazonaws.com', action, resource: action.startsWith('kms') ? '*' : resource, sourceAccount: account };

    test.each([`${stack.stackName}-runs-failed`, `${stack.stackName}-shared-endpoint-5xx`])('allows alarm %s', (name) => {
      expect(permits(statements(), { ...ours, sourceArn: alarmArn(name) })).toBe(true);
    });

    test('refuses another alarm of the account, the same alarm name in another account, and another service', () => {
      expect(permits(statements(), { ...ours, sourceArn: alarmArn('someone-elses-alarm') })).toBe(false);
      expect(permits(statements(), { ...ours, sourceAccount: '999999999999', sourceArn: alarmArn(`${stack.stackName}-runs-failed`, '999999999999') })).toBe(false);
      expect(permits(statements(), { ...ours, service: 'events.amazonaws.com', sourceArn: alarmArn(`${stack.stackName}-runs-failed`) })).toBe(false);
    });
  });

  test('CloudWatch gets exactly kms:Decrypt and kms:GenerateDataKey* on the key, nothing else', () => {
    const forCloudWatch = keyStatements(template).filter((s) => asList(s.Principal?.Service).includes('cloudwatch.amazonaws.com'));
    expect(forCloudWatch).toHaveLength(1);
    expect(asList(forCloudWatch[0].Action).sort()).toEqual(['kms:Decrypt', 'kms:GenerateDataKey*']);
    const request = { service: 'cloudwatch.amazonaws.com', resource: '*', sourceAccount: account, sourceArn: alarmArn(`${stack.stackName}-runs-failed`) };
    for (const action of ['kms:Encrypt', 'kms:ReEncryptFrom', 'kms:CreateGrant', 'kms:ScheduleKeyDeletion']) {
      expect(permits(keyStatements(template), { ...request, action })).toBe(false);
    }
  });

  test('the topic still refuses publishing without TLS', () => {
    expect(topicStatements(template)).toContainEqual(expect.objectContaining({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }));
  });
});

describe('the alarms of a dedicated-only deployment', () => {
  const { template, stack } = synthPipeline({ 'endpoint.mode': 'dedicated' });

  test('only failed runs: there is no shared endpoint, and a SEARCH over dedicated endpoints cannot be alarmed on', () => {
    expect(Object.keys(alarms(template))).toEqual([`${stack.stackName}-runs-failed`]);
  });

  test('the grants name only that alarm', () => {
    const request = { service: 'cloudwatch.amazonaws.com', action: 'kms:GenerateDataKey', resource: '*', sourceAccount: account };
    expect(permits(keyStatements(template), { ...request, sourceArn: alarmArn(`${stack.stackName}-runs-failed`) })).toBe(true);
    expect(permits(keyStatements(template), { ...request, sourceArn: alarmArn(`${stack.stackName}-shared-endpoint-5xx`) })).toBe(false);
  });
});

describe('the policy check itself (negative control)', () => {
  const statement: Statement = {
    Effect: 'Allow',
    Principal: { Service: 'cloudwatch.amazonaws.com' },
    Action: ['kms:Decrypt', 'kms:GenerateDataKey*'],
    Resource: '*',
    Condition: { StringEquals: { 'aws:SourceAccount': account }, ArnLike: { 'aws:SourceArn': alarmArn('x-*') } },
  };
  const request = { service: 'cloudwatch.amazonaws.com', action: 'kms:GenerateDataKey', resource: '*', sourceAccount: account, sourceArn: alarmArn('x-1') };

  test('a matching request is permitted; each mismatch is not', () => {
    expect(permits([statement], request)).toBe(true);
    expect(permits([{ ...statement, Effect: 'Deny' }], request)).toBe(false);
    expect(permits([statement], { ...request, sourceArn: alarmArn('y-1') })).toBe(false);
    expect(permits([statement], { ...request, action: 'kms:Encrypt' })).toBe(false);
    expect(permits([{ ...statement, Condition: undefined }], { ...request, sourceArn: alarmArn('y-1') })).toBe(true);
  });

  test('an unmodelled condition operator fails loudly instead of passing', () => {
    expect(() => permits([{ ...statement, Condition: { StringLike: { 'aws:SourceArn': '*' } } }], request)).toThrow(/not modelled/);
  });
});
