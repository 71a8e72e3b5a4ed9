import type { LoraRetirement } from '../shared/contract';
import { loraRef } from '../shared/lora-name';
import { log } from '../shared/log';
import { loraNotFound } from './errors';
import type { RegistryTable } from './table';

/** Attempts at moving `current` when other writes keep changing it; each sees a newer head. */
const MAX_CURRENT_MOVES = 5;

/**
 * An operator retires a version: the server refuses it from then on (410, within its registry
 * cache's TTL). If it was the name's current version, `current` moves back to the highest 'ready'
 * version below it, or is removed when there is none.
 */
export async function retire(name: string, version: number, table: RegistryTable, now: Date): Promise<LoraRetirement> {
  const at = now.toISOString();
  if (!(await table.changeStatus(name, version, undefined, 'retired', { retiredAt: at, updatedAt: at }))) {
    throw loraNotFound(`LoRA ${loraRef(name, version)} is not in the registry; check the name and version (the status function shows a run's).`);
  }
  for (let attempt = 0; attempt < MAX_CURRENT_MOVES; attempt++) {
    const head = await table.getHead(name);
    if (head?.current !== version) return { name, version, status: 'retired', ...(head?.current !== undefined ? { current: head.current } : {}) };
    const previous = await table.highestReadyBelow(name, version);
    if (await table.moveCurrent(name, version, previous, at)) {
      const current = await catchUp(name, version, previous, table, at);
      log('INFO', 'Current LoRA version moved back', { name, retired: version, current: current ?? null });
      return { name, version, status: 'retired', ...(current !== undefined ? { current } : {}) };
    }
  }
  throw new Error(`The current version of ${name} kept changing while ${loraRef(name, version)} was retired; it is retired, run the retirement again to settle "current".`);
}

/**
 * A version between the one now current and the retired one may have become ready meanwhile: its
 * promotion saw the retired version still current, so it became ready without becoming current.
 * Current moves up to the highest such version while there is one, each move on condition that
 * current is still what this retirement set (a later promotion's own move wins).
 */
async function catchUp(name: string, retired: number, current: number | undefined, table: RegistryTable, at: string): Promise<number | undefined> {
  for (let attempt = 0; attempt < MAX_CURRENT_MOVES; attempt++) {
    const newer = await table.highestReadyBelow(name, retired);
    if (newer === undefined || (current !== undefined && newer <= current)) return current;
    if (!(await table.moveCurrent(name, current, newer, at))) return (await table.getHead(name))?.current;
    current = newer;
  }
  return current;
}
