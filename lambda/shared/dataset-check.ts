import type { CaptionsSummary, PreparedRun } from './contract';
import { isRecord } from './run-info';

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
  /** Images without a caption that the training job captions with BLIP (caption_missing); absent when none. */
  readonly captionsToWrite?: number;
}

/** Files named in the notification line; the rest are counted, and the status function lists 20. */
const NAMED_IN_LINE = 3;

const strings = (value: unknown): string[] => (Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string' && item.trim() !== '') : []);

const count = (value: unknown): number => (typeof value === 'number' && Number.isSafeInteger(value) && value > 0 ? value : 0);

/** The run's dataset check; undefined when nothing was skipped, noted or to be captioned (or the run predates the fields). */
export function datasetCheck(run: PreparedRun | undefined): DatasetCheck | undefined {
  if (run === undefined) return undefined;
  const skipped = strings(run.dataset.skipped);
  const listed = run.dataset.skippedCount;
  const skippedCount = typeof listed === 'number' && Number.isSafeInteger(listed) && listed >= skipped.length ? listed : skipped.length;
  const notes = strings(run.dataset.notes);
  const captionsToWrite = count(run.dataset.captionsToWrite);
  if (skippedCount === 0 && notes.length === 0 && captionsToWrite === 0) return undefined;
  return { skipped, skippedCount, notes, ...(captionsToWrite > 0 ? { captionsToWrite } : {}) };
}

/** What Publish samples says it did with the job's captions (`$.samples`); undefined when it wrote and kept none. */
export function captionsSummary(samples: unknown, run: PreparedRun | undefined): CaptionsSummary | undefined {
  if (!isRecord(samples) || run === undefined) return undefined;
  const written = count(samples.captionsWritten);
  const kept = count(samples.captionsKept);
  return written === 0 && kept === 0 ? undefined : { written, kept, folder: run.dataset.uri };
}

/** The notification's line for the captions written back; none when there were none. */
export function captionsLines(captions: CaptionsSummary | undefined): string[] {
  if (captions === undefined) return [];
  const kept = captions.kept > 0 ? `; ${captions.kept} not written, as the folder already had that caption file (yours is kept)` : '';
  return [`Captions: BLIP's captions of ${captions.written} image(s) were written next to them in ${captions.folder} for review${kept}.`];
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
  if (check.captionsToWrite !== undefined && check.captionsToWrite > 0) {
    const images = check.captionsToWrite === 1 ? '1 image without a caption will be' : `${check.captionsToWrite} images without a caption will be`;
    lines.push(`${images} captioned by BLIP; the captions are written next to them in S3 for review.`);
  }
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
