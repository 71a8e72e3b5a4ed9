import { CreateTableCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';

interface TableProperties {
  readonly KeySchema: Array<{ AttributeName: string; KeyType: 'HASH' | 'RANGE' }>;
  readonly AttributeDefinitions: Array<{ AttributeName: string; AttributeType: 'S' | 'N' | 'B' }>;
}

/**
 * Creates on the local server the table a synthesized `AWS::DynamoDB::Table` declares, with its
 * keys as the template gives them (so a change of key there shows up here), on demand.
 */
export async function createTableAsDeclared(client: DynamoDBClient, tableName: string, properties: TableProperties): Promise<void> {
  await client.send(
    new CreateTableCommand({
      TableName: tableName,
      KeySchema: properties.KeySchema,
      AttributeDefinitions: properties.AttributeDefinitions,
      BillingMode: 'PAY_PER_REQUEST',
    }),
  );
}
