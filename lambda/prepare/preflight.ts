import { type BucketSettings, bucketProblems, bucketSettings, setting, tooSmallForBucket } from './bucket-settings';
import { DATASET_TOML, TRAIN_JSON } from './dataset';
import { CAPTION_EXTENSION, type ConfigOptions, type DatasetConfig, datasetConfig, JSONL_NAME } from './dataset-config';
import { baseName, FolderIndex, IMAGE_EXTENSIONS, isImageName, suffix } from './folder-index';
import { JPEG_HEADER_BYTES, readAll, type ReadPaths, type Reads } from './header-reads';
import { cacheProblems, type CacheSettings } from './cache-combinations';
import { hasText, LINE_BREAK } from './python-text';
import { HYPERPARAMETER_SCHEMA } from '../shared/hyperparameters';
import type { ModelType } from '../shared/models';
import { captionTargets, type CaptionableImage } from './caption-targets';
import { listing, MAX_LISTED } from './listing';

// Where they were defined first; prepare.ts and others take them from here.
export { listing, MAX_LISTED };

/**
 * The dataset checks the training container makes (containers/training/lora_trainer/dataset.py,
 * dataset_check.py), made before any SageMaker call: by Prepare over S3 and by the CLI's `validate`
 * over a local folder. test/fixtures/datasets/ holds both sides to the same outcomes.
 */

/** A dataset folder, in S3 (Prepare) or on disk (the CLI's validate). Paths are '/'-separated, relative to the folder. */
export interface DatasetFolder {
  /** Every file of the folder (no folder markers). */
  list(): Promise<ReadonlyArray<{ readonly path: string; readonly size: number }>>;
  /** The first `bytes` bytes of a file (fewer if it is shorter); undefined if it no longer exists. */
  head(path: string, bytes: number): Promise<Uint8Array | undefined>;
}

export interface PreflightOptions {
  readonly modelType: ModelType;
  /** The effective hyperparameters (validated values), e.g. allow_missing_captions, caption_missing. */
  readonly hyperparameters: Readonly<Record<string, string | number | boolean | null>>;
  /** Bounds of the image header reads; the defaults (PREFLIGHT_LIMITS) suit a Lambda function. */
  readonly limits?: Partial<PreflightLimits>;
}

export interface PreflightLimits {
  /** Images whose header is read at most; the rest are counted in `unchecked`. */
  readonly maxImages: number;
  /** Header reads in flight at once. */
  readonly concurrency: number;
  /** Time all header reads may take together, in milliseconds. */
  readonly deadlineMs: number;
  /** Bytes read from the start of each image. */
  readonly headerBytes: number;
  /** Caption files read at most (to tell empty, blank-first-line and non-UTF-8 ones). */
  readonly maxCaptionReads: number;
}

/** A stable name for each kind of refusal, shared with the fixtures' case.json. */
export type PreflightProblemKind =
  | 'toml-invalid'
  | 'path-outside'
  | 'toml-settings'
  | 'toml-structure'
  | 'missing-folder'
  | 'metadata'
  | 'repeated-image-dir'
  | 'bucket-settings'
  | 'no-images'
  | 'undecodable'
  | 'too-small'
  | 'caption-not-utf8'
  | 'empty-caption'
  | 'missing-captions'
  | 'cache-combination';

export interface PreflightProblem {
  readonly kind: PreflightProblemKind;
  /** The offending files, relative to the folder (empty for a dataset.toml setting). */
  readonly files: readonly string[];
  readonly message: string;
}

export interface PreflightReport {
  readonly images: number;
  readonly captions: number;
  /** Files kohya will not train, each with why (e.g. "photo.Png: mixed-case extension, kohya ignores it"). */
  readonly skipped: readonly string[];
  /** Every reason the container would refuse the folder; empty when it would train it. */
  readonly problems: readonly string[];
  /** The same problems, with a stable kind and the files each names. */
  readonly findings: readonly PreflightProblem[];
  /** Images whose header was read and parsed. */
  readonly checkedImages: number;
  /** Images not checked (a bound was hit); the training container still decodes them. */
  readonly uncheckedImages: number;
  /** What was left to the container, for the user to know (e.g. a JPEG whose size lies beyond the bytes read). */
  readonly notes: readonly string[];
  /** Images without a caption file that the training job captions with BLIP (caption_missing); 0 without it. */
  readonly captionsToWrite: number;
  /** Files listed but gone when read: the folder is changing, so the answer is not final (Prepare waits and looks again). */
  readonly vanished: readonly string[];
}

/** The bounds of Prepare's reads: ~5,000 small ranged reads, 16 at a time, end well inside its 2-minute timeout. */
export const PREFLIGHT_LIMITS: PreflightLimits = {
  maxImages: 5000,
  concurrency: 16,
  deadlineMs: 40_000,
  headerBytes: 4096,
  maxCaptionReads: 5000,
};
/** dataset.toml and a metadata.jsonl are read whole, up to this; a larger one is refused (see README). */
export const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

/** Files of the dataset contract that are not training data, wherever they are (dataset_check.py CONTROL_FILES). */
const CONTROL_FILES = new Set([DATASET_TOML, TRAIN_JSON, JSONL_NAME]);

/** What kohya reads the folder as, and every problem the container would refuse it for. */
export async function preflight(folder: DatasetFolder, options: PreflightOptions): Promise<PreflightReport> {
  const limits = { ...PREFLIGHT_LIMITS, ...options.limits };
  const index = new FolderIndex(await folder.list());
  const values = hyperparameterValues(options);
  const vanished: string[] = [];
  const readText = async (path: string) => {
    const size = index.size(path) ?? 0;
    if (size > MAX_CONFIG_BYTES) throw new UnreadableConfig(path, `${path} is ${size} bytes, more than the ${MAX_CONFIG_BYTES} the pre-flight reads; split the dataset or use .txt captions`);
    // Read as bytes: the container decodes these strictly and keeps a byte-order mark (configText).
    const bytes = size === 0 ? new Uint8Array() : await folder.head(path, MAX_CONFIG_BYTES);
    if (bytes === undefined) vanished.push(path);
    return bytes === undefined ? undefined : configText(path, bytes);
  };
  let outcome;
  try {
    outcome = await datasetConfig(index, readText, values);
  } catch (error) {
    if (!(error instanceof UnreadableConfig)) throw error;
    return refusedEarly(index, [{ kind: error.kind, files: [error.path], message: error.message }]);
  }
  if ('vanished' in outcome) return { ...refusedEarly(index, []), vanished };
  if ('problems' in outcome) return refusedEarly(index, outcome.problems);
  const plan = scanPlan(outcome.config, index, values, options.modelType);
  if (plan.problems.length > 0) return refusedEarly(index, plan.problems);
  const reads = await readAll(folder, index, readPaths(plan, index), limits);
  const checked = report(plan, reads, values, index);
  // Last, as the container checks these only once every image and caption has passed.
  const findings = [...checked.findings, ...cacheProblems(outcome.config, values)];
  return { ...checked, findings, problems: findings.map((finding) => finding.message), vanished: [...vanished, ...reads.vanished] };
}

/** A dataset.toml or metadata.jsonl the container cannot read as text (it stops there). */
class UnreadableConfig extends Error {
  readonly kind: PreflightProblemKind;
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message);
    this.kind = baseName(path) === DATASET_TOML ? 'toml-invalid' : 'metadata';
  }
}

/**
 * A control file as the container reads it: strict UTF-8 (Python's read_text raises on a bad byte)
 * with a byte-order mark kept, which its TOML and JSON readers both refuse, as does this one.
 */
function configText(path: string, bytes: Uint8Array): string {
  const save = 'save it as UTF-8 (without a byte-order mark)';
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new UnreadableConfig(path, `${path} is not UTF-8 text, which the training job cannot read; ${save}`);
  }
  // smol-toml skips a byte-order mark that the container's toml reader fails on.
  if (baseName(path) === DATASET_TOML && text.startsWith('\uFEFF')) {
    throw new UnreadableConfig(path, `${path} starts with a UTF-8 byte-order mark, which the training job's TOML reader refuses; ${save}`);
  }
  return text;
}

/** The hyperparameters the container's DatasetOptions takes, with the schema's defaults. */
function hyperparameterValues(options: PreflightOptions): ConfigOptions & CacheSettings & CaptionSettings {
  const value = (key: string) => {
    const given = options.hyperparameters[key];
    if (given !== undefined && given !== null) return given;
    const fallback = HYPERPARAMETER_SCHEMA.hyperparameters[key].default;
    return fallback !== null && typeof fallback === 'object' ? fallback[options.modelType] : fallback;
  };
  return {
    resolution: Number(value('resolution')),
    batchSize: Number(value('train_batch_size')),
    numRepeats: Number(value('num_repeats')),
    allowMissingCaptions: value('allow_missing_captions') === true || value('allow_missing_captions') === 'true',
    captionMissing: value('caption_missing') === true || value('caption_missing') === 'true',
    cacheLatents: value('cache_latents') === true || value('cache_latents') === 'true',
    cacheTextEncoderOutputs: value('cache_text_encoder_outputs') === true || value('cache_text_encoder_outputs') === 'true',
  };
}

/** Where one image's caption comes from, as the container finds it. */
type CaptionSource =
  | { readonly file: string }
  /** A metadata.jsonl caption, which the container writes out as `staged` and reads back. */
  | { readonly text: string; readonly staged: string }
  | { readonly tokens: string | undefined };

interface CaptionSettings {
  readonly allowMissingCaptions: boolean;
  readonly captionMissing: boolean;
}

/** One image of one subset (an image in two subsets is trained, and counted, twice). */
interface PlannedImage extends CaptionableImage {
  readonly path: string;
  readonly settings: BucketSettings;
  readonly caption: CaptionSource;
  readonly wildcard: boolean;
}

interface ScanPlan {
  readonly images: readonly PlannedImage[];
  readonly problems: PreflightProblem[];
  /** Files kohya reads: the images of subsets with repeats and their caption files. */
  readonly used: ReadonlySet<string>;
  /** Images of subsets with 0 repeats, which kohya skips. */
  readonly unrepeated: ReadonlySet<string>;
}

/** check_images up to the pixels: each dataset's refusals of its settings, then its subsets' images and captions. */
function scanPlan(config: DatasetConfig, index: FolderIndex, values: ConfigOptions, modelType: ModelType): ScanPlan {
  const images: PlannedImage[] = [];
  const problems: PreflightProblem[] = [];
  const used = new Set<string>();
  const unrepeated = new Set<string>();
  for (const [d, dataset] of config.datasets.entries()) {
    const settings = bucketSettings(dataset.table, config.general, values.resolution);
    const first = new Map<string, number>();
    for (const [s, subset] of dataset.subsets.entries()) {
      const earlier = first.get(subset.identity);
      if (earlier !== undefined) {
        const message = `${DATASET_TOML}: datasets[${d}].subsets[${s}] has the same image_dir as subsets[${earlier}], and kohya would ignore it; merge them, or put the second in a [[datasets]] of its own`;
        problems.push({ kind: 'repeated-image-dir', files: [DATASET_TOML], message });
      } else first.set(subset.identity, s);
    }
    for (const message of bucketProblems(settings, `${DATASET_TOML}: datasets[${d}]`, modelType)) problems.push({ kind: 'bucket-settings', files: [DATASET_TOML], message });
    for (const subset of dataset.subsets) {
      const tables = [subset.table, dataset.table, config.general];
      const extension = setting('caption_extension', tables, CAPTION_EXTENSION);
      if (typeof extension !== 'string' || !extension.startsWith('.')) {
        problems.push({ kind: 'toml-settings', files: [DATASET_TOML], message: `${DATASET_TOML}: caption_extension must start with a dot, like '.txt', not ${JSON.stringify(extension)}` });
        continue;
      }
      const wildcard = Boolean(setting('enable_wildcard', tables, false));
      // kohya ascends class_tokens like any subset setting; a `<n>_<tokens>` folder sets the subset's own.
      const classTokens = subset.classTokens ?? setting('class_tokens', tables, undefined);
      const tokens = typeof classTokens === 'string' ? classTokens : undefined;
      const repeats = Number(setting('num_repeats', tables, values.numRepeats));
      const paths = subset.staged ? [...subset.staged.keys()] : index.imagesIn(subset.folder);
      if (repeats < 1) {
        for (const path of paths) unrepeated.add(path);
        continue;
      }
      for (const path of paths) {
        const caption = subset.staged ? stagedCaption(path, subset.staged.get(path), extension, index) : captionFile(path, extension, index);
        const source = caption ?? { tokens };
        used.add(path);
        if ('file' in source) used.add(source.file);
        // caption_missing writes captions in an image_dir subset without class tokens (caption_targets.py targets).
        const writable = subset.staged === undefined && !tokens && !('file' in source) ? extension : undefined;
        images.push({ path, settings, caption: source, wildcard, captionExtension: writable });
      }
    }
  }
  return { images, problems, used, unrepeated };
}

/**
 * The caption file kohya reads for an image: the same name with the caption extension or, for a
 * name of five or more '_'-separated parts (face-crop output), the name without the last four.
 * kohya splits the whole path; the channel's own path has no '_', so splitting the relative one is the same.
 */
function captionFile(image: string, extension: string, index: FolderIndex): CaptionSource | undefined {
  const base = image.slice(0, image.length - suffix(image).length);
  const parts = base.split('_');
  const candidates = [base + extension, ...(parts.length >= 5 ? [parts.slice(0, -4).join('_') + extension] : [])];
  const found = candidates.find((candidate) => index.isFile(candidate));
  return found === undefined ? undefined : { file: found };
}

/** A metadata.jsonl image's caption: its own .txt wins, else the jsonl text; the container stages both as .txt. */
function stagedCaption(image: string, text: string | undefined, extension: string, index: FolderIndex): CaptionSource | undefined {
  if (extension !== CAPTION_EXTENSION) return undefined;
  const own = image.slice(0, image.length - suffix(image).length) + CAPTION_EXTENSION;
  if (index.isFile(own)) return { file: own };
  return text === undefined ? undefined : { text, staged: image.split('/').join('__').replace(/\.[^./]*$/, CAPTION_EXTENSION) };
}

/** The images whose header is read, and the non-empty caption files read (an empty one is refused from the listing). */
function readPaths(plan: ScanPlan, index: FolderIndex): ReadPaths {
  return {
    images: [...new Set(plan.images.map((image) => image.path))].sort(),
    captions: [...new Set(plan.images.flatMap(({ caption }) => ('file' in caption && (index.size(caption.file) ?? 0) > 0 ? [caption.file] : [])))].sort(),
  };
}

/** Whether kohya gets a non-empty caption from this text: its first line, or any line with enable_wildcard; undefined when the bytes read cannot tell. */
function hasCaption(read: { text: string; complete: boolean }, wildcard: boolean): boolean | undefined {
  const lines = read.text.split(LINE_BREAK);
  const decided = wildcard ? hasText(read.text) : hasText(lines[0]);
  if (decided || read.complete || (!wildcard && lines.length > 1)) return decided;
  return undefined;
}

/** A refusal made before any image is read: the counts are of the listing only. */
function refusedEarly(index: FolderIndex, found: readonly PreflightProblem[]): PreflightReport {
  const mixedCase = index.paths().filter((path) => !IMAGE_EXTENSIONS.includes(suffix(path)) && IMAGE_EXTENSIONS.includes(suffix(path).toLowerCase()));
  // With no images at all, a mixed-case extension is the likeliest reason.
  const hint = mixedCase.length > 0 ? `; kohya does not train files with a mixed-case extension, such as ${listing(mixedCase)}: rename them` : '';
  const problems = found.map((problem) => (problem.kind === 'no-images' ? { ...problem, message: problem.message + hint } : problem));
  return {
    images: 0,
    captions: 0,
    skipped: [],
    problems: problems.map((problem) => problem.message),
    findings: problems,
    checkedImages: 0,
    uncheckedImages: index.paths().filter(isImageName).length,
    notes: [],
    captionsToWrite: 0,
    vanished: [],
  };
}

/** _refuse_problems, in the container's order (it refuses with the first): the findings name every file. */
function report(plan: ScanPlan, reads: Reads, values: CaptionSettings, index: FolderIndex): Omit<PreflightReport, 'vanished'> {
  const undecodable = new Map<string, string>();
  const tooSmall = new Map<string, string>();
  const steps = new Set<number>();
  const notUtf8 = new Set<string>();
  const empty = new Set<string>();
  const missing: string[] = [];
  let unknownCaptions = 0;
  let captions = 0;
  for (const image of plan.images) {
    const header = reads.headers.get(image.path);
    if (header?.kind === 'invalid') undecodable.set(image.path, `${image.path} (${header.reason})`);
    else if (header?.kind === 'sized' && tooSmallForBucket(image.settings, header.width, header.height)) {
      tooSmall.set(image.path, `${image.path} (${header.width}x${header.height})`);
      steps.add(image.settings.bucketResoSteps);
    }
    const caption = captionOf(image, reads, index);
    if (caption === 'not-utf8' && 'file' in image.caption) notUtf8.add(image.caption.file);
    else if (caption === 'empty') empty.add('file' in image.caption ? image.caption.file : 'staged' in image.caption ? image.caption.staged : image.path);
    else if (caption === 'missing') missing.push(image.path);
    else if (caption === 'unknown') unknownCaptions += 1;
    if (caption === 'captioned' || caption === 'unknown') captions += 1;
  }
  const findings: PreflightProblem[] = [];
  const add = (kind: PreflightProblemKind, files: readonly string[], message: string) => findings.push({ kind, files, message });
  if (undecodable.size > 0) add('undecodable', [...undecodable.keys()], `${undecodable.size} image(s) cannot be decoded: ${listing([...undecodable.values()])}. Re-export or remove them`);
  if (plan.images.length === 0) {
    add('no-images', [], `the dataset has no images (${IMAGE_EXTENSIONS.slice(0, 5).join(', ')}) in the folders its ${DATASET_TOML} names; upload at least one`);
  }
  if (tooSmall.size > 0) {
    add('too-small', [...tooSmall.keys()], `${tooSmall.size} image(s) are smaller than one bucket step, so kohya's bucket for them would be 0 px wide or high: ${listing([...tooSmall.values()])}. Use images of at least ${[...steps].sort((a, b) => a - b).join(' or ')} px per side, or set enable_bucket = false`);
  }
  if (notUtf8.size > 0) add('caption-not-utf8', [...notUtf8], `${notUtf8.size} caption file(s) are not UTF-8 text, which kohya cannot read: ${listing([...notUtf8])}. Save them as UTF-8`);
  if (empty.size > 0) add('empty-caption', [...empty], `${empty.size} caption file(s) are empty, which kohya refuses: ${listing([...empty])}. Write a caption in each, or delete them to train those images without one`);
  const uncaptioned = missingCaptions(plan, missing, values);
  findings.push(...uncaptioned.findings);
  const checked = reads.headers.size;
  return {
    images: plan.images.length,
    captions,
    skipped: skippedFiles(index, plan),
    problems: findings.map((finding) => finding.message),
    findings,
    checkedImages: checked,
    uncheckedImages: reads.uncheckedImages,
    notes: notes(reads, unknownCaptions),
    captionsToWrite: uncaptioned.captionsToWrite,
  };
}

/**
 * The images without a caption, after the checks above as in the container: with caption_missing, what the
 * job cannot caption (check_plan) or else how many it captions; then those left without one.
 */
function missingCaptions(plan: ScanPlan, missing: readonly string[], values: CaptionSettings): { findings: PreflightProblem[]; captionsToWrite: number } {
  const targets = values.captionMissing ? captionTargets(plan.images) : { paths: new Set<string>(), problems: [] };
  if (targets.problems.length > 0) {
    return { findings: targets.problems.map(({ files, message }) => ({ kind: 'missing-captions', files, message })), captionsToWrite: 0 };
  }
  const uncaptioned = missing.filter((path) => !targets.paths.has(path));
  if (uncaptioned.length === 0 || values.allowMissingCaptions) return { findings: [], captionsToWrite: targets.paths.size };
  const only = values.captionMissing ? ' (caption_missing captions only images of an image_dir subset without class_tokens)' : '';
  const message = `${uncaptioned.length} of ${plan.images.length} image(s) have no caption: ${listing(uncaptioned)}. Add a same-name ${CAPTION_EXTENSION} file for each, set class_tokens for the subset, or set the hyperparameter allow_missing_captions=true${only}`;
  return { findings: [{ kind: 'missing-captions', files: uncaptioned, message }], captionsToWrite: targets.paths.size };
}

type CaptionState = 'captioned' | 'missing' | 'empty' | 'not-utf8' | 'unknown';

function captionOf(image: PlannedImage, reads: Reads, index: FolderIndex): CaptionState {
  const source = image.caption;
  if ('tokens' in source) return source.tokens ? 'captioned' : 'missing';
  if ('text' in source) {
    // The container writes the jsonl text out as a caption file: an empty text is an empty file.
    if (source.text === '') return 'empty';
    return hasCaption({ text: source.text.replace(/\r\n?/g, '\n'), complete: true }, image.wildcard) ? 'captioned' : 'missing';
  }
  if ((index.size(source.file) ?? 0) === 0) return 'empty';
  const read = reads.captions.get(source.file);
  if (read === undefined) return 'unknown';
  if ('notUtf8' in read) return 'not-utf8';
  const has = hasCaption({ text: read.text.replace(/\r\n?/g, '\n'), complete: read.complete }, image.wildcard);
  return has === undefined ? 'unknown' : has ? 'captioned' : 'missing';
}

/** What the pre-flight did not check, so a pass is not taken for more than it is. */
function notes(reads: Reads, unknownCaptions: number): string[] {
  const out: string[] = [];
  if (reads.uncheckedImages > 0) out.push(`${reads.uncheckedImages} image(s) were not checked (more than the pre-flight reads, or past its time limit); the training job still decodes them`);
  const unsized = [...reads.headers.entries()].filter(([, header]) => header.kind === 'unsized').map(([path]) => path);
  if (unsized.length > 0) out.push(`${unsized.length} JPEG image(s) have a valid start but no size within the first ${JPEG_HEADER_BYTES} bytes (large metadata), so their size was not checked: ${listing(unsized)}`);
  if (unknownCaptions > 0) out.push(`${unknownCaptions} caption file(s) were not read (or not far enough to tell); the training job still reads them`);
  return out;
}

/** Every file kohya will not train, with why; dataset.toml, train.json and metadata.jsonl are the folder's control files. */
function skippedFiles(index: FolderIndex, plan: ScanPlan): string[] {
  return index
    .paths()
    .filter((path) => !plan.used.has(path) && !CONTROL_FILES.has(baseName(path)))
    .map((path) => `${path}: ${skipReason(path, plan)}`);
}

function skipReason(path: string, plan: ScanPlan): string {
  const extension = suffix(path);
  if (!IMAGE_EXTENSIONS.includes(extension) && IMAGE_EXTENSIONS.includes(extension.toLowerCase())) {
    return `mixed-case extension, kohya ignores it; rename it to ${extension.toLowerCase()}`;
  }
  const repeats = /^(\d+)_[^/]+\/[^/]+$/.exec(path);
  if (plan.unrepeated.has(path) || (repeats && Number(repeats[1]) < 1 && isImageName(path))) return 'in a folder or subset of 0 repeats, which kohya skips';
  if (isImageName(path) && path.split('/').slice(0, -1).some((folder) => folder.startsWith('.'))) return 'in a hidden folder, which the configuration does not train';
  if (isImageName(path)) return 'not in a folder the dataset configuration trains';
  if (IMAGE_EXTENSIONS.includes(extension)) return 'a hidden file, kohya ignores it';
  return 'not an image kohya trains, nor the caption of one';
}
