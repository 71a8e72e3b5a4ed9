import { type PreparedRun } from './contract';

/**
 * Reading a run back from data the workflow stored: an execution's input, the state data a Catch
 * passes on, a state's output in the history. That data is JSON no type checks at run time, so
 * each reader accepts anything and answers `undefined` for what is not there.
 */

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function nonEmptyString(value: unknown): string | undefined {
  return typeof value === 'string' && value.trim().length > 0 ? value : undefined;
}

/**
 * The folder name a run's `dataset` names: `pokemon` for `pokemon`, `pokemon/` and
 * `s3://bucket/datasets/pokemon/`, so that runs started either way are found by either form.
 */
export function datasetFolder(dataset: unknown): string | undefined {
  const given = nonEmptyString(dataset);
  if (given === undefined) return undefined;
  const path = given.trim().replace(/^s3:\/\/[^/]*/i, '');
  const parts = path.split('/').filter((part) => part.length > 0);
  return parts.length > 0 ? parts[parts.length - 1] : undefined;
}

/** Prepare's answer once the dataset has settled; `undefined` for an unsettled run or anything else. */
export function preparedRun(value: unknown): PreparedRun | undefined {
  if (!isRecord(value) || value.settled !== true || nonEmptyString(value.run) === undefined) return undefined;
  if (!isRecord(value.dataset) || !isRecord(value.serving) || !isRecord(value.training)) return undefined;
  // Runs prepared before shared serving existed had dedicated endpoints and no serving mode.
  if (value.serving.mode === undefined) return { ...value, serving: { ...value.serving, mode: 'dedicated' } } as unknown as PreparedRun;
  return value as unknown as PreparedRun;
}

/** JSON text parsed, or `undefined` when it is not JSON. */
export function parseJson(textValue: unknown): unknown {
  if (typeof textValue !== 'string') return undefined;
  try {
    return JSON.parse(textValue) as unknown;
  } catch {
    return undefined;
  }
}
