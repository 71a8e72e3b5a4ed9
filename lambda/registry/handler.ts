import type { S3Client } from '@aws-sdk/client-s3';
import type { RegistryResult } from '../shared/contract';
import { log } from '../shared/log';
import { RegistryError } from './errors';
import { parseRegistryEvent } from './event';
import { promote } from './promote';
import { register } from './register';
import { reject } from './reject';
import { retire } from './retire';
import type { RegistryTable } from './table';
import type { LoraStorage } from './training-output';

export interface RegistryDependencies {
  readonly s3: S3Client;
  readonly table: RegistryTable;
  readonly storage: LoraStorage;
  readonly now?: () => Date;
}

/** The Lambda handler over its dependencies: index.ts gives it the real ones, tests their own clients. */
export function createHandler(deps: RegistryDependencies): (event: unknown) => Promise<RegistryResult> {
  const now = deps.now ?? (() => new Date());
  return async (raw) => {
    const action = typeof raw === 'object' && raw !== null ? (raw as Record<string, unknown>).action : undefined;
    try {
      const event = parseRegistryEvent(raw);
      let result: RegistryResult;
      if (event.action === 'register') result = await register(event, { ...deps, now });
      else if (event.action === 'promote') result = await promote(event.name, event.version, deps.table, now());
      else if (event.action === 'reject') result = await reject(event.name, event.version, event.reason, deps.table, now());
      else result = await retire(event.name, event.version, deps.table, now());
      log('INFO', 'Registry updated', { action, result });
      return result;
    } catch (error) {
      // A refusal names what to fix; anything else is for the workflow's Retry and the operator.
      const refused = error instanceof RegistryError;
      log(refused ? 'WARN' : 'ERROR', refused ? 'Registry request refused' : 'Registry request failed', { action, error: (error as Error).name, reason: (error as Error).message });
      throw error;
    }
  };
}
