import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import { AwsSolutionsChecks } from 'cdk-nag';
import { LoraRegistry } from '../lib/lora-registry';
import { createTestApp } from './support/app';
import { actionsOf, type PolicyStatement, policyStatements } from './support/iam';

const KEY = { 'Fn::GetAtt': [expect.stringMatching(/^Key/), 'Arn'] };
const TABLE = { 'Fn::GetAtt': [expect.stringMatching(/^RegistryTable/), 'Arn'] };
const VIA_DYNAMODB = { StringEquals: { 'kms:ViaService': 'dynamodb.us-east-1.amazonaws.com' } };

function build(removalPolicy?: RemovalPolicy, grant?: (registry: LoraRegistry, role: iam.Role) => void) {
  const app = createTestApp();
  const stack = new Stack(app, 'RegistryStack', { env: { account: '123456789012', region: 'us-east-1' } });
  const key = new kms.Key(stack, 'Key', { enableKeyRotation: true });
  const registry = new LoraRegistry(stack, 'Registry', { key, removalPolicy });
  const role = new iam.Role(stack, 'Reader', { assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com') });
  grant?.(registry, role);
  const template = Template.fromStack(stack);
  return { stack, template, report: new AwsSolutionsChecks(app).validateScope(stack) };
}

describe('LoraRegistry table', () => {
  test('name and version key the items; on demand, pipeline key, point-in-time recovery', () => {
    const { stack, template } = build();
    const [table] = Object.values(template.findResources('AWS::DynamoDB::Table')) as Array<{ Properties: Record<string, unknown> }>;
    expect(stack.resolve(table.Properties)).toEqual({
      KeySchema: [
        { AttributeName: 'name', KeyType: 'HASH' },
        { AttributeName: 'version', KeyType: 'RANGE' },
      ],
      AttributeDefinitions: [
        { AttributeName: 'name', AttributeType: 'S' },
        { AttributeName: 'version', AttributeType: 'N' },
      ],
      BillingMode: 'PAY_PER_REQUEST',
      SSESpecification: { SSEEnabled: true, SSEType: 'KMS', KMSMasterKeyId: KEY },
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      DeletionProtectionEnabled: true,
    });
  });

  test.each([
    [undefined, 'Retain', true],
    [RemovalPolicy.RETAIN, 'Retain', true],
    [RemovalPolicy.DESTROY, 'Delete', false],
  ])('removal policy %s: CloudFormation %s, deletion protection %s', (policy, deletion, protectedTable) => {
    const { template } = build(policy);
    const [table] = Object.values(template.findResources('AWS::DynamoDB::Table')) as Array<{ DeletionPolicy: string; Properties: Record<string, unknown> }>;
    expect([table.DeletionPolicy, table.Properties.DeletionProtectionEnabled]).toEqual([deletion, protectedTable]);
  });

  test('cdk-nag finds nothing on the table', () => {
    expect(build().report.violations.filter((v) => v.violatingResources.some((r) => r.constructPath?.includes('/Registry/')))).toEqual([]);
  });
});

describe('LoraRegistry grants', () => {
  const grantsOf = (grant: (registry: LoraRegistry, role: iam.Role) => void) => {
    const { stack, template } = build(undefined, grant);
    return stack.resolve(policyStatements(template)) as PolicyStatement[];
  };

  test('read only: GetItem, BatchGetItem and Query on the table, Decrypt through DynamoDB only', () => {
    expect(grantsOf((registry, role) => registry.grantReadOnly(role))).toEqual([
      { Sid: 'ReadTheLoraRegistry', Effect: 'Allow', Action: ['dynamodb:BatchGetItem', 'dynamodb:GetItem', 'dynamodb:Query'], Resource: TABLE },
      { Sid: 'ReadTheLoraRegistryKey', Effect: 'Allow', Action: 'kms:Decrypt', Resource: KEY, Condition: VIA_DYNAMODB },
    ]);
  });

  test('read only grants no write, delete or scan (negative control: read-write does)', () => {
    const writes = (statements: ReturnType<typeof grantsOf>) =>
      statements.flatMap((s) => actionsOf(s)).filter((a) => /Put|Update|Delete|Write|Scan|ConditionCheck|kms:Encrypt|GenerateDataKey/.test(a));
    expect(writes(grantsOf((registry, role) => registry.grantReadOnly(role)))).toEqual([]);
    expect(writes(grantsOf((registry, role) => registry.grantReadWrite(role)))).not.toEqual([]);
  });

  test('a construct given only the table grants the same (the workflow gets the table)', () => {
    const viaTable = grantsOf((registry, role) => LoraRegistry.grantReadWrite(registry.table, role));
    expect(viaTable).toEqual(grantsOf((registry, role) => registry.grantReadWrite(role)));
  });

  test('a table without the customer-managed key is refused: its grant would miss the key', () => {
    const stack = new Stack(createTestApp(), 'Other');
    const table = new dynamodb.Table(stack, 'Plain', { partitionKey: { name: 'name', type: dynamodb.AttributeType.STRING } });
    const role = new iam.Role(stack, 'Role', { assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com') });
    expect(() => LoraRegistry.grantReadOnly(table, role)).toThrow('Other/Plain is not the LoRA registry: it has no customer-managed key');
  });

  test('read-write: exactly what registration, promotion and retirement call, no delete or scan', () => {
    expect(grantsOf((registry, role) => registry.grantReadWrite(role))).toEqual([
      {
        Sid: 'WriteTheLoraRegistry',
        Effect: 'Allow',
        Action: ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:Query', 'dynamodb:UpdateItem'],
        Resource: TABLE,
      },
      { Sid: 'WriteTheLoraRegistryKey', Effect: 'Allow', Action: ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey'], Resource: KEY, Condition: VIA_DYNAMODB },
    ]);
  });
});
