import { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import type { LoraCheckResult } from '../shared/contract';
import { log } from '../shared/log';
import { checkLora } from './check';
import { LoraCheckError } from './errors';

// Created once per container; the SDK's own retries are off: the state's Retry decides (every 60 s while warming).
const runtime = new SageMakerRuntimeClient({ maxAttempts: 1 });

/** The workflow's "Try LoRA on the shared endpoint" step: LoraCheckEvent in, LoraCheckResult out (lambda/shared/contract.ts). */
export async function handler(event: unknown): Promise<LoraCheckResult> {
  try {
    const result = await checkLora(event, runtime);
    log('INFO', 'LoRA check passed', { ...result });
    return result;
  } catch (error) {
    const expected = error instanceof LoraCheckError;
    log(expected ? 'WARN' : 'ERROR', 'LoRA check did not pass', { error: (error as Error).name, reason: (error as Error).message });
    throw error;
  }
}
