import type { SamplesSummary, SmokeSummary } from './contract';
import { isRecord, nonEmptyString, parseJson } from './run-info';

/**
 * What a run says of its samples and its smoke test: Report's success summary and the status
 * function's answer both read them from the states' results. They hold s3:// locations only.
 */

/** A caught Cause's reason: a Lambda error's is JSON (errorType, errorMessage, trace), of which only the message is for a reader. */
function causeMessage(cause: unknown): string {
  const text = nonEmptyString(cause);
  if (text === undefined) return 'no cause given';
  const parsed = parseJson(text);
  return (isRecord(parsed) ? nonEmptyString(parsed.errorMessage) : undefined) ?? text;
}

function sentence(text: string): string {
  const trimmed = text.trim();
  return /[.!?]$/.test(trimmed) ? trimmed : `${trimmed}.`;
}

/** Publish samples' answer, the error that stopped it, or nothing at all (a run from before the state existed). */
export function samplesSummary(samples: unknown, outputArchive: string | undefined): SamplesSummary | undefined {
  if (!isRecord(samples)) return undefined;
  const error = nonEmptyString(samples.Error);
  if (error !== undefined) {
    const where = outputArchive !== undefined ? ` They stay in the job's ${outputArchive} (under sample/).` : '';
    return { count: 0, note: `Publishing the samples failed (${error}): ${sentence(causeMessage(samples.Cause).slice(0, 500))}${where}` };
  }
  const bucket = nonEmptyString(samples.bucket);
  const count = typeof samples.count === 'number' ? samples.count : 0;
  if (bucket === undefined || count === 0) return { count: 0, note: 'The training job rendered no samples (sampling is off, or it wrote none).' };
  const omitted = typeof samples.omitted === 'number' && samples.omitted > 0 ? samples.omitted : 0;
  const contactSheet = nonEmptyString(samples.contactSheet);
  return {
    count,
    location: `s3://${bucket}/${String(samples.prefix)}`,
    ...(contactSheet !== undefined ? { contactSheet: `s3://${bucket}/${contactSheet}` } : {}),
    ...(omitted > 0 ? { note: `${omitted} more samples were left in the job's output.tar.gz (the copy is bounded).` } : {}),
  };
}

/** The smoke test's numbers and folder, from a SmokeResult. */
export function smokeSummary(smoke: unknown): SmokeSummary | undefined {
  if (!isRecord(smoke) || nonEmptyString(smoke.bucket) === undefined || typeof smoke.meanAbsoluteDifference !== 'number') return undefined;
  const key = String(smoke.sideBySide ?? '');
  return {
    meanAbsoluteDifference: smoke.meanAbsoluteDifference,
    changedPixelShare: Number(smoke.changedPixelShare),
    minMeanAbsoluteDifference: Number(smoke.minMeanAbsoluteDifference),
    location: `s3://${String(smoke.bucket)}/${key.slice(0, key.lastIndexOf('/') + 1)}`,
  };
}
