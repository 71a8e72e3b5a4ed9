import { parse, TomlError } from 'smol-toml';

/**
 * What can be told about a dataset folder from its listing and its small control files, before a
 * paid training job looks at it. The training container (containers/training/lora_trainer/dataset.py)
 * does the deep checks: decoding every image, matching captions, confining the toml's paths.
 */

/** One object of the folder's listing. */
export interface ListedObject {
  readonly key: string;
  readonly size: number;
  readonly lastModified: Date;
}

/**
 * The file the container reads its kohya dataset configuration from. It is not the deploy-time
 * `triggerFileName`: the container reads this name whatever object triggered the run.
 */
export const DATASET_TOML = 'dataset.toml';
export const TRAIN_JSON = 'train.json';
/** train.json and dataset.toml are a few hundred bytes; a megabyte is a mistake, not a configuration. */
export const MAX_CONTROL_FILE_BYTES = 1024 * 1024;

/** Exactly what kohya-ss globs for (dataset.py IMAGE_EXTENSIONS): lower or upper case, not mixed. */
const IMAGE_EXTENSIONS = new Set(['.png', '.jpg', '.jpeg', '.webp', '.bmp', '.PNG', '.JPG', '.JPEG', '.WEBP', '.BMP']);
const CAPTION_EXTENSION = '.txt';
/** A Hugging Face imagefolder's captions (dataset.py JSONL_NAME). */
const METADATA_JSONL = 'metadata.jsonl';
/** kohya's `<repeats>_<class tokens>` folder names; `0_…` folders are skipped. */
const REPEATS_FOLDER = /^(\d+)_(.+)$/;

function extension(name: string): string {
  const dot = name.lastIndexOf('.');
  return dot > 0 ? name.slice(dot) : '';
}

function isImage(name: string): boolean {
  return !name.startsWith('.') && IMAGE_EXTENSIONS.has(extension(name));
}

/** The folder's files (folder markers left out), by their path inside the folder. */
export function folderFiles(objects: readonly ListedObject[], prefix: string): Map<string, ListedObject> {
  const files = new Map<string, ListedObject>();
  for (const object of objects) {
    if (object.key.startsWith(prefix) && !object.key.endsWith('/')) files.set(object.key.slice(prefix.length), object);
  }
  return files;
}

/** The object changed last, or undefined for an empty listing. */
export function newest(objects: readonly ListedObject[]): ListedObject | undefined {
  let latest: ListedObject | undefined;
  for (const object of objects) {
    // Ties go to the smaller key, so the reason given is the same on every call.
    if (!latest || object.lastModified > latest.lastModified || (+object.lastModified === +latest.lastModified && object.key < latest.key)) {
      latest = object;
    }
  }
  return latest;
}

export interface ImageCount {
  readonly images: number;
  /** Images with a non-empty same-name `.txt` caption beside them. */
  readonly captions: number;
  /** Where the images were looked for, for a message. */
  readonly where: string;
  /** Files that look like images kohya would not train (a mixed-case extension such as `.Png`). */
  readonly ignoredImages: string[];
}

/**
 * Counts the images the container would train. Without a dataset configuration of the user's own
 * (no dataset.toml, or one with no tables) the container generates one: images at the top of the
 * folder and in each first-level subfolder, except hidden ones and kohya's `0_…` folders, are all it
 * trains, so those are all that count. A user's dataset.toml (or a metadata.jsonl) may name any
 * subfolder, so then images anywhere in the folder count: never fewer than the container finds.
 */
export function countImages(files: ReadonlyMap<string, ListedObject>, ownConfiguration: boolean): ImageCount {
  const anywhere = ownConfiguration || files.has(METADATA_JSONL);
  const counted = [...files.keys()].filter((path) => {
    const segments = path.split('/');
    const name = segments[segments.length - 1];
    if (!isImage(name)) return false;
    if (anywhere) return true;
    if (segments.length === 1) return true;
    if (segments.length > 2 || segments[0].startsWith('.')) return false;
    const repeats = REPEATS_FOLDER.exec(segments[0]);
    return !(repeats && Number(repeats[1]) < 1);
  });
  const captions = counted.filter((path) => {
    const caption = files.get(path.slice(0, path.length - extension(path).length) + CAPTION_EXTENSION);
    return caption !== undefined && caption.size > 0;
  }).length;
  const lowered = [...files.keys()].filter((path) => {
    const name = path.split('/').pop() ?? '';
    const ext = extension(name);
    return !name.startsWith('.') && !IMAGE_EXTENSIONS.has(ext) && IMAGE_EXTENSIONS.has(ext.toLowerCase());
  });
  return {
    images: counted.length,
    captions,
    where: anywhere ? 'anywhere in' : 'at the top of or in a first-level subfolder of',
    ignoredImages: lowered.sort().slice(0, 5),
  };
}

/** Why a dataset.toml cannot be used, or undefined; `empty` tells whether it has no tables at all. */
export function checkDatasetToml(text: string): { problem: string } | { empty: boolean } {
  let document: Record<string, unknown>;
  try {
    document = parse(text);
  } catch (error) {
    if (!(error instanceof TomlError)) throw error;
    const reason = error.message.split('\n')[0].replace(/^Invalid TOML document: /, '');
    return { problem: `it is not valid TOML: ${reason} at line ${error.line}, column ${error.column}` };
  }
  const problems: string[] = [];
  const isTable = (value: unknown) => value !== null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof Date);
  const tables = (value: unknown) => Array.isArray(value) && value.every(isTable);
  if ('general' in document && !isTable(document.general)) problems.push('"general" must be a table ([general])');
  if ('datasets' in document) {
    if (!tables(document.datasets)) problems.push('"datasets" must be an array of tables ([[datasets]])');
    else {
      (document.datasets as Record<string, unknown>[]).forEach((dataset, index) => {
        if ('subsets' in dataset && !tables(dataset.subsets)) {
          problems.push(`"subsets" of datasets[${index}] must be an array of tables ([[datasets.subsets]])`);
        }
      });
    }
  }
  if (problems.length > 0) return { problem: problems.join('; ') };
  return { empty: Object.keys(document).length === 0 };
}
