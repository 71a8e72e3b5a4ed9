import { S3Client } from '@aws-sdk/client-s3';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { createHandler } from './handler';
import { RegistryTable } from './table';

/** A setting the stack gives; without it every invocation fails with what is missing. */
function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: the stack sets it for the registry function (lib/lora-workflow.ts).`);
  return value;
}

// Cold start: created once per container, so warm invocations reuse their connections.
const table = new RegistryTable(DynamoDBDocumentClient.from(new DynamoDBClient({})), required('LORA_REGISTRY_TABLE'));
// The training jobs' output it reads, and where it copies each LoRA for the shared endpoint.
const storage = { bucket: required('LORA_BUCKET'), modelsPrefix: required('MODELS_PREFIX'), lorasPrefix: required('LORA_PREFIX') };

/** The registry steps of the workflow, and an operator's `retire`: RegistryEvent in, RegistryResult out (lambda/shared/contract.ts). */
export const handler = createHandler({ s3: new S3Client({}), table, storage });
