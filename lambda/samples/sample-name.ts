import type { TarEntry } from '../shared/tar';

/**
 * Which entries of a job's output.tar.gz are samples, and under what name they are published. The
 * container copies its `sample/` folder into /opt/ml/output/data, which SageMaker tars as it is
 * (`sample/<file>`, possibly `./sample/<file>`). Only plain files directly in that folder count:
 * a nested path, a `..`, a hidden or oddly named file, or a link is not a sample and is ignored.
 */

export const SAMPLE_FOLDER = 'sample';

/** Control characters and backslashes have no place in a kohya file name; a key with them is confusing at best. */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f\\]/;
/** S3 keys are at most 1024 bytes; a file name this long is not kohya's. */
const MAX_NAME_BYTES = 255;

/** The file name to publish `entry` as, or undefined when it is not a sample. */
export function sampleName(entry: TarEntry): string | undefined {
  if (entry.type !== 'file' || entry.path.startsWith('/')) return undefined;
  const segments = entry.path.split('/');
  while (segments[0] === '.') segments.shift();
  if (segments.length !== 2 || segments[0] !== SAMPLE_FOLDER) return undefined;
  const name = segments[1];
  if (name === '' || name.startsWith('.') || UNSAFE.test(name) || Buffer.byteLength(name) > MAX_NAME_BYTES) return undefined;
  return name;
}

const CONTENT_TYPES: Record<string, string> = { png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg', webp: 'image/webp', json: 'application/json', txt: 'text/plain; charset=utf-8' };

/** What a browser opening a presigned link should take the file for. */
export function contentType(name: string): string {
  const extension = name.slice(name.lastIndexOf('.') + 1).toLowerCase();
  return CONTENT_TYPES[extension] ?? 'application/octet-stream';
}
