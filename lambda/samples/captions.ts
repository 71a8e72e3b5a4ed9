import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { TarEntry } from '../shared/tar';
import { CAPTION_EXTENSIONS } from '../shared/caption-extensions';

/**
 * The captions a training job generated for images without one (caption_missing): the container
 * copies them to /opt/ml/output/data/captions/<path in the dataset folder>, and they are written back
 * next to their images, as `<datasetFolder><path>`, for the user to review. Never over an object that
 * is there (If-None-Match: a caption uploaded meanwhile wins), only caption files, never outside the folder.
 */

export const CAPTIONS_FOLDER = 'captions';
/** One line of BLIP's at most 40 tokens and a trigger word: a larger file is not a generated caption. */
export const MAX_CAPTION_BYTES = 4096;
/** A dataset worth captioning is hundreds of images; far more than this is not what the job wrote. */
export const MAX_CAPTIONS = 20_000;

// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f\\]/;

export interface DatasetFolderTarget {
  readonly bucket: string;
  /** Ends with '/'. */
  readonly prefix: string;
}

/** The path inside the dataset folder to write `entry` to, or undefined when it is not a generated caption. */
export function captionPath(entry: TarEntry): string | undefined {
  if (entry.type !== 'file' || entry.path.startsWith('/') || entry.size > MAX_CAPTION_BYTES) return undefined;
  const segments = entry.path.split('/');
  while (segments[0] === '.') segments.shift();
  if (segments.length < 2 || segments[0] !== CAPTIONS_FOLDER) return undefined;
  const inside = segments.slice(1);
  // No '', '.', '..' or hidden names: kohya trains no image of that name, so the job captions none.
  if (inside.some((segment) => segment === '' || segment.startsWith('.') || UNSAFE.test(segment))) return undefined;
  const path = inside.join('/');
  return CAPTION_EXTENSIONS.some((extension) => path.endsWith(extension)) ? path : undefined;
}

export interface CaptionCounts {
  written: number;
  /** Not written: the folder already had that object (a caption the user uploaded meanwhile). */
  kept: number;
  /** Beyond MAX_CAPTIONS: not written. */
  omitted: number;
}

/** Whether S3 refused the write because the object exists (412), or one is being written at the same moment (409). */
function alreadyThere(error: unknown): boolean {
  const { name, $metadata } = error as { name?: string; $metadata?: { httpStatusCode?: number } };
  return name === 'PreconditionFailed' || name === 'ConditionalRequestConflict' || $metadata?.httpStatusCode === 412 || $metadata?.httpStatusCode === 409;
}

/** Writes one caption unless its key exists, SSE-KMS with the pipeline key, as the bucket requires. */
export async function writeCaption(s3: S3Client, folder: DatasetFolderTarget, keyArn: string, path: string, body: Buffer, counts: CaptionCounts): Promise<void> {
  const put = new PutObjectCommand({
    Bucket: folder.bucket,
    Key: `${folder.prefix}${path}`,
    Body: body,
    ContentType: 'text/plain; charset=utf-8',
    IfNoneMatch: '*',
    ServerSideEncryption: 'aws:kms',
    SSEKMSKeyId: keyArn,
    BucketKeyEnabled: true,
  });
  try {
    await s3.send(put);
    counts.written += 1;
  } catch (error) {
    if (!alreadyThere(error)) throw error;
    counts.kept += 1;
  }
}
