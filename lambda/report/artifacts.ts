import type { ArtifactLink } from '../shared/artifact-links';
import type { SamplesSummary, SmokeSummary } from '../shared/contract';
import { isRecord, nonEmptyString, parseJson } from '../shared/run-info';

/**
 * What a successful run's report says of its samples and its smoke test, and the links to them.
 * The summary (the execution's output) holds s3:// locations only; the presigned links go into the
 * notification alone, since the output stays in the execution's history long after they expire.
 */

/** SNS refuses a message over 256 KB; links are left out above this size (UTF-8 bytes), not the report. */
export const MAX_MESSAGE_BYTES = 250_000;

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

/** The message lines for the samples and the smoke test. */
export function artifactLines(samples: SamplesSummary | undefined, smoke: SmokeSummary | undefined): string[] {
  const lines: string[] = [];
  if (smoke !== undefined) {
    lines.push(
      `Smoke test passed: the same prompt and seed without and with the LoRA differ by ${smoke.meanAbsoluteDifference} levels in 255 on average ` +
        `(${Math.round(smoke.changedPixelShare * 1000) / 10} % of pixels changed; the threshold is ${smoke.minMeanAbsoluteDifference}). Images: ${smoke.location}`,
    );
  }
  if (samples !== undefined) lines.push(samples.count > 0 ? `Samples: ${samples.count} files in ${samples.location}${samples.note ? ` (${samples.note})` : ''}` : `Samples: none. ${samples.note ?? ''}`.trim());
  return lines;
}

/** The links section, with how long they last. */
export function linkLines(links: readonly ArtifactLink[], seconds: number): string[] {
  if (links.length === 0) return [];
  return [
    `Links (valid ${Math.round(seconds / 60)} minutes, or less if the signing credentials expire first; the status function gives fresh ones):`,
    ...links.map((link) => `  ${link.label}: ${link.url}`),
  ];
}
