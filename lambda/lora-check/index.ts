import { S3Client } from '@aws-sdk/client-s3';
import { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import type { LoraCheckResult, SmokeResult } from '../shared/contract';
import { log } from '../shared/log';
import { checkLora } from './check';
import { smokeTestEndpoint } from './dedicated';
import { LoraCheckError } from './errors';
import { s3SmokeStore, type SmokeStorage } from './smoke-store';

export interface CheckDependencies {
  readonly runtime: SageMakerRuntimeClient;
  readonly s3: S3Client;
  readonly storage: SmokeStorage;
}

/** Where the smoke images go, as the stack sets it (lib/lora-workflow.ts). */
export function storageFromEnvironment(env: NodeJS.ProcessEnv = process.env): SmokeStorage {
  const { ARTIFACTS_BUCKET: bucket, MODELS_PREFIX: modelsPrefix, DATA_KEY_ARN: keyArn } = env;
  if (!bucket || !modelsPrefix || !keyArn) throw new Error('ARTIFACTS_BUCKET, MODELS_PREFIX and DATA_KEY_ARN must be set: the stack sets them to where the smoke images go (lib/lora-workflow.ts).');
  return { bucket, modelsPrefix, keyArn };
}

/**
 * The workflow's "Try LoRA on the shared endpoint" (mode shared: LoraCheckResult) and "Smoke test
 * the endpoint" (mode dedicated: SmokeResult) steps (lambda/shared/contract.ts).
 */
export function createHandler(deps: CheckDependencies): (event: unknown) => Promise<LoraCheckResult | SmokeResult> {
  const storeFor = (job: string) => s3SmokeStore(deps.s3, deps.storage, job);
  return async (event) => {
    try {
      const dedicated = typeof event === 'object' && event !== null && (event as { mode?: unknown }).mode === 'dedicated';
      const result = dedicated ? await smokeTestEndpoint(event, deps.runtime, storeFor) : await checkLora(event, deps.runtime, storeFor);
      log('INFO', dedicated ? 'Smoke test passed' : 'LoRA check passed', { ...result });
      return result;
    } catch (error) {
      const expected = error instanceof LoraCheckError;
      log(expected ? 'WARN' : 'ERROR', 'LoRA check did not pass', { error: (error as Error).name, reason: (error as Error).message });
      throw error;
    }
  };
}

let handle: ((event: unknown) => Promise<LoraCheckResult | SmokeResult>) | undefined;

export async function handler(event: unknown): Promise<LoraCheckResult | SmokeResult> {
  // Created once per container; the SDK's own retries are off for the endpoint: the state's Retry decides (every 60 s while warming).
  handle ??= createHandler({ runtime: new SageMakerRuntimeClient({ maxAttempts: 1 }), s3: new S3Client({}), storage: storageFromEnvironment() });
  return handle(event);
}
