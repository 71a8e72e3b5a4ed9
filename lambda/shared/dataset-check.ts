import type { PreparedRun } from './contract';

/**
 * What Prepare's pre-flight found in a dataset that trains anyway: the files kohya will not train
 * (each "path: why") and what it left to the training container. Report puts it in the run's
 * notification and the status function in its answer, where a user looks, rather than only in
 * Prepare's output in the execution history.
 */
export interface DatasetCheck {
  /** Files kohya will not train, each with why (the first 20). */
  readonly skipped: readonly string[];
  /** How many in all (more than `skipped` lists when over 20). */
  readonly skippedCount: number;
  /** What the pre-flight did not check, e.g. images past its bounds. */
  readonly notes: readonly string[];
}

/** Files named in the notification line; the rest are counted, and the status function lists 20. */
const NAMED_IN_LINE = 3;

const strings = (value: unknown): string[] => (Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string' && item.trim() !== '') : []);

/** The run's dataset check; undefined when nothing was skipped or noted (or the run predates the fields). */
export function datasetCheck(run: PreparedRun | undefined): DatasetCheck | undefined {
  if (run === undefined) return undefined;
  const skipped = strings(run.dataset.skipped);
  const count = run.dataset.skippedCount;
  const skippedCount = typeof count === 'number' && Number.isSafeInteger(count) && count >= skipped.length ? count : skipped.length;
  const notes = strings(run.dataset.notes);
  return skippedCount === 0 && notes.length === 0 ? undefined : { skipped, skippedCount, notes };
}

/** "photo.Png: mixed-case extension, …" as "photo.Png (mixed-case extension, …)". */
function named(entry: string): string {
  const colon = entry.indexOf(': ');
  return colon === -1 ? entry : `${entry.slice(0, colon)} (${entry.slice(colon + 2)})`;
}

/** The notification's lines: one for the skipped files (a few named), one per note; none when there is nothing to say. */
export function datasetCheckLines(check: DatasetCheck | undefined): string[] {
  if (check === undefined) return [];
  const lines: string[] = [];
  if (check.skippedCount > 0) {
    const shown = check.skipped.slice(0, NAMED_IN_LINE).map(named);
    const more = check.skippedCount - shown.length;
    const files = check.skippedCount === 1 ? '1 file was' : `${check.skippedCount} files were`;
    const rest = more > 0 ? `, and ${more} more (the status function lists the first ${check.skipped.length})` : '';
    lines.push(shown.length > 0 ? `${files} not trained: ${shown.join(', ')}${rest}.` : `${files} not trained.`);
  }
  for (const note of check.notes) lines.push(`Dataset note: ${note}.`);
  return lines;
}
