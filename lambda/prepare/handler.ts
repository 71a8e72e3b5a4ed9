import type { S3Client } from '@aws-sdk/client-s3';
import type { PrepareEvent, PrepareResult, PrepareSettings } from '../shared/contract';
import { log } from '../shared/log';
import { PrepareError } from './errors';
import { prepare } from './prepare';
import { s3DatasetStore } from './s3-store';

export interface HandlerDependencies {
  readonly s3: S3Client;
  readonly settings: PrepareSettings;
  readonly now?: () => Date;
}

/** The Lambda handler over its dependencies: index.ts gives it the real ones, tests an S3 client of their own. */
export function createHandler(deps: HandlerDependencies): (event: PrepareEvent) => Promise<PrepareResult> {
  const store = s3DatasetStore(deps.s3);
  const now = deps.now ?? (() => new Date());
  return async (event) => {
    const execution = event?.execution?.name;
    try {
      const result = await prepare(event, { store, settings: deps.settings, now });
      if (result.settled) {
        log('INFO', 'Run prepared', { execution, run: result.run, dataset: result.dataset, servingMode: result.serving.mode, endpointName: result.serving.endpointName, lora: result.lora.name });
      } else {
        log('INFO', 'Dataset folder still changing', { execution, waitSeconds: result.waitSeconds, reason: result.reason });
      }
      return result;
    } catch (error) {
      // A refusal is the user's to fix; anything else is for the workflow's Retry and the operator.
      const refused = error instanceof PrepareError;
      log(refused ? 'WARN' : 'ERROR', refused ? 'Run refused' : 'Prepare failed', { execution, error: (error as Error).name, reason: (error as Error).message });
      throw error;
    }
  };
}
