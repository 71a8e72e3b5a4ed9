import { S3Client } from '@aws-sdk/client-s3';
import type { PublishedSamples } from '../shared/contract';
import { log } from '../shared/log';
import { publishSamples, type SampleStorage } from './publish';

/** Where samples are and go, as the stack sets it (lib/lora-workflow.ts). */
export function storageFromEnvironment(env: NodeJS.ProcessEnv = process.env): SampleStorage {
  const { ARTIFACTS_BUCKET: bucket, MODELS_PREFIX: modelsPrefix, DATA_KEY_ARN: keyArn } = env;
  if (!bucket || !modelsPrefix || !keyArn) {
    throw new Error('ARTIFACTS_BUCKET, MODELS_PREFIX and DATA_KEY_ARN must be set: the stack sets them (lib/lora-workflow.ts).');
  }
  return { bucket, modelsPrefix, keyArn };
}

/** The workflow's "Publish samples" step: PublishSamplesEvent in, PublishedSamples out (lambda/shared/contract.ts). */
export function createHandler(s3: S3Client, storage: SampleStorage): (event: unknown) => Promise<PublishedSamples> {
  return async (event) => {
    try {
      const result = await publishSamples(event, s3, storage);
      log('INFO', 'Samples published', { prefix: result.prefix, count: result.count, omitted: result.omitted, captionsWritten: result.captionsWritten, captionsKept: result.captionsKept });
      return result;
    } catch (error) {
      log('WARN', 'Samples not published', { error: (error as Error).name, reason: (error as Error).message });
      throw error;
    }
  };
}

let handle: ((event: unknown) => Promise<PublishedSamples>) | undefined;

export async function handler(event: unknown): Promise<PublishedSamples> {
  // Created once per container, so warm invocations reuse their connections.
  handle ??= createHandler(new S3Client({}), storageFromEnvironment());
  return handle(event);
}
