import { z } from 'zod';
import type { PreparedRun, PrepareEvent, PrepareResult, PrepareSettings, Tag, TrainingChannel, UnsettledRun } from '../shared/contract';
import { toSageMakerHyperparameters, validateHyperparameters } from '../shared/hyperparameters';
import { loraNameOf } from '../shared/lora-name';
import { BASE_MODEL_CHANNEL, hubTokenEnvironment, isS3BaseModel } from '../shared/models';
import { fittedSlug, runName } from '../shared/names';
import { DATASET_TOML, folderFiles, type ListedObject, MAX_CONTROL_FILE_BYTES, newest, TRAIN_JSON } from './dataset';
import { invalidDataset, invalidInput, listProblems } from './errors';
import { combinationProblems, type DatasetLocation, hyperparameterInput, parseExecutionInput, parseTrainJson, resolveOptions, type ResolvedOptions, type RunOptions, tokenProblems } from './input';
import { baseModelFilesProblem } from './base-model-files';
import { machineFitProblems } from './machine-fit';
import { MAX_LISTED, preflight, type PreflightReport } from './preflight';
import { hasInstanceStorage, tagValue } from './resources';
import { s3DatasetFolder } from './s3-store';
import { dedicatedServing, servingDecision, servingProblems, sharedServing } from './serving';

/** The reads Prepare makes of the datasets bucket; an S3 client in the function, a fake in tests. */
export interface DatasetStore {
  /** Every object under the prefix (all pages). */
  list(bucket: string, prefix: string): Promise<ListedObject[]>;
  /** The object's text, at most `maxBytes + 1` bytes of it; undefined when it no longer exists. */
  read(bucket: string, key: string, maxBytes: number): Promise<string | undefined>;
  /** The object's first `bytes` bytes (a ranged read); undefined when it no longer exists. */
  head(bucket: string, key: string, bytes: number): Promise<Uint8Array | undefined>;
  /** Keys of multipart uploads begun under the prefix and not yet completed (a few suffice). */
  uploadsInProgress(bucket: string, prefix: string): Promise<string[]>;
}

export interface PrepareDependencies {
  readonly store: DatasetStore;
  readonly settings: PrepareSettings;
  /** The current time; only the settle decision reads it, never a name. */
  readonly now: () => Date;
}

// The workflow builds this part of the event; a bad one is a bug in the definition, not the user's.
const executionSchema = z.object({
  name: z.string().min(1).max(80),
  startTime: z.string().refine((v) => !Number.isNaN(Date.parse(v)), 'an ISO 8601 timestamp'),
});

const INPUT_REMEDY = 'Start the execution again with a corrected input.';

/**
 * Resolves and checks one run: its input, its dataset folder and its train.json, and returns every
 * per-run value of the SageMaker requests, or, while the folder is still being uploaded, how long to
 * wait. It reads the same things and gives the same answer each time the settle loop calls it for
 * one execution, so a run's names and requests do not depend on when it settled.
 */
export async function prepare(event: PrepareEvent, deps: PrepareDependencies): Promise<PrepareResult> {
  const { settings, store } = deps;
  const execution = executionSchema.safeParse(event?.execution);
  if (!execution.success) {
    const problems = execution.error.issues.map((issue) => `execution.${issue.path.join('.')}: ${issue.message}`);
    throw new Error(`Prepare's event has no valid "execution" {name, startTime} (${problems.join('; ')}); check the Prepare state's Parameters`);
  }

  // The input alone decides these: a mistake fails before any S3 request, even while uploading.
  const parsed = parseExecutionInput(event.request, settings);
  if ('problems' in parsed) throw invalidInput(listProblems('The execution input', parsed.problems, INPUT_REMEDY));
  const { dataset } = parsed;

  const objects = await store.list(settings.datasetsBucket, dataset.prefix);
  const files = folderFiles(objects, dataset.prefix);
  if (files.size === 0) {
    throw invalidDataset(`There are no objects under ${dataset.uri}; upload the dataset folder (images, .txt captions, ${DATASET_TOML}) first.`);
  }

  // train.json is part of the upload: it is read only once the folder has settled, so a fixed one
  // uploaded after the trigger is the one that counts.
  const unsettled = await settleState(objects, dataset, event.execution.startTime, deps);
  if (unsettled) return unsettled;

  const file = await readTrainJson(dataset, files, deps);
  if (file === 'gone') return changedWhileReading(TRAIN_JSON, settings);
  const options = resolveOptions(parsed.options, file, settings);
  const outputName = fittedSlug(options.name ?? dataset.folder, 100);
  const problems = [...combinationProblems(options, settings), ...tokenProblems(options, settings), ...servingProblems(options, settings, options.name ?? dataset.folder)];
  const hyperparameters = validateHyperparameters(hyperparameterInput(options));
  if (!hyperparameters.ok) problems.push(hyperparameters.message);
  else problems.push(...machineFitProblems(options, hyperparameters.values, servingDecision(options, settings).mode === 'dedicated'));
  // Listed only once the rest is valid: a refused run makes no request outside its own folder.
  if (problems.length === 0) {
    const files = await baseModelFilesProblem(options.modelType.value, options.baseModel.value, (bucket, prefix) => store.list(bucket, prefix));
    if (files !== undefined) problems.push(files);
  }
  if (problems.length > 0) {
    const remedy = file === EMPTY ? INPUT_REMEDY : `Fix the execution input or ${dataset.uri}${TRAIN_JSON}, then start the run again.`;
    throw invalidInput(listProblems('The run', problems, remedy));
  }

  const toml = files.get(DATASET_TOML);
  if (toml && toml.size > MAX_CONTROL_FILE_BYTES) {
    throw invalidDataset(`${dataset.uri}${DATASET_TOML} is ${toml.size} bytes, more than the ${MAX_CONTROL_FILE_BYTES} a dataset configuration may have; upload the kohya dataset configuration only.`);
  }
  // What the training container would refuse, found before any SageMaker call (preflight.ts).
  const report = await preflight(s3DatasetFolder(store, settings.datasetsBucket, dataset.prefix, files), {
    modelType: options.modelType.value,
    hyperparameters: hyperparameters.ok ? hyperparameters.values : {},
  });
  if (report.vanished.length > 0) return changedWhileReading(report.vanished[0], settings);
  if (report.problems.length > 0) {
    throw invalidDataset(listProblems(`The dataset folder ${dataset.uri}`, report.problems, `Fix it, then upload ${settings.triggerFileName} again to start a new run.`));
  }

  return preparedRun({
    execution: execution.data,
    dataset,
    report,
    options,
    hyperparameters: pickGiven(hyperparameters.ok ? hyperparameters.values : {}, options, outputName),
    settings,
  });
}

const EMPTY: RunOptions = {};

/** The folder's train.json as options (none: {}), 'gone' if it vanished between list and read. */
async function readTrainJson(dataset: DatasetLocation, files: ReadonlyMap<string, ListedObject>, deps: PrepareDependencies): Promise<RunOptions | 'gone'> {
  const listed = files.get(TRAIN_JSON);
  if (!listed) return EMPTY;
  const where = `${dataset.uri}${TRAIN_JSON}`;
  const remedy = `Fix ${TRAIN_JSON}, then upload ${deps.settings.triggerFileName} again to start a new run.`;
  if (listed.size > MAX_CONTROL_FILE_BYTES) {
    throw invalidInput(listProblems(where, [`it is ${listed.size} bytes, more than the ${MAX_CONTROL_FILE_BYTES} a train.json may have`], remedy));
  }
  // An empty object is not read: S3 refuses a byte range of it (InvalidRange), and '' is not JSON anyway.
  const text = listed.size === 0 ? '' : await deps.store.read(deps.settings.datasetsBucket, listed.key, MAX_CONTROL_FILE_BYTES);
  if (text === undefined) return 'gone';
  if (Buffer.byteLength(text, 'utf8') > MAX_CONTROL_FILE_BYTES) {
    throw invalidInput(listProblems(where, [`it is more than the ${MAX_CONTROL_FILE_BYTES} bytes a train.json may have`], remedy));
  }
  const parsed = parseTrainJson(text, deps.settings);
  if ('problems' in parsed) throw invalidInput(listProblems(where, parsed.problems, remedy));
  return parsed.options;
}

/**
 * Passes of the settle loop a run may make: each costs about 9 history events, and Step Functions
 * fails an execution at its 25,000th event, uncatchably (no report, no notification).
 */
const MAX_SETTLE_PASSES = 2000;

/** The shortest wait between two passes, so that waiting `maxSettleWaitSeconds` fits in MAX_SETTLE_PASSES. */
function shortestWait(settings: PrepareSettings): number {
  return Math.max(1, Math.ceil(settings.maxSettleWaitSeconds / MAX_SETTLE_PASSES));
}

/** An object listed a moment ago is gone: the folder is changing, so wait as for any change. */
function changedWhileReading(name: string, settings: PrepareSettings): UnsettledRun {
  return { settled: false, waitSeconds: Math.max(shortestWait(settings), settings.settleSeconds), reason: `${name} was deleted or replaced while it was being read` };
}

/**
 * Undefined once nothing in the folder is younger than settleSeconds and no multipart upload into
 * it is still open (a large file being uploaded is not listed until it completes); else how long to wait.
 */
async function settleState(objects: readonly ListedObject[], dataset: DatasetLocation, startTime: string, deps: PrepareDependencies): Promise<UnsettledRun | undefined> {
  const { settings } = deps;
  const now = deps.now().getTime();
  const waited = Math.floor((now - Date.parse(startTime)) / 1000);
  const tooLong = (what: string) =>
    invalidDataset(
      `${dataset.uri} is still changing after ${waited} s (${what}); a run waits at most ` +
        `${settings.maxSettleWaitSeconds} s for its folder to stay unchanged for ${settings.settleSeconds} s. Finish the upload, ` +
        `then upload ${settings.triggerFileName} again to start a new run.`,
    );
  const open = await deps.store.uploadsInProgress(settings.datasetsBucket, dataset.prefix);
  if (open.length > 0) {
    if (waited > settings.maxSettleWaitSeconds) throw tooLong(`${open[0]} is still being uploaded`);
    return {
      settled: false,
      waitSeconds: Math.max(shortestWait(settings), settings.settleSeconds),
      reason: `${open[0]}${open.length > 1 ? ` and ${open.length - 1} more` : ''} still being uploaded into ${dataset.uri}`,
    };
  }
  if (settings.settleSeconds === 0) return undefined;
  const latest = newest(objects);
  if (!latest) return undefined;
  const age = (now - latest.lastModified.getTime()) / 1000;
  if (age >= settings.settleSeconds) return undefined;
  const shownAge = Math.max(0, Math.floor(age));
  if (waited > settings.maxSettleWaitSeconds) throw tooLong(`${latest.key} changed ${shownAge} s ago`);
  // A clock behind S3's makes the age negative: never wait longer than a full settle period.
  const waitSeconds = Math.max(shortestWait(settings), Math.min(settings.settleSeconds, Math.ceil(settings.settleSeconds - age)));
  return {
    settled: false,
    waitSeconds,
    reason: `${latest.key} changed ${shownAge} s ago; a run starts once nothing in ${dataset.uri} has changed for ${settings.settleSeconds} s`,
  };
}

/**
 * The hyperparameters sent to the job: only the keys given (as decoded, so `"\"1e-4\""` and
 * `0.0001` arrive alike) plus the ones the run decides. The container's defaults are the schema's,
 * so leaving a key out gives the same training as sending its default, and the job's
 * hyperparameters show what the user chose. `base_model` goes only with a Hub model: the container
 * refuses it together with a base_model channel.
 */
function pickGiven(values: Readonly<Record<string, string | number | boolean | null>>, options: ResolvedOptions, outputName: string): Record<string, string> {
  const given: Record<string, string | number | boolean | null> = {};
  for (const key of Object.keys(options.hyperparameters).sort()) if (Object.hasOwn(values, key)) given[key] = values[key];
  given.model_type = options.modelType.value;
  if (!('output_name' in given)) given.output_name = outputName;
  if (!isS3BaseModel(options.baseModel.value)) given.base_model = options.baseModel.value;
  return toSageMakerHyperparameters(given);
}

interface RunParts {
  readonly execution: { readonly name: string; readonly startTime: string };
  readonly dataset: DatasetLocation;
  readonly report: PreflightReport;
  readonly options: ResolvedOptions;
  readonly hyperparameters: Record<string, string>;
  readonly settings: PrepareSettings;
}

function preparedRun(parts: RunParts): PreparedRun {
  const { execution, dataset, options, settings } = parts;
  const shortName = options.name ?? dataset.folder;
  const run = runName(settings.namePrefix, shortName, execution.startTime, execution.name);
  const baseModel = options.baseModel.value;
  const inS3 = isS3BaseModel(baseModel);
  const channel = (name: string, uri: string): TrainingChannel => ({
    ChannelName: name,
    DataSource: { S3DataSource: { S3DataType: 'S3Prefix', S3Uri: uri, S3DataDistributionType: 'FullyReplicated' } },
    InputMode: 'File',
  });
  const trainingType = options.training.instanceType.value;
  const spot = options.training.spot.value;
  const tags: Tag[] = [
    { Key: 'pipeline', Value: tagValue(settings.pipeline) },
    { Key: 'dataset', Value: tagValue(dataset.folder) },
    { Key: 'run', Value: run },
  ];
  const decision = servingDecision(options, settings);
  const serving =
    decision.mode === 'shared'
      ? sharedServing(decision)
      : dedicatedServing({ run, stableName: shortName, options, settings, networkIsolation: inS3, tags, because: decision.because });
  return {
    settled: true,
    run,
    dataset: {
      name: dataset.folder,
      uri: dataset.uri,
      images: parts.report.images,
      captions: parts.report.captions,
      skipped: parts.report.skipped.slice(0, MAX_LISTED),
      skippedCount: parts.report.skipped.length,
      notes: parts.report.notes.slice(0, 5),
      // The images the job captions with BLIP (caption_missing): the notification and status say how many.
      ...(parts.report.captionsToWrite > 0 ? { captionsToWrite: parts.report.captionsToWrite } : {}),
    },
    modelType: options.modelType.value,
    baseModel,
    lora: { name: loraNameOf(shortName) },
    training: {
      jobName: run,
      hyperparameters: parts.hyperparameters,
      // Only the secret's id: the container reads the token itself, and never from a hyperparameter.
      environment: hubTokenEnvironment(baseModel, settings.huggingFaceTokenSecretId, process.env.AWS_REGION),
      inputDataConfig: [channel('dataset', dataset.uri), ...(inS3 ? [channel(BASE_MODEL_CHANNEL, baseModel)] : [])],
      resourceConfig: {
        InstanceType: trainingType,
        InstanceCount: 1,
        VolumeSizeInGB: options.training.volumeSizeGb.value,
        ...(hasInstanceStorage(trainingType) ? {} : { VolumeKmsKeyId: settings.keyArn }),
      },
      spot,
      stoppingCondition: {
        MaxRuntimeInSeconds: options.training.maxRuntimeSeconds.value,
        ...(spot ? { MaxWaitTimeInSeconds: options.training.maxWaitSeconds.value } : {}),
      },
      networkIsolation: inS3,
    },
    serving,
    tags,
  };
}
