import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { SageMakerClient } from '@aws-sdk/client-sagemaker';
import { SFNClient } from '@aws-sdk/client-sfn';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { RegistryTable } from '../registry/table';
import { log } from '../shared/log';
import { type RunList, type RunStatus, status } from './status';

// Created once per container, so warm invocations reuse their connections.
const sfn = new SFNClient({});
const sagemaker = new SageMakerClient({});
const dynamodb = DynamoDBDocumentClient.from(new DynamoDBClient({}));
// Only signs links to samples and smoke images, locally: the role's GetObject on them is what makes them work.
const s3 = new S3Client({});

export async function handler(event: unknown): Promise<RunStatus | RunList> {
  const stateMachineArn = process.env.STATE_MACHINE_ARN;
  if (!stateMachineArn) throw new Error('STATE_MACHINE_ARN is not set: the stack sets it to the workflow this function reports on.');
  const tableName = process.env.LORA_REGISTRY_TABLE;
  if (!tableName) throw new Error('LORA_REGISTRY_TABLE is not set: the stack sets it to the LoRA registry this function reads (lib/run-status.ts).');
  try {
    // Only the registry's reads are used; the role grants nothing else.
    return await status(event, { stateMachineArn, sfn, sagemaker, registry: new RegistryTable(dynamodb, tableName), s3 });
  } catch (error) {
    log('WARN', 'Status request not answered', { error: error instanceof Error ? error.name : String(error) });
    throw error;
  }
}
