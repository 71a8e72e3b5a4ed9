import type { HeadItem, RegistryTable, VersionItem } from '../registry/table';
import type { LoraStatus } from '../shared/contract';
import { log } from '../shared/log';
import { loraRef } from '../shared/lora-name';

/**
 * A run's LoRA version as the registry holds it now, beside what the execution's history says: so
 * an operator sees whether the run's version is the one a request naming only the LoRA gets.
 */

/** The registry's two reads the status function makes (the same items and keys the registry function writes). */
export type RegistryReader = Pick<RegistryTable, 'getVersion' | 'getHead' | 'tableName'>;

export interface LoraRegistryState {
  /** The version's status now: pending, ready, failed (with `failure`) or retired (with `retiredAt`). */
  readonly status?: LoraStatus;
  /** Why the version failed its check. */
  readonly failure?: string;
  readonly retiredAt?: string;
  /** Whether the version is the name's current one now: what `"lora": "<name>"` is served with. */
  readonly isCurrent?: boolean;
  /** The name's current version now; absent when the name has none. */
  readonly currentVersion?: number;
  /** What the registry could not tell (an item missing, a read that failed); the rest of the answer stands. */
  readonly registryError?: string;
}

function errorName(error: unknown): string {
  return error instanceof Error ? error.name : 'Error';
}

function errorText(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/** What one read tells, and what it could not. */
interface Reading {
  readonly state: LoraRegistryState;
  readonly problem?: string;
}

function fromVersionItem(read: PromiseSettledResult<VersionItem | undefined>, ref: string, table: string): Reading {
  if (read.status === 'rejected') return { state: {}, problem: `Reading ${ref} from the registry table ${table} failed: ${errorText(read.reason)}` };
  if (read.value === undefined) {
    return { state: {}, problem: `${ref} is not in the registry table ${table}: its version item was deleted, or this function reads another table than the workflow writes.` };
  }
  const { status, failure, retiredAt } = read.value;
  return { state: { status, ...(failure !== undefined ? { failure } : {}), ...(retiredAt !== undefined ? { retiredAt } : {}) } };
}

function fromHeadItem(read: PromiseSettledResult<HeadItem | undefined>, name: string, version: number, table: string): Reading {
  if (read.status === 'rejected') return { state: {}, problem: `Reading the current version of ${name} from the registry table ${table} failed: ${errorText(read.reason)}` };
  const current = read.value?.current;
  const state = { isCurrent: current === version, ...(current !== undefined ? { currentVersion: current } : {}) };
  // No head item: nothing is current, so a request naming only the name is refused (404).
  return read.value !== undefined ? { state } : { state, problem: `${name} has no head item (version 0) in the registry table ${table}, so no version of it is current.` };
}

/** The version item's status and the head's current version, each read on its own: one failing keeps the other. */
export async function registryState(registry: RegistryReader, name: string, version: number): Promise<LoraRegistryState> {
  const ref = loraRef(name, version);
  const [item, head] = await Promise.allSettled([registry.getVersion(name, version), registry.getHead(name)]);
  const readings = [fromVersionItem(item, ref, registry.tableName), fromHeadItem(head, name, version, registry.tableName)];
  const state: LoraRegistryState = Object.assign({}, ...readings.map((reading) => reading.state));
  const problems = readings.flatMap((reading) => (reading.problem !== undefined ? [reading.problem] : []));
  if (problems.length === 0) return state;
  const errors = [item, head].flatMap((read) => (read.status === 'rejected' ? [errorName(read.reason)] : []));
  log('WARN', 'Registry state incomplete', { lora: ref, errors, missingItems: problems.length - errors.length });
  return { ...state, registryError: problems.join(' ') };
}
