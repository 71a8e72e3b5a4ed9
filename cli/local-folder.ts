import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { DatasetFolder } from '../lambda/prepare/preflight';

/**
 * A dataset folder on local disk, as the pre-flight reads one in S3: every file below it, by its
 * '/'-separated path. What `validate` checks is exactly what `upload` sends.
 */

export interface LocalFile {
  /** '/'-separated, relative to the folder: the object key's part below the dataset prefix. */
  readonly path: string;
  readonly size: number;
  /** Where it is on disk. */
  readonly absolute: string;
}

export class LocalFolder implements DatasetFolder {
  private files: Promise<LocalFile[]> | undefined;

  constructor(readonly root: string) {}

  /** Every file, sorted by path; symbolic links are followed (a loop is a clear error). */
  list(): Promise<LocalFile[]> {
    this.files ??= walk(this.root, '', new Set()).then((files) => files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)));
    return this.files;
  }

  async head(file: string, bytes: number): Promise<Uint8Array | undefined> {
    return readStart(this.resolve(file), bytes);
  }

  async text(file: string, maxBytes: number): Promise<string | undefined> {
    const bytes = await readStart(this.resolve(file), maxBytes + 1);
    return bytes === undefined ? undefined : Buffer.from(bytes).toString('utf8');
  }

  private resolve(file: string): string {
    const absolute = path.resolve(this.root, ...file.split('/'));
    // The pre-flight only asks for files it listed; a path outside the folder is a bug, not a read.
    if (!absolute.startsWith(path.resolve(this.root) + path.sep)) throw new Error(`${file} is outside the dataset folder ${this.root}`);
    return absolute;
  }
}

/** The folder's existence as a directory, or why it cannot be used. */
export async function folderProblem(root: string): Promise<string | undefined> {
  try {
    const stat = await fs.stat(root);
    return stat.isDirectory() ? undefined : `${root} is not a folder: give the dataset folder (images, .txt captions, dataset.toml)`;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? `${root} does not exist` : `${root} cannot be read: ${(error as Error).message}`;
  }
}

async function walk(directory: string, relative: string, visiting: Set<string>): Promise<LocalFile[]> {
  const real = await fs.realpath(directory);
  if (visiting.has(real)) throw new Error(`${directory} links back to a folder it is in (a symbolic link loop); remove the link`);
  visiting.add(real);
  const entries = await fs.readdir(directory, { withFileTypes: true });
  const files: LocalFile[] = [];
  for (const entry of entries) {
    const absolute = path.join(directory, entry.name);
    const child = relative === '' ? entry.name : `${relative}/${entry.name}`;
    const stat = entry.isSymbolicLink() ? await fs.stat(absolute) : entry;
    if (stat.isDirectory()) files.push(...(await walk(absolute, child, visiting)));
    else if (stat.isFile()) files.push({ path: child, size: (await fs.stat(absolute)).size, absolute });
  }
  visiting.delete(real);
  return files;
}

async function readStart(file: string, bytes: number): Promise<Uint8Array | undefined> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  try {
    const buffer = Buffer.alloc(Math.max(0, bytes));
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}
