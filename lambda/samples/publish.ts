import { ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { type PublishedSamples, type PublishSamplesEvent, SAMPLES_ARCHIVE_INVALID } from '../shared/contract';
import { SAGEMAKER_NAME } from '../shared/names';
import { isRecord, nonEmptyString, parseJson } from '../shared/run-info';
import { readTarGz, type TarEntries } from '../shared/s3-tar-gz';
import { type TarEntry, TarError } from '../shared/tar';
import { contentType, sampleName } from './sample-name';
import { captionPath, type CaptionCounts, type DatasetFolderTarget, MAX_CAPTIONS, writeCaption } from './captions';

/**
 * Publish samples: the images the training job rendered, with samples.json and the contact sheet,
 * are read from the job's output.tar.gz (the container copies its `sample/` folder to
 * /opt/ml/output/data, which SageMaker uploads before the job completes; the checkpoint folder has
 * no such promise for its last files) and written to `models/<job>/samples/`, next to the model,
 * encrypted with the pipeline key. Streamed (S3 → gunzip → tar), bounded in count and bytes.
 * The captions the job generated (its `captions/` folder) go back next to their images (captions.ts).
 */

/** A run renders a few prompts per epoch: 500 files is far more than any sensible run makes. */
export const MAX_SAMPLE_OBJECTS = 500;
/** A sample or contact sheet is a few MB at most (the sheet's cells are ≤ 256 px); a larger file is not one. */
export const MAX_SAMPLE_FILE_BYTES = 32 * 1024 * 1024;
/** All images together: well within the function's time and what anyone looks through. */
export const MAX_SAMPLE_BYTES = 512 * 1024 * 1024;
/** Concurrent PutObject requests; each holds one file in memory. */
const CONCURRENCY = 4;
/** samples.json is a few kilobytes; the prompt is not read from a larger one. */
const MAX_SAMPLES_JSON_BYTES = 1024 * 1024;
export const SAMPLES_JSON = 'samples.json';
export const CONTACT_SHEET = 'contact-sheet.png';
/** Never left out for the bounds on images: they are what a person opens first. */
const INDEX_FILES = new Set([SAMPLES_JSON, CONTACT_SHEET]);

export interface SampleStorage {
  readonly bucket: string;
  /** `models/`: the job's output is `<prefix><job>/output/output.tar.gz`; samples go to `<prefix><job>/samples/`. */
  readonly modelsPrefix: string;
  readonly keyArn: string;
}

/** A dataset folder: `<prefix><name>/`, never the bucket's root, nothing that climbs out of it. */
const datasetFolderSchema = z.object({
  bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/),
  prefix: z
    .string()
    .min(2)
    .max(900)
    .refine((prefix) => prefix.endsWith('/') && !prefix.startsWith('/') && prefix.split('/').slice(0, -1).every((segment) => segment !== '' && segment !== '.' && segment !== '..'), 'must be a folder path ending in /'),
});
// datasetFolder is optional for an execution started before it was passed: its captions stay in output.tar.gz.
const eventSchema = z.object({ trainingJobName: z.string().regex(SAGEMAKER_NAME), datasetFolder: datasetFolderSchema.optional() });

export function parseEvent(event: unknown): Omit<PublishSamplesEvent, 'datasetFolder'> & { readonly datasetFolder?: DatasetFolderTarget } {
  const result = eventSchema.safeParse(event);
  if (!result.success) throw new Error(`The samples event is invalid (${result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}); expected {trainingJobName} and datasetFolder {bucket, prefix}.`);
  return result.data;
}

/** The archive is unreadable (not gzip, not tar, cut short): retrying will not help, and the message says which object. */
export class SamplesArchiveInvalid extends Error {
  override readonly name = SAMPLES_ARCHIVE_INVALID;
}

/** Whether the output archive exists: listed rather than read, since GetObject on a missing key without ListBucket is AccessDenied. */
async function archiveExists(s3: S3Client, bucket: string, key: string): Promise<boolean> {
  const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: key, MaxKeys: 1 }));
  return (page.Contents ?? []).some((object) => object.Key === key);
}

interface Written {
  readonly names: string[];
  omitted: number;
  samplesJson?: Buffer;
  readonly captions: CaptionCounts;
}

/** Whether `name` still fits the bounds, given what was written; the index files only need to fit the per-file bound. */
function fits(name: string, entry: TarEntry, written: Written, bytes: number): boolean {
  if (entry.size > MAX_SAMPLE_FILE_BYTES) return false;
  if (INDEX_FILES.has(name)) return true;
  const images = written.names.filter((n) => !INDEX_FILES.has(n)).length;
  return images < MAX_SAMPLE_OBJECTS - INDEX_FILES.size && bytes + entry.size <= MAX_SAMPLE_BYTES;
}

/** The entry's data, all of it: an archive cut short inside it is refused here, before a zero-padded copy is written. */
async function readAll(data: AsyncIterable<Buffer>, entry: TarEntry): Promise<Buffer> {
  const parts: Buffer[] = [];
  let got = 0;
  for await (const part of data) {
    parts.push(part);
    got += part.length;
  }
  if (got < entry.size) throw new TarError(`the archive ends inside the data of ${entry.path}: it is truncated`);
  return Buffer.concat(parts, got);
}

/** Every sample entry of the archive written under `target`, and every caption into the dataset folder, at most CONCURRENCY requests at a time. */
async function writeSamples(s3: S3Client, storage: SampleStorage, entries: TarEntries, target: string, folder: DatasetFolderTarget | undefined): Promise<Written> {
  const written: Written = { names: [], omitted: 0, captions: { written: 0, kept: 0, omitted: 0 } };
  const inFlight: Promise<unknown>[] = [];
  const queue = async (sent: Promise<unknown>) => {
    sent.catch(() => undefined); // Handled when awaited below; a failure meanwhile is not an unhandled rejection.
    inFlight.push(sent);
    if (inFlight.length >= CONCURRENCY) await inFlight.shift();
  };
  const captions = new Set<string>();
  let bytes = 0;
  for await (const { entry, data } of entries) {
    const caption = folder === undefined ? undefined : captionPath(entry);
    if (folder !== undefined && caption !== undefined && !captions.has(caption)) {
      captions.add(caption);
      if (captions.size > MAX_CAPTIONS) written.captions.omitted += 1;
      else await queue(writeCaption(s3, folder, storage.keyArn, caption, await readAll(data, entry), written.captions));
      continue;
    }
    const name = sampleName(entry);
    if (name === undefined || written.names.includes(name)) continue;
    if (!fits(name, entry, written, bytes)) {
      written.omitted += 1;
      continue;
    }
    const body = await readAll(data, entry);
    if (!INDEX_FILES.has(name)) bytes += body.length;
    if (name === SAMPLES_JSON) written.samplesJson = body;
    written.names.push(name);
    const put = new PutObjectCommand({ Bucket: storage.bucket, Key: `${target}${name}`, Body: body, ContentType: contentType(name), ServerSideEncryption: 'aws:kms', SSEKMSKeyId: storage.keyArn, BucketKeyEnabled: true });
    await queue(s3.send(put));
  }
  await Promise.all(inFlight);
  return written;
}

/** The first prompt of samples.json, when it reads as the container writes it; anything else is no prompt, never an error. */
function firstPrompt(samplesJson: Buffer | undefined): string | undefined {
  if (samplesJson === undefined || samplesJson.length > MAX_SAMPLES_JSON_BYTES) return undefined;
  const parsed = parseJson(samplesJson.toString('utf8'));
  const prompts = isRecord(parsed) && Array.isArray(parsed.prompts) ? parsed.prompts : [];
  const first = prompts.find((p): p is Record<string, unknown> => isRecord(p) && nonEmptyString(p.prompt) !== undefined);
  return first === undefined ? undefined : String(first.prompt);
}

/** Gunzip or tar faults name the archive (SamplesArchiveInvalid); S3 and network errors keep their own names, for the state to retry. */
async function readArchive(s3: S3Client, storage: SampleStorage, key: string, target: string, folder: DatasetFolderTarget | undefined): Promise<Written> {
  const invalid = (reason: string | undefined) => new SamplesArchiveInvalid(`s3://${storage.bucket}/${key} is not a readable tar.gz (${reason}); its samples are not published.`);
  return readTarGz(s3, storage.bucket, key, (entries) => writeSamples(s3, storage, entries, target, folder), invalid);
}

export async function publishSamples(raw: unknown, s3: S3Client, storage: SampleStorage): Promise<PublishedSamples> {
  const { trainingJobName, datasetFolder } = parseEvent(raw);
  const archive = `${storage.modelsPrefix}${trainingJobName}/output/output.tar.gz`;
  const target = `${storage.modelsPrefix}${trainingJobName}/samples/`;
  // No output archive, or one without a sample/ folder: sampling was off, which is no failure.
  const written = (await archiveExists(s3, storage.bucket, archive)) ? await readArchive(s3, storage, archive, target, datasetFolder) : { names: [], omitted: 0, captions: { written: 0, kept: 0, omitted: 0 } };
  const key = (name: string) => (written.names.includes(name) ? `${target}${name}` : undefined);
  const samplesJson = key(SAMPLES_JSON);
  const contactSheet = key(CONTACT_SHEET);
  const prompt = firstPrompt(written.samplesJson);
  return {
    bucket: storage.bucket,
    prefix: target,
    count: written.names.length,
    ...(samplesJson !== undefined ? { samplesJson } : {}),
    ...(contactSheet !== undefined ? { contactSheet } : {}),
    omitted: written.omitted,
    ...(prompt !== undefined ? { prompt } : {}),
    captionsWritten: written.captions.written,
    captionsKept: written.captions.kept,
  };
}
