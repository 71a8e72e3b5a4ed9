import type { ArtifactLink } from '../shared/artifact-links';
import type { SamplesSummary, SmokeSummary } from '../shared/contract';

/**
 * What a successful run's notification says of its samples and its smoke test (summarized by
 * shared/artifact-summaries.ts), and the links to them. The summary (the execution's output) holds
 * s3:// locations only; the presigned links go into the notification alone, since the output stays
 * in the execution's history long after they expire.
 */

/** SNS refuses a message over 256 KB; links are left out above this size (UTF-8 bytes), not the report. */
export const MAX_MESSAGE_BYTES = 250_000;

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
