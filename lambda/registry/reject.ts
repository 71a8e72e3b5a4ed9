import type { LoraRejection } from '../shared/contract';
import { loraRef } from '../shared/lora-name';
import { log } from '../shared/log';
import { loraNotFound } from './errors';
import type { RegistryTable } from './table';

/**
 * A run that failed after registering marks its version 'failed' with why, so that the server
 * answers 410 for it. Only a pending version changes: one already ready (its promotion went
 * through before the failure) or retired is left as it is and said so.
 */
export async function reject(name: string, version: number, reason: string, table: RegistryTable, now: Date): Promise<LoraRejection> {
  const failure = reason.trim() || 'The run failed after registering this version.';
  if (await table.changeStatus(name, version, 'pending', 'failed', { failure, updatedAt: now.toISOString() })) {
    return { name, version, status: 'failed', changed: true };
  }
  const item = await table.getVersion(name, version);
  if (item === undefined) throw loraNotFound(`LoRA ${loraRef(name, version)} is not in the registry: there is nothing to mark failed.`);
  if (item.status !== 'failed') log('WARN', 'LoRA version not marked failed', { name, version, status: item.status, reason: failure });
  return { name, version, status: item.status, changed: false };
}
