import type { PreparedRun } from '../shared/contract';
import { loraRef } from '../shared/lora-name';
import { isRecord, nonEmptyString } from '../shared/run-info';
import type { HistoryFindings } from './history';
import { type LoraRegistryState, type RegistryReader, registryState } from './registry-state';

/**
 * A shared run's LoRA: its registry name, and once registered its version, with the version's
 * registry state now (status, whether it is current).
 */
export interface RunLora extends LoraRegistryState {
  readonly name: string;
  readonly version?: number;
  /** `name@version`, as a request names it. */
  readonly ref?: string;
  /** Once the Make LoRA current state ran: whether the version became the name's current one. */
  readonly madeCurrent?: boolean;
}

/** A shared run's LoRA name, with its version once registered and whether it was made current. */
export function loraStatus(run: PreparedRun, history: HistoryFindings): RunLora | undefined {
  if (run.serving.mode !== 'shared') return undefined;
  const registered = isRecord(history.registered) ? history.registered : {};
  const name = nonEmptyString(registered.name) ?? run.lora?.name;
  if (name === undefined) return undefined;
  const version = typeof registered.version === 'number' ? registered.version : undefined;
  const promotion = isRecord(history.promotion) ? history.promotion : undefined;
  return {
    name,
    ...(version !== undefined ? { version, ref: loraRef(name, version) } : {}),
    ...(promotion !== undefined && typeof promotion.current === 'boolean' ? { madeCurrent: promotion.current } : {}),
  };
}

/** The LoRA with its version's registry state now, once the history names a version. */
export async function withRegistryState(registry: RegistryReader, lora: RunLora | undefined): Promise<RunLora | undefined> {
  if (lora?.version === undefined) return lora;
  return { ...lora, ...(await registryState(registry, lora.name, lora.version)) };
}
