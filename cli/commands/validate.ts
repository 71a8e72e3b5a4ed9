import * as path from 'node:path';
import { DATASET_TOML, MAX_CONTROL_FILE_BYTES, TRAIN_JSON } from '../../lambda/prepare/dataset';
import { count } from '../../lambda/prepare/errors';
import { combinationProblems, hyperparameterInput, parseTrainJson, resolveDataset, resolveOptions, type ResolvedOptions, type RunOptions } from '../../lambda/prepare/input';
import { machineFitProblems } from '../../lambda/prepare/machine-fit';
import { preflight, type PreflightReport } from '../../lambda/prepare/preflight';
import { servingDecision, servingProblems } from '../../lambda/prepare/serving';
import type { PrepareSettings } from '../../lambda/shared/contract';
import { validateHyperparameters } from '../../lambda/shared/hyperparameters';
import { DEFAULT_BASE_MODELS, isS3BaseModel, MODEL_TYPE_DEFAULTS, type ModelType } from '../../lambda/shared/models';
import { CONFIG_FIELDS } from '../../lib/config-fields';
import type { ParsedArgs } from '../args';
import { type CliContext, type Command, EXIT, type Io, UsageError } from '../command';
import { json } from '../format';
import { folderProblem, type LocalFile, LocalFolder } from '../local-folder';
import { outputEnv } from '../stack-outputs';

/**
 * `validate <folder>`: the checks Prepare makes before any SageMaker call (train.json, the run's
 * options, hyperparameters, and the dataset pre-flight of lambda/prepare/preflight.ts), run offline
 * on a local folder. `upload` runs the same checks first.
 */

/** The deploy-time settings a check depends on, each from the stack (upload) or a flag, else the configuration default. */
export interface Deployment {
  readonly modelType?: string;
  readonly endpointMode?: string;
  readonly namePrefix?: string;
  readonly baseModel?: string;
  readonly sharedEndpointName?: string;
  readonly sharedInferenceComponentName?: string;
  readonly datasetsBucket?: string;
  readonly datasetPrefix?: string;
  readonly triggerFileName?: string;
  /** The stack output CaptionMissing: true, false, or default (the model type's). */
  readonly captionMissing?: string;
}

/** The deployment's training.captionMissing from its stack output; undefined leaves caption_missing to the model type. */
function captionMissingOf(value: string | undefined): boolean | undefined {
  const parsed = checked(value, 'default', (v) => ['true', 'false', 'default'].includes(v), 'caption-missing', "'true', 'false' or 'default'");
  return parsed === 'default' ? undefined : parsed === 'true';
}

function checked<T>(value: T | undefined, fallback: T, valid: (value: T) => boolean, flag: string, allowed: string): T {
  if (value === undefined) return fallback;
  if (!valid(value)) throw new UsageError(`--${flag} ${JSON.stringify(value)} is not allowed: expected ${allowed}`);
  return value;
}

/**
 * PrepareSettings for the checks. Offline, the stack's own values are unknown: the CLI takes the
 * flags given and the configuration defaults (lib/config-fields.ts) for the rest. Only the model type,
 * base model, endpoint mode and name prefix change an answer; Prepare checks again with the real ones.
 */
export function deploymentSettings(given: Deployment): PrepareSettings {
  const field = <K extends keyof typeof CONFIG_FIELDS>(key: K) => CONFIG_FIELDS[key];
  const modelType = checked(given.modelType, field('modelType').default, (v) => field('modelType').schema.safeParse(v).success, 'model-type', field('modelType').allowed) as ModelType;
  const mode = checked(given.endpointMode, field('endpoint.mode').default, (v) => field('endpoint.mode').schema.safeParse(v).success, 'endpoint-mode', field('endpoint.mode').allowed) as 'shared' | 'dedicated';
  const namePrefix = checked(given.namePrefix, field('namePrefix').default, (v) => field('namePrefix').schema.safeParse(v).success, 'name-prefix', field('namePrefix').allowed) as string;
  const baseModel = checked(given.baseModel, DEFAULT_BASE_MODELS[modelType], (v) => field('baseModel').schema.safeParse(v).success, 'base-model', field('baseModel').allowed);
  const sharedName = `${namePrefix}-shared-${modelType}`;
  const defaults = MODEL_TYPE_DEFAULTS[modelType];
  const captionMissing = captionMissingOf(given.captionMissing);
  return {
    datasetsBucket: given.datasetsBucket ?? 'datasets-bucket',
    datasetPrefix: given.datasetPrefix ?? (field('datasetPrefix').default as string),
    triggerFileName: given.triggerFileName ?? (field('triggerFileName').default as string),
    settleSeconds: field('settleSeconds').default as number,
    maxSettleWaitSeconds: 3600,
    namePrefix,
    modelType,
    baseModel,
    ...(isS3BaseModel(baseModel) ? { readableS3BaseModel: baseModel } : {}),
    training: {
      instanceType: defaults.trainingInstanceType,
      spot: field('training.spot').default as boolean,
      maxRuntimeSeconds: defaults.trainingMaxRuntimeSeconds,
      maxWaitSeconds: defaults.trainingMaxWaitSeconds,
      volumeSizeGb: defaults.trainingVolumeSizeGb,
      ...(captionMissing === undefined ? {} : { captionMissing }),
    },
    endpoint: {
      mode,
      ...(mode === 'shared'
        ? { shared: { endpointName: given.sharedEndpointName ?? sharedName, inferenceComponentName: given.sharedInferenceComponentName ?? sharedName } }
        : {}),
      instanceType: defaults.endpointInstanceType,
      instanceCount: field('endpoint.instanceCount').default as number,
      startupHealthCheckTimeoutSeconds: 600,
      modelDataDownloadTimeoutSeconds: 600,
      loraScale: 1,
    },
    keyArn: 'arn:aws:kms:us-east-1:000000000000:key/offline',
    checkpointExpirationDays: field('storage.checkpointExpirationDays').default as number,
    pipeline: 'offline',
  };
}

export interface DatasetCheck {
  readonly name: string;
  readonly files: readonly LocalFile[];
  /** Undefined when train.json or the options are refused before the pre-flight could choose a model type. */
  readonly options?: ResolvedOptions;
  readonly report: PreflightReport;
  /** Every problem: train.json's and the run's first, then the pre-flight's. */
  readonly problems: readonly string[];
}

/** A dataset name: the folder's S3 name, checked as Prepare checks the execution input's "dataset". */
export function datasetName(folder: string, name: string | undefined, settings: PrepareSettings): string {
  const chosen = name ?? path.basename(path.resolve(folder));
  const resolved = resolveDataset(chosen, settings);
  if ('problem' in resolved) throw new UsageError(`${resolved.problem.replace(/^"dataset"/, name !== undefined ? '--name' : 'the folder name')}${name === undefined ? ', or pass --name <name>' : ''}`);
  return resolved.folder;
}

async function trainJsonOptions(folder: LocalFolder, files: readonly LocalFile[], settings: PrepareSettings): Promise<{ options: RunOptions; problems: string[] }> {
  const file = files.find((f) => f.path === TRAIN_JSON);
  if (!file) return { options: {}, problems: [] };
  const refuse = (why: string) => ({ options: {}, problems: [`${TRAIN_JSON}: ${why}`] });
  if (file.size > MAX_CONTROL_FILE_BYTES) return refuse(`it is ${file.size} bytes, more than the ${MAX_CONTROL_FILE_BYTES} a train.json may have`);
  const text = (await folder.text(TRAIN_JSON, MAX_CONTROL_FILE_BYTES)) ?? '';
  const parsed = parseTrainJson(text, settings);
  return 'problems' in parsed ? { options: {}, problems: parsed.problems.map((p) => `${TRAIN_JSON}: ${p}`) } : { options: parsed.options, problems: [] };
}

/** Every check Prepare makes of the folder and its train.json, in the same order. */
export async function checkDataset(folder: LocalFolder, name: string, settings: PrepareSettings): Promise<DatasetCheck> {
  const files = await folder.list();
  const file = await trainJsonOptions(folder, files, settings);
  const options = resolveOptions({}, file.options, settings);
  const problems = [...file.problems];
  if (file.problems.length === 0) problems.push(...combinationProblems(options, settings), ...servingProblems(options, settings, options.name ?? name));
  // Prepare's own limit, before the pre-flight's larger one: it refuses a bigger dataset.toml outright.
  const toml = files.find((f) => f.path === DATASET_TOML);
  if (toml && toml.size > MAX_CONTROL_FILE_BYTES) {
    problems.push(`${DATASET_TOML}: it is ${toml.size} bytes, more than the ${MAX_CONTROL_FILE_BYTES} a dataset configuration may have; upload the kohya dataset configuration only`);
  }
  const hyperparameters = validateHyperparameters(hyperparameterInput(options));
  if (!hyperparameters.ok) problems.push(hyperparameters.message);
  // Offline the deployment's machines are unknown (the defaults stand in): only the run's own are checked.
  else if (file.problems.length === 0) problems.push(...machineFitProblems(options, hyperparameters.values, servingDecision(options, settings).mode === 'dedicated', true));
  // With bad hyperparameters the pre-flight still runs, on the defaults, so every problem shows at once.
  const defaults = validateHyperparameters({ model_type: options.modelType.value });
  const values = hyperparameters.ok ? hyperparameters.values : defaults.ok ? defaults.values : {};
  const report = await preflight(folder, { modelType: options.modelType.value, hyperparameters: values });
  return { name, files, options, report, problems: [...problems, ...report.problems] };
}

/** What would be trained, or every reason it would not, as `validate` and `upload` print it. */
export function describeCheck(check: DatasetCheck, settings: PrepareSettings): string {
  const { report, options } = check;
  const lines: string[] = [];
  const bytes = check.files.reduce((sum, f) => sum + f.size, 0);
  lines.push(`Dataset "${check.name}": ${count(check.files.length, 'file')}, ${bytes} bytes`);
  lines.push(`  images: ${report.images}, with a caption: ${report.captions}`);
  if (report.captionsToWrite > 0) lines.push(`  to be captioned by BLIP in the training job (caption_missing): ${report.captionsToWrite}, written next to them in S3 for review`);
  if (report.uncheckedImages > 0) lines.push(`  image headers checked: ${report.checkedImages}; not checked: ${report.uncheckedImages} (the training container still decodes them)`);
  if (options) {
    const serving = servingDecision(options, settings);
    lines.push(`  model: ${options.modelType.value} (${options.modelType.source}), base ${options.baseModel.value} (${options.baseModel.source})`);
    lines.push(`  served by: ${serving.mode === 'shared' ? `the shared endpoint ${serving.shared.endpointName}` : 'an endpoint of its own'}`);
  }
  if (report.skipped.length > 0) lines.push(`  skipped (${report.skipped.length}): kohya does not train these`, ...report.skipped.map((s) => `    - ${s}`));
  for (const note of report.notes) lines.push(`  note: ${note}`);
  if (check.problems.length === 0) lines.push('OK: Prepare and the training container would accept this folder.');
  else lines.push(`REFUSED: ${count(check.problems.length, 'problem')}; a run of this folder would fail before training:`, ...check.problems.map((p) => `  - ${p}`));
  return `${lines.join('\n')}\n`;
}

/** The flags that name the deployment the checks assume; shared by validate and upload. */
export const DEPLOYMENT_FLAGS = {
  name: { type: 'string', value: '<name>', description: 'the dataset name (default: the folder name)' },
} as const;

/** The deployment given by flags or LORA_PIPELINE_* env vars: offline, without the stack. */
export function givenDeployment(args: ParsedArgs, env: NodeJS.ProcessEnv): Deployment {
  const flagOrEnv = (flag: string, key: Parameters<typeof outputEnv>[0]) => args.string(flag) || env[outputEnv(key)] || undefined;
  return {
    modelType: flagOrEnv('model-type', 'ModelType'),
    endpointMode: flagOrEnv('endpoint-mode', 'EndpointMode'),
    namePrefix: flagOrEnv('name-prefix', 'NamePrefix'),
    baseModel: flagOrEnv('base-model', 'BaseModel'),
    captionMissing: flagOrEnv('caption-missing', 'CaptionMissing'),
  };
}

export function folderArgument(args: ParsedArgs, command: string): string {
  if (args.positionals.length !== 1) {
    throw new UsageError(args.positionals.length === 0 ? `${command} needs the dataset folder: lora-pipeline ${command} <folder>` : `${command} takes one folder, not ${args.positionals.length}: ${args.positionals.join(' ')}`);
  }
  return args.positionals[0];
}

/** The folder's check, or undefined (after printing why) when the folder is not a readable folder. */
export async function checkFolder(io: Io, root: string, name: string, settings: PrepareSettings): Promise<DatasetCheck | undefined> {
  const problem = await folderProblem(root);
  if (problem) {
    io.err(`${problem}\n`);
    return undefined;
  }
  return checkDataset(new LocalFolder(root), name, settings);
}

export const command: Command = {
  name: 'validate',
  summary: 'check a local dataset folder offline, as Prepare and the training container would',
  usage: [
    'lora-pipeline validate <folder> [--name <name>] [--model-type sd15|sdxl|flux1] [--endpoint-mode shared|dedicated] [--base-model <id>] [--caption-missing true|false|default] [--json]',
    '',
    "Runs Prepare's checks on a local folder, without AWS: train.json and the run's options, the hyperparameters,",
    "dataset.toml paths, captions, image headers. Prints what would be trained and the files kohya would skip, or",
    'every problem. The deployment is assumed to use the configuration defaults unless --model-type, --endpoint-mode,',
    '--name-prefix, --base-model, --caption-missing (or their LORA_PIPELINE_* env vars) say otherwise. Exit 0: accepted; 1: refused.',
  ].join('\n'),
  flags: {
    ...DEPLOYMENT_FLAGS,
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  async run(args: ParsedArgs, ctx: CliContext): Promise<number> {
    const root = folderArgument(args, 'validate');
    const settings = deploymentSettings(givenDeployment(args, ctx.env));
    const name = datasetName(root, args.string('name'), settings);
    const check = await checkFolder(ctx.io, root, name, settings);
    if (!check) return EXIT.failed;
    if (args.boolean('json')) {
      const { report } = check;
      const result = {
        ok: check.problems.length === 0,
        dataset: name,
        images: report.images,
        captions: report.captions,
        captionsToWrite: report.captionsToWrite,
        skipped: report.skipped,
        problems: check.problems,
        findings: report.findings,
        notes: report.notes,
      };
      ctx.io.out(`${json(result)}\n`);
    } else {
      ctx.io.out(describeCheck(check, settings));
      // Offline, the deployment is assumed: say what was assumed and how to change it.
      ctx.io.out(
        `(checked for a deployment with modelType ${settings.modelType}, base model ${settings.baseModel}, endpoint.mode ${settings.endpoint.mode}, ` +
          `namePrefix ${settings.namePrefix}, training.captionMissing ${settings.training.captionMissing ?? 'default'}: ` +
          'the configuration defaults unless --model-type, --base-model, --endpoint-mode, --name-prefix, --caption-missing ' +
          'or their LORA_PIPELINE_* env vars say otherwise)\n',
      );
    }
    return check.problems.length === 0 ? EXIT.ok : EXIT.failed;
  },
};
