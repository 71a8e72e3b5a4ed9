import type { FolderIndex } from './folder-index';
import { type ImageHeader, readImageHeader } from './image-header';
import type { DatasetFolder, PreflightLimits } from './preflight';

/**
 * The pre-flight's reads: the first bytes of each image and caption file, bounded in count,
 * concurrency and time, so a dataset of any size ends well inside Prepare's timeout.
 */

/** A JPEG's frame header may follow large EXIF or ICC segments: it is looked for this far before being left to the container. */
export const JPEG_HEADER_BYTES = 64 * 1024;
/** Bytes of a caption file read: a caption is a line or two; only a longer file's first part is checked. */
export const CAPTION_READ_BYTES = 4096;

/** What is read: image paths and caption file paths, each sorted and unique. */
export interface ReadPaths {
  readonly images: readonly string[];
  readonly captions: readonly string[];
}

/** What a caption file says, once read. */
export type CaptionRead = { readonly notUtf8: true } | { readonly text: string; readonly complete: boolean };

export interface Reads {
  readonly headers: ReadonlyMap<string, ImageHeader>;
  readonly captions: ReadonlyMap<string, CaptionRead>;
  readonly vanished: string[];
  readonly uncheckedImages: number;
  readonly uncheckedCaptions: number;
}

/**
 * The first bytes of each image and each non-empty caption file, at most `concurrency` at a time,
 * the first `maxImages` images and `maxCaptionReads` captions, until `deadlineMs`; what is left
 * unread is counted, never passed silently.
 */
export async function readAll(folder: DatasetFolder, index: FolderIndex, paths: ReadPaths, limits: PreflightLimits): Promise<Reads> {
  const headers = new Map<string, ImageHeader>();
  const captions = new Map<string, CaptionRead>();
  const vanished: string[] = [];
  const { images: imagePaths, captions: captionPaths } = paths;
  const head = async (path: string, bytes: number) => {
    const read = await folder.head(path, bytes);
    if (read === undefined) vanished.push(path);
    const size = index.size(path) ?? 0;
    return read === undefined ? undefined : { bytes: read, complete: read.length < bytes || read.length >= size, size };
  };
  const tasks = [
    ...imagePaths.slice(0, limits.maxImages).map((path) => async () => {
      const header = await imageHeader(path, head, limits.headerBytes);
      if (header) headers.set(path, header);
    }),
    ...captionPaths.slice(0, limits.maxCaptionReads).map((path) => async () => {
      const read = await head(path, CAPTION_READ_BYTES);
      if (read) captions.set(path, decodeCaption(read.bytes, read.complete));
    }),
  ];
  await runBounded(tasks, limits.concurrency, limits.deadlineMs);
  return {
    headers,
    captions,
    vanished,
    uncheckedImages: imagePaths.filter((path) => !headers.has(path) && !vanished.includes(path)).length,
    uncheckedCaptions: captionPaths.filter((path) => !captions.has(path) && !vanished.includes(path)).length,
  };
}

type Head = (path: string, bytes: number) => Promise<{ bytes: Uint8Array; complete: boolean; size: number } | undefined>;

/** A JPEG whose frame header is not in the first bytes is read again, further, before its size is left unknown. */
async function imageHeader(path: string, head: Head, headerBytes: number): Promise<ImageHeader | undefined> {
  const first = await head(path, headerBytes);
  if (!first) return undefined;
  const header = readImageHeader(first.bytes, first.complete, first.size);
  if (header.kind !== 'unsized' || headerBytes >= JPEG_HEADER_BYTES) return header;
  const longer = await head(path, JPEG_HEADER_BYTES);
  return longer ? readImageHeader(longer.bytes, longer.complete, longer.size) : undefined;
}

/** Runs the tasks `concurrency` at a time; those not finished by the deadline are abandoned (their results never recorded). */
async function runBounded(tasks: ReadonlyArray<() => Promise<void>>, concurrency: number, deadlineMs: number): Promise<void> {
  const end = Date.now() + deadlineMs;
  let next = 0;
  let open = true;
  const worker = async () => {
    while (open && next < tasks.length && Date.now() < end) await tasks[next++]();
  };
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, deadlineMs);
  });
  try {
    await Promise.race([Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker)), deadline]);
  } finally {
    open = false;
    clearTimeout(timer);
  }
}

/** A caption as kohya reads it: strict UTF-8 (a BOM kept, as Python keeps it); of a partial read only its first bytes. */
function decodeCaption(bytes: Uint8Array, complete: boolean): CaptionRead {
  try {
    return { text: new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes, { stream: !complete }), complete };
  } catch {
    return { notUtf8: true };
  }
}
