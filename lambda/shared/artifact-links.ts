import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { PublishedSamples, SmokeResult } from './contract';
import { isRecord, nonEmptyString } from './run-info';

/**
 * A run's objects worth looking at (samples.json, the contact sheet, the three smoke images), read
 * from Publish samples' and the smoke test's answers, and short-lived presigned GET links to them.
 *
 * Presigning is local signing with the caller's credentials, no AWS call: a link works only if the
 * signer may GetObject the object (and decrypt it through S3), and it stops working when the signing
 * credentials expire, whichever comes first: a Lambda role's temporary credentials may expire
 * before LINK_SECONDS are up.
 */

/** One hour: long enough to open an e-mail and look, short enough that a forwarded link goes stale. */
export const LINK_SECONDS = 3600;

export const ARTIFACT_LABELS = {
  samplesJson: 'samples.json',
  contactSheet: 'contact sheet',
  withoutLora: 'smoke test without the LoRA',
  withLora: 'smoke test with the LoRA',
  sideBySide: 'smoke test side by side',
} as const;
export type ArtifactName = keyof typeof ARTIFACT_LABELS;

export interface Artifact {
  readonly name: ArtifactName;
  readonly bucket: string;
  readonly key: string;
}

export interface ArtifactLink extends Artifact {
  readonly label: string;
  readonly url: string;
}

function fromAnswer(answer: unknown, names: readonly ArtifactName[]): Artifact[] {
  if (!isRecord(answer)) return [];
  const bucket = nonEmptyString(answer.bucket);
  if (bucket === undefined) return [];
  return names.flatMap((name) => {
    const key = nonEmptyString(answer[name]);
    return key !== undefined ? [{ name, bucket, key }] : [];
  });
}

/**
 * The objects Publish samples (`samples`: PublishedSamples, or an error, or null) and the smoke test
 * (`smoke`: SmokeResult or null) name, in a fixed order. Anything else names nothing.
 */
export function runArtifacts(samples: unknown, smoke: unknown): Artifact[] {
  // Each name is the answer's own field (contract.ts): `satisfies` keeps the two lists in step.
  const samplesKeys = ['samplesJson', 'contactSheet'] as const satisfies readonly (keyof PublishedSamples & ArtifactName)[];
  const smokeKeys = ['withoutLora', 'withLora', 'sideBySide'] as const satisfies readonly (keyof SmokeResult & ArtifactName)[];
  return [...fromAnswer(samples, samplesKeys), ...fromAnswer(smoke, smokeKeys)];
}

/** A GET link per artifact, valid `seconds` (or less: see above). */
export async function presign(s3: S3Client, artifacts: readonly Artifact[], seconds = LINK_SECONDS): Promise<ArtifactLink[]> {
  return Promise.all(
    artifacts.map(async (artifact) => ({
      ...artifact,
      label: ARTIFACT_LABELS[artifact.name],
      url: await getSignedUrl(s3, new GetObjectCommand({ Bucket: artifact.bucket, Key: artifact.key }), { expiresIn: seconds }),
    })),
  );
}
