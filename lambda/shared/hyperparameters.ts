import { z } from 'zod';
import schemaFile from '../../containers/training/lora_trainer/hyperparameters.schema.json';
import { FLUX_HUB_REPOS } from './flux-files';
import { closest } from './suggest';

/**
 * The training container's hyperparameters, validated the way its entrypoint validates them
 * (containers/training/lora_trainer/hyperparameters.py), from the same schema file: the workflow
 * refuses a run that the container would fail, before any SageMaker call. Both sides run the test
 * vectors in containers/training/tests/hyperparameter_cases.json.
 */

const modelTypes = ['sd15', 'sdxl', 'flux1'] as const;
export type TrainingModelType = (typeof modelTypes)[number];

/** The two FLUX.1 Hub repos the container knows the pinned files of: the only Hub base models of flux1. */
const FLUX_HUB_IDS: readonly string[] = Object.values(FLUX_HUB_REPOS);
export type HyperparameterValue = string | number | boolean;

const scalar = z.union([z.string(), z.number(), z.boolean()]);
const specSchema = z
  .object({
    type: z.enum(['string', 'integer', 'number', 'boolean']),
    // Per model type (every type named), null where a type leaves the key unset.
    default: z.union([scalar, z.null(), z.record(z.enum(modelTypes), scalar.nullable())]),
    flag: z.string().regex(/^--[a-z0-9_]+$/).nullable(),
    description: z.string().min(1),
    enum: z.array(z.string()).min(1).optional(),
    pattern: z.string().optional(),
    patternDescription: z.string().optional(),
    minimum: z.number().optional(),
    maximum: z.number().optional(),
    exclusiveMinimum: z.number().optional(),
    multipleOf: z.number().int().positive().optional(),
    models: z.array(z.enum(modelTypes)).min(1).optional(),
  })
  .strict();
const documentSchema = z.object({
  $comment: z.string(),
  version: z.literal(1),
  hyperparameters: z.record(z.string().regex(/^[a-z][a-z0-9_]*$/), specSchema),
  ignoredPrefixes: z.array(z.string().min(1)),
  reserved: z.record(z.string(), z.string()),
});

export type HyperparameterSpec = z.infer<typeof specSchema>;
/** The parsed schema file; its structure is checked when this module loads. */
export const HYPERPARAMETER_SCHEMA = documentSchema.parse(schemaFile);

/** One problem, with the same `code` the Python entrypoint gives it. */
export interface HyperparameterProblem {
  readonly key: string;
  readonly code: 'unknown' | 'reserved' | 'type' | 'range' | 'multiple' | 'enum' | 'pattern' | 'model' | 'conflict';
  readonly message: string;
}

export type HyperparameterResult =
  | { readonly ok: true; readonly values: Readonly<Record<string, HyperparameterValue | null>> }
  | { readonly ok: false; readonly problems: readonly HyperparameterProblem[]; readonly message: string };

const INTEGER = /^[+-]?\d+$/;
const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

function defaultFor(spec: HyperparameterSpec, modelType: string): HyperparameterValue | null {
  const value = spec.default !== null && typeof spec.default === 'object' ? (spec.default[modelType as TrainingModelType] ?? null) : spec.default;
  return value;
}

/**
 * Decodes and validates hyperparameters as the container will receive them (strings, possibly
 * JSON-encoded as the SageMaker Python SDK does; native JSON scalars are accepted too), returning
 * every key of the schema with its effective value, or every problem at once.
 */
export function validateHyperparameters(raw: Readonly<Record<string, unknown>>): HyperparameterResult {
  const { hyperparameters: specs, reserved, ignoredPrefixes } = HYPERPARAMETER_SCHEMA;
  const problems: HyperparameterProblem[] = [];
  const given: Record<string, HyperparameterValue> = {};
  for (const key of Object.keys(raw).sort()) {
    if (ignoredPrefixes.some((prefix) => key.startsWith(prefix))) continue;
    if (Object.hasOwn(reserved, key)) {
      problems.push({ key, code: 'reserved', message: `is set by the container; ${reserved[key]}` });
      continue;
    }
    const spec = Object.hasOwn(specs, key) ? specs[key] : undefined;
    if (!spec) {
      const near = closest(key, Object.keys(specs));
      const hint = near ? `; did you mean "${near}"?` : `; known keys: ${Object.keys(specs).sort().join(', ')}`;
      problems.push({ key, code: 'unknown', message: `is not a known hyperparameter${hint}` });
      continue;
    }
    const decoded = decode(key, spec, raw[key]);
    if ('problem' in decoded) problems.push(decoded.problem);
    else given[key] = decoded.value;
  }

  const modelType = String(given.model_type ?? specs.model_type.default);
  const values: Record<string, HyperparameterValue | null> = {};
  for (const [name, spec] of Object.entries(specs)) values[name] = defaultFor(spec, modelType);
  Object.assign(values, given);
  for (const key of Object.keys(given)) {
    const models = specs[key].models;
    if (models && !(models as string[]).includes(modelType)) {
      problems.push({ key, code: 'model', message: `applies only to model_type ${models.join(' or ')}, not ${modelType}` });
    }
  }
  if (values.cache_text_encoder_outputs === true && values.network_train_unet_only !== true) {
    problems.push({
      key: 'cache_text_encoder_outputs',
      code: 'conflict',
      message: 'needs network_train_unet_only = true: cached text encoder outputs cannot train the text encoder',
    });
  }
  if (values.lr_warmup_steps && (values.lr_scheduler === 'constant' || values.optimizer_type === 'Adafactor')) {
    const why = values.optimizer_type === 'Adafactor' ? 'Adafactor brings its own schedule' : 'the constant schedule has none';
    problems.push({ key: 'lr_warmup_steps', code: 'conflict', message: `needs a schedule with warm-up, such as lr_scheduler = constant_with_warmup; ${why}` });
  }
  if ('text_encoder_lr' in given && values.network_train_unet_only === true) {
    problems.push({ key: 'text_encoder_lr', code: 'conflict', message: 'has no effect with network_train_unet_only = true; remove one of them' });
  }
  if (modelType === 'flux1') problems.push(...fluxConflicts(values));
  else if (FLUX_HUB_IDS.includes(String(values.base_model))) problems.push(fluxBaseModelFor(modelType, String(values.base_model)));
  if (problems.length > 0) {
    const lines = problems.map((p) => `"${p.key}": ${p.message}`).join('; ');
    return { ok: false, problems, message: `Invalid hyperparameters (${problems.length} problem${problems.length > 1 ? 's' : ''}): ${lines}` };
  }
  return { ok: true, values };
}

type Values = Readonly<Record<string, HyperparameterValue | null>>;

/**
 * What sd-scripts' flux_train_network needs, in the container's order and with its keys and codes
 * (hyperparameters.py _flux_conflicts): each a key, when its value is refused, and why.
 */
const FLUX_RULES: ReadonlyArray<{ key: string; refused: (values: Values) => boolean; message: (values: Values) => string }> = [
  {
    key: 'mixed_precision',
    refused: (values) => values.mixed_precision === 'fp16',
    message: () => 'must be bf16 for model_type flux1 (sd-scripts trains FLUX.1 in bf16), not fp16',
  },
  {
    key: 'network_train_unet_only',
    refused: (values) => values.network_train_unet_only !== true,
    message: () => 'must be true for model_type flux1: its text-encoder outputs are cached, so the text encoders cannot train',
  },
  {
    key: 'cache_text_encoder_outputs',
    refused: (values) => values.cache_text_encoder_outputs !== true,
    message: () => "must be true for model_type flux1: sd-scripts caches FLUX.1's CLIP-L and T5-XXL outputs so both encoders leave the GPU",
  },
  {
    key: 'base_model',
    refused: (values) => !FLUX_HUB_IDS.includes(String(values.base_model)),
    message: (values) => `must be ${FLUX_HUB_IDS.join(' or ')} for model_type flux1 (or an S3 base model channel), not ${String(values.base_model)}`,
  },
  {
    // train_network.py asserts it only once the 23.8 GB transformer is loaded.
    key: 'fp8_base',
    refused: (values) => values.fp8_base === true && values.mixed_precision === 'no',
    message: () => 'needs mixed_precision = bf16: sd-scripts computes in bf16 around the fp8 weights',
  },
];

function fluxConflicts(values: Values): HyperparameterProblem[] {
  return FLUX_RULES.filter((rule) => rule.refused(values)).map((rule) => ({ key: rule.key, code: 'conflict', message: rule.message(values) }));
}

/** A FLUX.1 Hub id under sd15/sdxl: the SD scripts cannot load its files (hyperparameters.py _flux_base_model_for). */
function fluxBaseModelFor(modelType: string, baseModel: string): HyperparameterProblem {
  return {
    key: 'base_model',
    code: 'conflict',
    message: `${baseModel} is a flux1 base model, not ${modelType}: set model_type = flux1, or give a ${modelType} base model`,
  };
}

/**
 * The values as SageMaker's CreateTrainingJob takes them: every value a string. Keys left unset
 * (null) are left out, so the container applies its own defaults, which are the same.
 */
export function toSageMakerHyperparameters(values: Readonly<Record<string, HyperparameterValue | null>>): Record<string, string> {
  const strings: Record<string, string> = {};
  for (const [key, value] of Object.entries(values)) if (value !== null) strings[key] = String(value);
  return strings;
}

type Decoded = { value: HyperparameterValue } | { problem: HyperparameterProblem };

function decode(key: string, spec: HyperparameterSpec, raw: unknown): Decoded {
  let text: unknown = raw;
  if (typeof raw === 'string' && raw.length >= 2 && raw.startsWith('"') && raw.endsWith('"')) {
    try {
      text = JSON.parse(raw) as unknown;
    } catch {
      text = raw;
    }
  }
  const shown = JSON.stringify(raw) ?? String(raw);
  const bad = (code: HyperparameterProblem['code'], message: string): Decoded => ({ problem: { key, code, message } });

  switch (spec.type) {
    case 'boolean':
      if (typeof text === 'boolean') return { value: text };
      if (typeof text === 'string' && ['true', 'false'].includes(text.toLowerCase())) return { value: text.toLowerCase() === 'true' };
      return bad('type', `must be true or false, not ${shown}`);
    case 'integer': {
      let number: number;
      if (typeof text === 'number' && Number.isInteger(text)) number = text;
      else if (typeof text === 'string' && INTEGER.test(text.trim())) number = Number.parseInt(text.trim(), 10);
      else return bad('type', `must be a whole number, not ${shown}`);
      return checkRange(key, spec, number, shown);
    }
    case 'number': {
      let number: number;
      if (typeof text === 'number') number = text;
      else if (typeof text === 'string' && NUMBER.test(text.trim())) number = Number(text.trim());
      else return bad('type', `must be a number, not ${shown}`);
      if (!Number.isFinite(number)) return bad('type', `must be a finite number, not ${shown}`);
      return checkRange(key, spec, number, shown);
    }
    case 'string':
      if (typeof text !== 'string') return bad('type', `must be a string, not ${shown}`);
      if (spec.enum && !spec.enum.includes(text)) {
        const near = closest(text, spec.enum);
        return bad('enum', `must be one of ${spec.enum.join(', ')}, not ${shown}${near ? ` (did you mean "${near}"?)` : ''}`);
      }
      if (spec.pattern !== undefined && !new RegExp(`^(?:${spec.pattern})$`).test(text)) {
        return bad('pattern', `must be ${spec.patternDescription ?? `of the form ${spec.pattern}`}, not ${shown}`);
      }
      return { value: text };
  }
}

function checkRange(key: string, spec: HyperparameterSpec, number: number, shown: string): Decoded {
  const bad = (code: HyperparameterProblem['code'], message: string): Decoded => ({ problem: { key, code, message } });
  if (spec.minimum !== undefined && number < spec.minimum) return bad('range', `must be at least ${spec.minimum}, not ${shown}`);
  if (spec.exclusiveMinimum !== undefined && number <= spec.exclusiveMinimum) {
    return bad('range', `must be greater than ${spec.exclusiveMinimum}, not ${shown}`);
  }
  if (spec.maximum !== undefined && number > spec.maximum) return bad('range', `must be at most ${spec.maximum}, not ${shown}`);
  if (spec.multipleOf !== undefined && number % spec.multipleOf !== 0) return bad('multiple', `must be a multiple of ${spec.multipleOf}, not ${shown}`);
  return { value: number };
}
