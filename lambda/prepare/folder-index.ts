/**
 * A dataset folder's listing, asked the questions the training container asks its disk: is this a
 * file, a folder, which images does a folder hold (kohya's glob), what does a path in dataset.toml
 * mean. Paths are '/'-separated and relative to the folder; '' is the folder itself.
 */

/** Exactly what kohya-ss globs for (dataset_check.py IMAGE_EXTENSIONS): lower or upper case, not mixed. */
export const IMAGE_EXTENSIONS: readonly string[] = ['.png', '.jpg', '.jpeg', '.webp', '.bmp', '.PNG', '.JPG', '.JPEG', '.WEBP', '.BMP'];
/** Where SageMaker mounts the dataset channel; dataset.toml paths resolve against it, as in the container. */
export const CHANNEL_PATH = '/opt/ml/input/data/dataset';
/** The prefix of every SageMaker input channel, which guides write toml paths against. */
const CHANNELS_ROOT = ['opt', 'ml', 'input', 'data'];

/** The last '.'-suffix of a name, as Python's PurePath.suffix gives it ('' for none or a leading dot only). */
export function suffix(name: string): string {
  const base = name.slice(name.lastIndexOf('/') + 1);
  const dot = base.lastIndexOf('.');
  return dot > 0 && dot < base.length - 1 ? base.slice(dot) : '';
}

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

export function parentOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

export function join(folder: string, name: string): string {
  return folder === '' ? name : `${folder}/${name}`;
}

/** A file kohya trains as an image: an image extension, not hidden. */
export function isImageName(name: string): boolean {
  return !baseName(name).startsWith('.') && IMAGE_EXTENSIONS.includes(suffix(name));
}

export class FolderIndex {
  private readonly sizes = new Map<string, number>();
  private readonly folders = new Set<string>(['']);
  private readonly children = new Map<string, string[]>();

  constructor(files: ReadonlyArray<{ readonly path: string; readonly size: number }>) {
    for (const { path, size } of files) {
      this.sizes.set(path, size);
      const folder = parentOf(path);
      this.children.set(folder, [...(this.children.get(folder) ?? []), path]);
      for (let at = folder; at !== ''; at = parentOf(at)) this.folders.add(at);
    }
    for (const list of this.children.values()) list.sort();
  }

  /** Every file, sorted. */
  paths(): string[] {
    return [...this.sizes.keys()].sort();
  }

  size(path: string): number | undefined {
    return this.sizes.get(path);
  }

  isFile(path: string): boolean {
    return this.sizes.has(path);
  }

  isFolder(path: string): boolean {
    return this.folders.has(path);
  }

  /** The images directly in `folder`, sorted (dataset_check.images_in). */
  imagesIn(folder: string): string[] {
    return (this.children.get(folder) ?? []).filter(isImageName);
  }

  /** The first-level folders, sorted. */
  topFolders(): string[] {
    return [...this.folders].filter((f) => f !== '' && !f.includes('/')).sort();
  }
}

export type Confined = { readonly path: string } | { readonly problem: 'absolute' | 'escapes' };

/**
 * The folder path a dataset.toml path means, as the container's inside_channel maps it: relative
 * paths against `base` (a folder of the dataset), absolute ones under /opt/ml/input/data/<any
 * channel>/ onto the dataset folder; anything resolving outside `base` is refused.
 */
export function confine(value: string, base: string): Confined {
  // PurePosixPath: exactly two leading slashes are a root of their own; '' and '.' parts vanish.
  const doubleRoot = /^\/\/(?!\/)/.test(value);
  const parts = value.split('/').filter((part) => part !== '' && part !== '.');
  let relative: string[];
  if (value.startsWith('/')) {
    if (doubleRoot || !CHANNELS_ROOT.every((part, index) => parts[index] === part)) return { problem: 'absolute' };
    relative = parts.slice(CHANNELS_ROOT.length + 1); // drops the channel name the author used
  } else {
    relative = parts;
  }
  const channel = CHANNEL_PATH.split('/').filter(Boolean);
  const baseParts = [...channel, ...(base === '' ? [] : base.split('/'))];
  const resolved = [...baseParts];
  for (const part of relative) {
    if (part === '..') resolved.pop();
    else resolved.push(part);
  }
  if (resolved.length < baseParts.length || baseParts.some((part, index) => resolved[index] !== part)) return { problem: 'escapes' };
  return { path: resolved.slice(channel.length).join('/') };
}
