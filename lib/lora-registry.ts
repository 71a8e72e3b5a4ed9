import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';

/** Properties of {@link LoraRegistry}. */
export interface LoraRegistryProps {
  /** The pipeline's customer-managed key; the table is encrypted with it. */
  readonly key: kms.IKey;
  /**
   * What `cdk destroy` does with the table. `RETAIN` also turns on deletion protection, so the
   * registry (every LoRA version ever made) cannot be deleted by accident, by the stack or by hand.
   * @default RemovalPolicy.RETAIN
   */
  readonly removalPolicy?: RemovalPolicy;
}

/** Who may do what in the registry: the server and status read; only the registry function writes. */
const READ_ACTIONS = ['dynamodb:GetItem', 'dynamodb:BatchGetItem', 'dynamodb:Query'];
/**
 * The registry function's calls: read a head or version item (GetItem, Query), claim a registration
 * and allocate a version (UpdateItem), put the version item (PutItem), and promote a version in one
 * TransactWriteItems, which DynamoDB authorizes as the UpdateItem of each of its two items (it
 * sends no ConditionCheck, so dynamodb:ConditionCheckItem is not granted).
 */
const WRITE_ACTIONS = ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:Query'];

/**
 * The LoRA registry: one DynamoDB item per trained LoRA version, and one head item per name
 * (`version` 0) holding the last version allocated and the current one. See the registry section
 * of docs/design.md for the items and the conditional writes.
 *
 * On-demand billing (registrations are rare, server reads are cached), encrypted with the
 * pipeline key, point-in-time recovery on. It exists in both endpoint modes, so switching modes
 * never deletes the history.
 */
export class LoraRegistry extends Construct {
  /** Partition key: the LoRA's stable name. */
  public static readonly PARTITION_KEY = 'name';
  /** Sort key: the version, 0 for the name's head item. */
  public static readonly SORT_KEY = 'version';

  public readonly table: dynamodb.Table;

  constructor(scope: Construct, id: string, props: LoraRegistryProps) {
    super(scope, id);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    this.table = new dynamodb.Table(this, 'Table', {
      partitionKey: { name: LoraRegistry.PARTITION_KEY, type: dynamodb.AttributeType.STRING },
      sortKey: { name: LoraRegistry.SORT_KEY, type: dynamodb.AttributeType.NUMBER },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      encryption: dynamodb.TableEncryption.CUSTOMER_MANAGED,
      encryptionKey: props.key,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      deletionProtection: removalPolicy === RemovalPolicy.RETAIN,
      removalPolicy,
    });
  }

  /** Lets `role` read items (the server, the status function): GetItem, BatchGetItem, Query; nothing else. */
  public grantReadOnly(role: iam.IRole): void {
    LoraRegistry.grantReadOnly(this.table, role);
  }

  /** Lets `role` (the registry function) register, promote, reject and retire versions; it cannot delete or scan. */
  public grantReadWrite(role: iam.IRole): void {
    LoraRegistry.grantReadWrite(this.table, role);
  }

  /** {@link grantReadOnly} for a construct that is given only the registry's table. */
  public static grantReadOnly(table: dynamodb.ITable, role: iam.IRole): void {
    grant(table, role, 'ReadTheLoraRegistry', READ_ACTIONS, ['kms:Decrypt']);
  }

  /** {@link grantReadWrite} for a construct that is given only the registry's table. */
  public static grantReadWrite(table: dynamodb.ITable, role: iam.IRole): void {
    // DynamoDB encrypts and decrypts the table's key with the caller's permissions, through DynamoDB only.
    grant(table, role, 'WriteTheLoraRegistry', WRITE_ACTIONS, ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey']);
  }
}

/** The table statement, and the key statement limited to DynamoDB's use of the key on the caller's behalf. */
function grant(table: dynamodb.ITable, role: iam.IRole, sid: string, actions: string[], keyActions: string[]): void {
  const key = table.encryptionKey;
  if (!key) throw new Error(`${table.node.path} is not the LoRA registry: it has no customer-managed key`);
  role.addToPrincipalPolicy(new iam.PolicyStatement({ sid, actions, resources: [table.tableArn] }));
  role.addToPrincipalPolicy(
    new iam.PolicyStatement({
      sid: `${sid}Key`,
      actions: keyActions,
      resources: [key.keyArn],
      conditions: { StringEquals: { 'kms:ViaService': `dynamodb.${Stack.of(table).region}.amazonaws.com` } },
    }),
  );
}
