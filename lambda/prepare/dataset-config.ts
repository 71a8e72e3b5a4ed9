import { parse, TomlError } from 'smol-toml';
import { DATASET_TOML } from './dataset';
import { documentProblems, isTable } from './dataset-schema';
import { confine, type FolderIndex, IMAGE_EXTENSIONS, parentOf, suffix } from './folder-index';
import { hasText, LINE_BREAK } from './python-text';
import type { PreflightProblem, PreflightProblemKind } from './preflight';

/**
 * The kohya dataset configuration the training container trains on (dataset.py prepare_dataset):
 * the user's dataset.toml with its paths confined to the folder, or the one generated from the
 * folder layout; every refusal it makes from the text and the listing alone.
 */

export const JSONL_NAME = 'metadata.jsonl';
export const CAPTION_EXTENSION = '.txt';
/** kohya's `<repeats>_<class tokens>` folder names. */
const REPEATS_FOLDER = /^(\d+)_(.+)$/;

export type Table = Readonly<Record<string, unknown>>;

export interface ConfigSubset {
  readonly table: Table;
  /** image_dir, relative to the folder ('' is the folder itself). */
  readonly folder: string;
  /** What kohya compares to find a repeated image_dir (staged folders are each their own). */
  readonly identity: string;
  readonly classTokens?: string;
  /** For a metadata.jsonl subset: the images it stages, each with the jsonl caption if any. */
  readonly staged?: ReadonlyMap<string, string | undefined>;
}

export interface ConfigDataset {
  readonly table: Table;
  readonly subsets: readonly ConfigSubset[];
}

export interface DatasetConfig {
  readonly general: Table;
  readonly datasets: readonly ConfigDataset[];
  /** "dataset.toml", or how the container generates it. */
  readonly source: string;
}

/** What the container's hyperparameters give the dataset (DatasetOptions). */
export interface ConfigOptions {
  readonly resolution: number;
  readonly batchSize: number;
  readonly numRepeats: number;
}

/** Reads a small text file; undefined when it vanished since it was listed. */
export type ReadText = (path: string) => Promise<string | undefined>;

export type ConfigOutcome = { readonly config: DatasetConfig } | { readonly problems: PreflightProblem[] } | { readonly vanished: string };

class Refusal extends Error {
  constructor(
    readonly kind: PreflightProblemKind,
    message: string,
    readonly files: readonly string[] = [],
  ) {
    super(message);
  }
}

/** The configuration, or the first refusal the container would make building it (it stops at the first). */
export async function datasetConfig(index: FolderIndex, read: ReadText, options: ConfigOptions): Promise<ConfigOutcome> {
  try {
    const text = index.isFile(DATASET_TOML) ? await read(DATASET_TOML) : '';
    if (text === undefined) return { vanished: DATASET_TOML };
    const document = text === '' ? {} : parseToml(text);
    const config = Object.keys(document).length > 0 ? await confined(document, index, read) : await generated(index, read, options, index.isFile(DATASET_TOML));
    return 'vanished' in config ? config : { config: fitBuckets(config, options) };
  } catch (error) {
    if (!(error instanceof Refusal)) throw error;
    return { problems: [{ kind: error.kind, files: error.files, message: error.message }] };
  }
}

function parseToml(text: string): Record<string, unknown> {
  try {
    return parse(text, { integersAsBigInt: true }) as Record<string, unknown>;
  } catch (error) {
    if (!(error instanceof TomlError)) throw error;
    const reason = error.message.split('\n')[0].replace(/^Invalid TOML document: /, '');
    throw new Refusal('toml-invalid', `${DATASET_TOML}: it is not valid TOML: ${reason} at line ${error.line}, column ${error.column}; an empty ${DATASET_TOML} uses the default configuration`, [DATASET_TOML]);
  }
}

/** _confine_user_config: keys and values, the structure, then each subset's paths in order. */
async function confined(document: Record<string, unknown>, index: FolderIndex, read: ReadText): Promise<DatasetConfig | { vanished: string }> {
  const keyProblems = documentProblems(document);
  if (keyProblems.length > 0) throw new Refusal('toml-settings', `${DATASET_TOML}: ${keyProblems.join('; ')}`, [DATASET_TOML]);
  const structure = (message: string) => new Refusal('toml-structure', `${DATASET_TOML}: ${message}`, [DATASET_TOML]);
  const datasets = document.datasets;
  if (!Array.isArray(datasets) || datasets.length === 0) {
    throw structure('it has no [[datasets]] table; add one with a [[datasets.subsets]] image_dir, or leave the file empty');
  }
  const result: ConfigDataset[] = [];
  for (const [d, dataset] of datasets.entries()) {
    const subsets = isTable(dataset) ? dataset.subsets : undefined;
    if (!Array.isArray(subsets) || subsets.length === 0) throw structure(`datasets[${d}] has no [[datasets.subsets]]; give it at least one subset with an image_dir`);
    const confinedSubsets: ConfigSubset[] = [];
    for (const [s, subset] of subsets.entries()) {
      const configured = await confinedSubset(subset, `datasets[${d}].subsets[${s}]`, index, read);
      if ('vanished' in configured) return configured;
      confinedSubsets.push(configured);
    }
    result.push({ table: dataset as Table, subsets: confinedSubsets });
  }
  return { general: isTable(document.general) ? document.general : {}, datasets: result, source: DATASET_TOML };
}

async function confinedSubset(subset: unknown, where: string, index: FolderIndex, read: ReadText): Promise<ConfigSubset | { vanished: string }> {
  if (!isTable(subset) || (!('image_dir' in subset) && !('metadata_file' in subset))) {
    throw new Refusal('toml-structure', `${DATASET_TOML}: ${where} needs an image_dir (a folder of images and .txt captions)`, [DATASET_TOML]);
  }
  const paths: Record<string, string> = {};
  for (const key of ['image_dir', 'metadata_file'] as const) {
    if (!(key in subset)) continue;
    const value = subset[key];
    if (typeof value !== 'string') throw new Refusal('toml-structure', `${DATASET_TOML}: ${where}.${key} must be a string path`, [DATASET_TOML]);
    paths[key] = insideFolder(value, '', `${where}.${key}`);
  }
  const metadata = paths.metadata_file;
  if (metadata !== undefined) {
    if (suffix(metadata) !== '.jsonl') {
      throw new Refusal('metadata', `${DATASET_TOML}: ${where}.metadata_file must be a Hugging Face imagefolder ${JSONL_NAME}; for kohya's own metadata JSON use an image_dir with .txt captions instead`, [DATASET_TOML]);
    }
    if (!index.isFile(metadata)) throw new Refusal('metadata', `${DATASET_TOML}: ${where}.metadata_file '${metadata}' does not exist`, [metadata]);
  }
  const folder = paths.image_dir ?? parentOf(metadata);
  if (!index.isFolder(folder)) {
    throw new Refusal('missing-folder', `${DATASET_TOML}: ${where}.image_dir '${folder}' is not a folder in the dataset`, [folder]);
  }
  const classTokens = typeof subset.class_tokens === 'string' ? subset.class_tokens : undefined;
  if (metadata === undefined) return { table: subset, folder, identity: folder, classTokens };
  const staged = await stagedImages(metadata, folder, index, read);
  return 'vanished' in staged ? staged : { table: subset, folder, identity: `staged:${where}`, classTokens, staged: staged.images };
}

/** A path of dataset.toml inside the folder, or the container's refusal of it. */
function insideFolder(value: string, base: string, what: string): string {
  const mapped = confine(value, base);
  if ('path' in mapped) return mapped.path;
  const message =
    mapped.problem === 'absolute'
      ? `${what} '${value}' is outside the dataset folder; write it relative to the folder (e.g. 'images') or under /opt/ml/input/data/dataset/`
      : `${what} '${value}' leads outside the dataset folder; only paths inside it can be trained on`;
  throw new Refusal('path-outside', `${DATASET_TOML}: ${message}`, [DATASET_TOML]);
}

/**
 * stage_jsonl: the images a metadata.jsonl lists (with their captions) plus the images beside it in
 * `folder`; each line must name an image inside the jsonl's folder.
 */
async function stagedImages(jsonl: string, folder: string, index: FolderIndex, read: ReadText): Promise<{ images: Map<string, string | undefined> } | { vanished: string }> {
  const text = await read(jsonl);
  if (text === undefined) return { vanished: jsonl };
  const base = parentOf(jsonl);
  const captions = new Map<string, string>();
  const refuse = (message: string) => new Refusal('metadata', message, [jsonl]);
  for (const [number, line] of text.split(LINE_BREAK).entries()) {
    if (!hasText(line)) continue;
    const where = `${jsonl} line ${number + 1}`;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch (error) {
      throw refuse(`${where} is not JSON: ${(error as Error).message}`);
    }
    if (!isTable(record) || typeof record.file_name !== 'string' || typeof record.text !== 'string') {
      throw refuse(`${where} needs "file_name" and "text" strings, as a Hugging Face imagefolder has`);
    }
    const image = confine(record.file_name, base);
    if (!('path' in image) || image.path === '') {
      throw new Refusal('path-outside', `${where} file_name '${record.file_name}' leads outside the dataset folder`, [jsonl]);
    }
    if (!index.isFile(image.path)) throw refuse(`${where} names '${record.file_name}', which is not in the dataset`);
    if (!IMAGE_EXTENSIONS.includes(suffix(image.path))) {
      throw refuse(`${where} names '${record.file_name}', which is not an image kohya trains (${IMAGE_EXTENSIONS.slice(0, 5).join(', ')})`);
    }
    captions.set(image.path, record.text);
  }
  const images = new Map<string, string | undefined>();
  for (const image of [...new Set([...captions.keys(), ...index.imagesIn(folder)])].sort()) images.set(image, captions.get(image));
  return { images };
}

/** _generate_config: a metadata.jsonl or images at the top, then each first-level folder. */
async function generated(index: FolderIndex, read: ReadText, options: ConfigOptions, tomlPresent: boolean): Promise<DatasetConfig | { vanished: string }> {
  const subsets: ConfigSubset[] = [];
  let covered = new Set<string>();
  const defaults = { num_repeats: BigInt(options.numRepeats) };
  if (index.isFile(JSONL_NAME)) {
    const staged = await stagedImages(JSONL_NAME, '', index, read);
    if ('vanished' in staged) return staged;
    covered = new Set([...staged.images.keys()].filter((image) => staged.images.get(image) !== undefined).map(parentOf));
    subsets.push({ table: defaults, folder: '', identity: 'staged:root', staged: staged.images });
  } else if (index.imagesIn('').length > 0) {
    subsets.push({ table: defaults, folder: '', identity: '' });
  }
  for (const folder of index.topFolders()) {
    if (folder.startsWith('.') || covered.has(folder) || index.imagesIn(folder).length === 0) continue;
    const match = REPEATS_FOLDER.exec(folder);
    if (match && Number(match[1]) < 1) continue; // kohya skips a folder of no repeats
    subsets.push(
      match
        ? { table: { num_repeats: BigInt(match[1]), class_tokens: match[2] }, folder, identity: folder, classTokens: match[2] }
        : { table: defaults, folder, identity: folder },
    );
  }
  if (subsets.length === 0) {
    throw new Refusal(
      'no-images',
      `the dataset folder has no images (${IMAGE_EXTENSIONS.slice(0, 5).join(', ')}, in lower or upper case) at its top level or in its first-level subfolders; upload images with same-name .txt captions`,
    );
  }
  const dataset = { resolution: BigInt(options.resolution), batch_size: BigInt(options.batchSize), enable_bucket: true, bucket_no_upscale: true };
  const source = tomlPresent ? `an empty ${DATASET_TOML}` : `the folder layout (no ${DATASET_TOML})`;
  return { general: { caption_extension: CAPTION_EXTENSION }, datasets: [{ table: dataset, subsets }], source };
}

/** The container defaults the caption extension, and fits max_bucket_reso to a resolution over 1024. */
function fitBuckets(config: DatasetConfig, options: ConfigOptions): DatasetConfig {
  const general: Table = { caption_extension: CAPTION_EXTENSION, ...config.general };
  const datasets = config.datasets.map((dataset) => {
    const resolution = dataset.table.resolution ?? general.resolution ?? BigInt(options.resolution);
    const largest = Array.isArray(resolution) ? Math.max(...resolution.map(Number)) : Number(resolution);
    const fit = largest > 1024 && !('max_bucket_reso' in dataset.table) && !('max_bucket_reso' in general);
    return fit ? { ...dataset, table: { ...dataset.table, max_bucket_reso: BigInt(largest) } } : dataset;
  });
  return { ...config, general, datasets };
}
