import type { LoraPromotion } from '../shared/contract';
import { loraRef } from '../shared/lora-name';
import { loraNotFound, registryConflict } from './errors';
import type { RegistryTable } from './table';

/**
 * After its check: the version becomes 'ready', and the name's current version unless a newer one
 * already is (two runs of a name finishing out of order never move `current` back).
 */
export async function promote(name: string, version: number, table: RegistryTable, now: Date): Promise<LoraPromotion> {
  const at = now.toISOString();
  const outcome = await table.promote(name, version, at);
  if (outcome === 'made-current') return { name, version, current: true };
  if (outcome === 'newer-is-current') {
    // The head refused; the version alone still becomes ready (served when named with its version).
    if (await table.changeStatus(name, version, 'pending', 'ready', { updatedAt: at })) return { name, version, current: false };
  }
  // The version was not pending: a retried promotion finds it ready; anything else is refused.
  const item = await table.getVersion(name, version);
  if (item === undefined) throw loraNotFound(`LoRA ${loraRef(name, version)} is not in the registry; register it before promoting it.`);
  if (item.status === 'ready') return { name, version, current: (await table.getHead(name))?.current === version };
  throw registryConflict(`LoRA ${loraRef(name, version)} is ${item.status}, not pending: only a version that passed its check after registration can be made current.`);
}
