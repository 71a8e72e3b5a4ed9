/**
 * The dataset.toml keys and value types the training container accepts
 * (containers/training/lora_trainer/dataset_schema.py, itself held to kohya's ConfigSanitizer), so
 * a wrong key fails in Prepare instead of in the paid job. The TOML is parsed with integers as
 * bigint, so `1` and `1.0` stay apart as they do in Python (kohya refuses an integer for a float key).
 */

interface Rule {
  readonly accepts: (value: unknown) => boolean;
  /** What the message says is allowed. */
  readonly allowed: string;
}

const isInt = (value: unknown): value is bigint => typeof value === 'bigint';
const isFloat = (value: unknown): value is number => typeof value === 'number';
const isNumber = (value: unknown) => isInt(value) || isFloat(value);
/** A TOML table: smol-toml gives dates as Date objects, which are not tables. */
export const isTable = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof Date);

function whole(minimum: number, why = ''): Rule {
  return { accepts: (v) => isInt(v) && v >= BigInt(minimum), allowed: `a whole number of ${minimum} or more${why}` };
}

const FLAG: Rule = { accepts: (v) => typeof v === 'boolean', allowed: 'true or false' };
const TEXT: Rule = { accepts: (v) => typeof v === 'string', allowed: 'a quoted string' };
const TABLE: Rule = { accepts: isTable, allowed: 'a table' };
const DECIMAL: Rule = { accepts: isFloat, allowed: 'a number with a decimal point, like 1.0' };
const NUMBER: Rule = { accepts: isNumber, allowed: 'a number' };
const FRACTION: Rule = { accepts: (v) => isNumber(v) && Number(v) >= 0 && Number(v) <= 1, allowed: 'a number from 0 to 1' };
const SIZE: Rule = {
  accepts: (v) => (Array.isArray(v) && v.length === 2 ? v : [v]).every((side) => isInt(side) && side >= 1n),
  allowed: 'a whole number of pixels, or [width, height]',
};
const CROP_RANGE: Rule = { accepts: (v) => Array.isArray(v) && v.length === 2 && v.every(isFloat), allowed: 'two numbers with decimal points, like [0.5, 1.0]' };

/** Keys of [[datasets]] and [general]. */
const DATASET_RULES: Record<string, Rule> = {
  batch_size: whole(1),
  bucket_no_upscale: FLAG,
  bucket_reso_steps: whole(1),
  enable_bucket: FLAG,
  max_bucket_reso: whole(1),
  min_bucket_reso: whole(1),
  validation_seed: whole(0),
  validation_split: DECIMAL,
  resolution: SIZE,
  network_multiplier: DECIMAL,
  resize_interpolation: TEXT,
};
/** Keys of every level, a subset's own winning. */
const ASCENDABLE_RULES: Record<string, Rule> = {
  color_aug: FLAG,
  face_crop_aug_range: CROP_RANGE,
  flip_aug: FLAG,
  num_repeats: whole(0, ' (0 skips the subset)'),
  random_crop: FLAG,
  shuffle_caption: FLAG,
  keep_tokens: whole(0),
  keep_tokens_separator: TEXT,
  secondary_separator: TEXT,
  caption_separator: TEXT,
  enable_wildcard: FLAG,
  token_warmup_min: whole(0),
  token_warmup_step: NUMBER,
  caption_prefix: TEXT,
  caption_suffix: TEXT,
  custom_attributes: TABLE,
  resize_interpolation: TEXT,
  caption_dropout_every_n_epochs: whole(0),
  caption_dropout_rate: FRACTION,
  caption_tag_dropout_rate: FRACTION,
  caption_extension: TEXT,
  class_tokens: TEXT,
  cache_info: FLAG,
};
const SUBSET_RULES: Record<string, Rule> = { image_dir: TEXT, is_reg: FLAG, alpha_mask: FLAG, metadata_file: TEXT };

export type TableLevel = 'general' | 'datasets' | 'subsets';

const RULES: Record<TableLevel, Record<string, Rule>> = {
  general: { ...DATASET_RULES, ...ASCENDABLE_RULES },
  datasets: { ...DATASET_RULES, ...ASCENDABLE_RULES },
  subsets: { ...ASCENDABLE_RULES, ...SUBSET_RULES },
};

function allowedKeys(level: TableLevel): Set<string> {
  return new Set([...Object.keys(RULES[level]), ...(level === 'datasets' ? ['subsets'] : [])]);
}

/** One line per key kohya does not know and per value of the wrong type or range, each with its place (check_keys). */
export function tableProblems(table: unknown, level: TableLevel, where: string): string[] {
  if (!isTable(table)) return [`${where} must be a table`];
  const allowed = allowedKeys(level);
  const problems: string[] = [];
  for (const key of Object.keys(table).filter((k) => !allowed.has(k)).sort()) {
    const elsewhere = (['general', 'datasets', 'subsets'] as const).filter((other) => allowedKeys(other).has(key));
    problems.push(`${where}.${key} is not a kohya dataset setting${elsewhere.length > 0 ? ` (it belongs in ${elsewhere.join(' or ')})` : ''}`);
  }
  for (const [key, value] of Object.entries(table)) {
    const rule = Object.hasOwn(RULES[level], key) ? RULES[level][key] : undefined;
    if (rule && !rule.accepts(value)) {
      problems.push(`${where}.${key} = ${shown(value)} must be ${rule.allowed}${typeof value === 'string' ? ', without quotes' : ''}`);
    }
  }
  return problems;
}

/** Every key problem of the document, and the validation keys the container refuses. */
export function documentProblems(document: Record<string, unknown>): string[] {
  const problems = Object.keys(document)
    .filter((key) => key !== 'general' && key !== 'datasets')
    .sort()
    .map((key) => `top-level key '${key}' is not [general] or [[datasets]]`);
  if ('general' in document) problems.push(...tableProblems(document.general, 'general', 'general'));
  const datasets = Array.isArray(document.datasets) ? (document.datasets as unknown[]) : [];
  datasets.forEach((dataset, d) => {
    problems.push(...tableProblems(dataset, 'datasets', `datasets[${d}]`));
    const subsets = isTable(dataset) ? dataset.subsets : undefined;
    if (Array.isArray(subsets)) subsets.forEach((subset, s) => problems.push(...tableProblems(subset, 'subsets', `datasets[${d}].subsets[${s}]`)));
  });
  const tables = [document.general ?? {}, ...datasets].filter(isTable);
  if (tables.some((t) => 'validation_split' in t || 'validation_seed' in t)) {
    problems.push('validation_split and validation_seed are not supported: the training length and spot resume are planned on the whole dataset; remove them');
  }
  return problems;
}

/** The value as TOML (and the container's message) writes it. */
export function shown(value: unknown): string {
  return JSON.stringify(value, (_, v: unknown) => (typeof v === 'bigint' ? Number(v) : v)) ?? String(value);
}
