/**
 * The contracts between the workflow (lib/run-definition.ts and its stages) and its functions: the
 * state names the status function reads back from an execution's history, what the kickoff puts
 * into an execution's input, what Prepare receives and returns, what the registry and LoRA check
 * functions take and answer in shared mode, and what Report turns a run's end into.
 * Both sides import these types, so a change to one shows up as a type error in the other.
 */

import type { ModelType } from './models';

/** The workflow's state names. The status function maps them to phases; the definition uses them as is. */
export const STATES = {
  readInput: 'Read input',
  prepare: 'Prepare run',
  settled: 'Dataset settled?',
  waitForUpload: 'Wait for the upload to settle',
  train: 'Train LoRA',
  publishSamples: 'Publish samples',
  servingMode: 'Serving mode?',
  registerLora: 'Register LoRA',
  tryLora: 'Try LoRA on the shared endpoint',
  makeLoraCurrent: 'Make LoRA current',
  createModel: 'Create model',
  createEndpointConfig: 'Create endpoint config',
  findEndpoint: 'Find endpoint',
  endpointFound: 'Endpoint exists?',
  endpointUsable: 'Endpoint usable?',
  deleteUnusableEndpoint: 'Delete the failed endpoint',
  replaceEndpoint: 'Create endpoint in place of the failed one',
  createEndpoint: 'Create endpoint',
  updateEndpoint: 'Update endpoint',
  checkEndpoint: 'Check endpoint after an error',
  waitForEndpoint: 'Wait for endpoint',
  describeEndpoint: 'Describe endpoint',
  endpointReady: 'Endpoint in service?',
  countPoll: 'Count endpoint poll',
  smokeTest: 'Smoke test the endpoint',
  reportSuccess: 'Report success',
  reportSuccessPlainly: 'Report success without details',
  notifySuccess: 'Notify success',
  succeeded: 'Done',
  preparationFailed: 'Preparation failed',
  trainingFailed: 'Training failed',
  deploymentFailed: 'Deployment failed',
  endpointFailed: 'Endpoint failed',
  endpointNotInService: 'Endpoint not in service',
  endpointTimedOut: 'Endpoint timed out',
  registrationFailed: 'Registration failed',
  loraCheckFailed: 'LoRA check failed',
  promotionFailed: 'Promotion failed',
  smokeTestFailed: 'Smoke test failed',
  reportFailure: 'Report failure',
  reportFailurePlainly: 'Report failure without details',
  cleanUp: 'Clean up?',
  deleteFailedEndpoint: 'Delete failed endpoint',
  deleteEndpointConfig: 'Delete endpoint config',
  deleteModel: 'Delete model',
  rollBackEndpoint: 'Roll the endpoint back',
  rollBackFailed: 'Roll-back failed',
  rejectLora: 'Mark LoRA version failed',
  notifyFailure: 'Notify failure',
  failed: 'Failed',
} as const;

export type StateName = (typeof STATES)[keyof typeof STATES];

/** Where a run is, as the status function reports it. */
export type Phase = 'WAITING_FOR_UPLOAD' | 'VALIDATING' | 'TRAINING' | 'DEPLOYING' | 'IN_SERVICE' | 'FAILED' | 'ABORTED';

/** The phase a running execution is in while it is in each state. */
export const PHASE_OF_STATE: Readonly<Record<StateName, Phase>> = {
  [STATES.readInput]: 'VALIDATING',
  [STATES.prepare]: 'VALIDATING',
  [STATES.settled]: 'VALIDATING',
  [STATES.waitForUpload]: 'WAITING_FOR_UPLOAD',
  [STATES.train]: 'TRAINING',
  // Copying what the training job rendered: part of its outcome, a few seconds.
  [STATES.publishSamples]: 'TRAINING',
  [STATES.servingMode]: 'DEPLOYING',
  [STATES.registerLora]: 'DEPLOYING',
  [STATES.tryLora]: 'DEPLOYING',
  [STATES.makeLoraCurrent]: 'DEPLOYING',
  [STATES.createModel]: 'DEPLOYING',
  [STATES.createEndpointConfig]: 'DEPLOYING',
  [STATES.findEndpoint]: 'DEPLOYING',
  [STATES.endpointFound]: 'DEPLOYING',
  [STATES.endpointUsable]: 'DEPLOYING',
  [STATES.deleteUnusableEndpoint]: 'DEPLOYING',
  [STATES.replaceEndpoint]: 'DEPLOYING',
  [STATES.createEndpoint]: 'DEPLOYING',
  [STATES.updateEndpoint]: 'DEPLOYING',
  [STATES.checkEndpoint]: 'DEPLOYING',
  [STATES.waitForEndpoint]: 'DEPLOYING',
  [STATES.describeEndpoint]: 'DEPLOYING',
  [STATES.endpointReady]: 'DEPLOYING',
  [STATES.countPoll]: 'DEPLOYING',
  [STATES.smokeTest]: 'DEPLOYING',
  [STATES.reportSuccess]: 'DEPLOYING',
  [STATES.reportSuccessPlainly]: 'DEPLOYING',
  [STATES.notifySuccess]: 'DEPLOYING',
  [STATES.succeeded]: 'IN_SERVICE',
  // A failing run is reported as failed as soon as it starts reporting the failure.
  [STATES.preparationFailed]: 'FAILED',
  [STATES.trainingFailed]: 'FAILED',
  [STATES.deploymentFailed]: 'FAILED',
  [STATES.endpointFailed]: 'FAILED',
  [STATES.endpointNotInService]: 'FAILED',
  [STATES.endpointTimedOut]: 'FAILED',
  [STATES.registrationFailed]: 'FAILED',
  [STATES.loraCheckFailed]: 'FAILED',
  [STATES.promotionFailed]: 'FAILED',
  [STATES.smokeTestFailed]: 'FAILED',
  [STATES.reportFailure]: 'FAILED',
  [STATES.reportFailurePlainly]: 'FAILED',
  [STATES.cleanUp]: 'FAILED',
  [STATES.deleteFailedEndpoint]: 'FAILED',
  [STATES.deleteEndpointConfig]: 'FAILED',
  [STATES.deleteModel]: 'FAILED',
  [STATES.rollBackEndpoint]: 'FAILED',
  [STATES.rollBackFailed]: 'FAILED',
  [STATES.rejectLora]: 'FAILED',
  [STATES.notifyFailure]: 'FAILED',
  [STATES.failed]: 'FAILED',
};

/** The S3 object whose upload started a run; set by the kickoff function, shown by status. */
export interface TriggerInfo {
  readonly bucket: string;
  /** The decoded object key. */
  readonly key: string;
  readonly versionId?: string;
  readonly sequencer?: string;
  readonly eventTime?: string;
}

/**
 * An execution's input (docs/design.md, "Contracts"). Prepare validates it; this type is what it
 * accepts. Settings given here win over the folder's `train.json`, which wins over the deploy-time
 * configuration.
 */
export interface ExecutionInput {
  /** `s3://<DatasetsBucket>/<datasetPrefix><name>/`, or just `<name>`. */
  readonly dataset: string;
  /** Short name of the run's resources (default: the dataset folder name). */
  readonly name?: string;
  readonly baseModel?: string;
  readonly modelType?: ModelType;
  readonly hyperparameters?: Record<string, string | number | boolean>;
  readonly training?: {
    readonly instanceType?: string;
    readonly spot?: boolean;
    readonly maxRuntimeSeconds?: number;
    readonly maxWaitSeconds?: number;
    readonly volumeSizeGb?: number;
  };
  readonly endpoint?: { readonly name?: string; readonly instanceType?: string; readonly instanceCount?: number };
  /** Set by the kickoff function for a run an upload started. */
  readonly trigger?: TriggerInfo;
}

/** What the workflow passes to Prepare (each time it runs, the settle loop included). */
export interface PrepareEvent {
  /** The execution's input, unvalidated. */
  readonly request: unknown;
  readonly execution: {
    /** `$$.Execution.Name` */
    readonly name: string;
    /** `$$.Execution.StartTime`, ISO 8601. */
    readonly startTime: string;
  };
}

/** A SageMaker tag. */
export interface Tag {
  readonly Key: string;
  readonly Value: string;
}

/** One CreateTrainingJob InputDataConfig channel, in the API's field names. */
export interface TrainingChannel {
  readonly ChannelName: string;
  readonly DataSource: {
    readonly S3DataSource: {
      readonly S3DataType: 'S3Prefix';
      readonly S3Uri: string;
      readonly S3DataDistributionType: 'FullyReplicated';
    };
  };
  readonly InputMode: 'File';
}

/** Prepare's answer while the folder is still changing: the workflow waits and asks again. */
export interface UnsettledRun {
  readonly settled: false;
  /** Seconds the Wait state waits before Prepare runs again. */
  readonly waitSeconds: number;
  /** Why the run is waiting, e.g. "datasets/pokemon/0001.png changed 12 s ago". */
  readonly reason: string;
}

/**
 * Prepare's answer once the folder has settled and everything is valid: the run's names and every
 * per-run value of the SageMaker requests, in the APIs' own field names where they are passed on
 * as they are. Fixed values (roles, images, buckets, the output and checkpoint locations, the
 * metric definitions) live in the definition, not here.
 */
export interface PreparedRun {
  readonly settled: true;
  /** The run name: training job, model and endpoint config are all named this (≤ 63, `[a-zA-Z0-9-]`). */
  readonly run: string;
  readonly dataset: {
    /** The folder's name. */
    readonly name: string;
    /** `s3://bucket/prefix/name/` */
    readonly uri: string;
    readonly images: number;
    readonly captions: number;
    /** Files kohya will not train, each with why (the first 20; Prepare always sets it). */
    readonly skipped?: readonly string[];
    /** How many files are skipped in all (more than `skipped` lists when over 20). */
    readonly skippedCount?: number;
    /** What the pre-flight left to the training container, e.g. images past its bounds (at most 5). */
    readonly notes?: readonly string[];
    /** Images without a caption that the training job captions (caption_missing), their captions written back next to them. */
    readonly captionsToWrite?: number;
  };
  readonly modelType: ModelType;
  readonly baseModel: string;
  /** The LoRA's registry name: the run's stable name (`name`, else the dataset folder name). */
  readonly lora: { readonly name: string };
  /** Per-run fields of CreateTrainingJob. */
  readonly training: {
    readonly jobName: string;
    readonly hyperparameters: Record<string, string>;
    readonly inputDataConfig: TrainingChannel[];
    readonly resourceConfig: {
      readonly InstanceType: string;
      readonly InstanceCount: number;
      readonly VolumeSizeInGB: number;
      /** Only for instance types without local (instance-store) storage; SageMaker refuses it otherwise. */
      readonly VolumeKmsKeyId?: string;
    };
    readonly spot: boolean;
    readonly stoppingCondition: { readonly MaxRuntimeInSeconds: number; readonly MaxWaitTimeInSeconds?: number };
    /** True when the base model is in S3: the job then needs no network at all. */
    readonly networkIsolation: boolean;
    /**
     * CreateTrainingJob's Environment: `HF_TOKEN_SECRET_ID` (models.ts hubTokenEnvironment) when a Hugging Face
     * token is configured and the base model is on the Hub; otherwise empty. Never the token itself.
     */
    readonly environment: Record<string, string>;
  };
  /** How the run is served: on the deployment's shared endpoint, or on an endpoint of its own. */
  readonly serving: DedicatedServing | SharedServing;
  /** `dataset`, `run` (and `pipeline`) tags for every SageMaker resource of the run. */
  readonly tags: Tag[];
}

/** A run served by the deployment's shared endpoint: nothing is created for it but a registry version. */
export interface SharedServing {
  readonly mode: 'shared';
  readonly endpointName: string;
  readonly inferenceComponentName: string;
}

/** A run served by an endpoint of its own, its LoRA fused: per-run fields of CreateModel, CreateEndpointConfig and Create/UpdateEndpoint. */
export interface DedicatedServing {
  readonly mode: 'dedicated';
  /** Set when the deployment is in shared mode but this run cannot use the shared endpoint: why. */
  readonly dedicatedBecause?: string;
  readonly modelName: string;
  readonly endpointConfigName: string;
  /** Stable per dataset (or `endpoint.name`), so retraining updates the endpoint in place. */
  readonly endpointName: string;
  readonly environment: Record<string, string>;
  readonly additionalModelDataSources: Array<{
    readonly ChannelName: string;
    readonly S3DataSource: { readonly S3Uri: string; readonly S3DataType: 'S3Object' | 'S3Prefix'; readonly CompressionType: 'None' };
  }>;
  readonly networkIsolation: boolean;
  /** The complete CreateEndpointConfig request (its KmsKeyId depends on the instance type, see above). */
  readonly endpointConfig: {
    readonly EndpointConfigName: string;
    readonly KmsKeyId?: string;
    readonly ProductionVariants: Array<{
      readonly VariantName: string;
      readonly ModelName: string;
      readonly InstanceType: string;
      readonly InitialInstanceCount: number;
      readonly ContainerStartupHealthCheckTimeoutInSeconds: number;
      readonly ModelDataDownloadTimeoutInSeconds: number;
    }>;
    readonly Tags: Tag[];
  };
}

export type PrepareResult = UnsettledRun | PreparedRun;

/** The errors Prepare raises (the Lambda error's name, which the workflow's Catch and Fail show). */
export const PREPARE_ERRORS = {
  /** The execution input is malformed: a missing or unknown field, a bad value. */
  invalidInput: 'InvalidInput',
  /** The dataset folder is missing, empty, or its content is invalid. */
  invalidDataset: 'InvalidDataset',
} as const;

/** Where in the run a failure happened; chosen by the Catch that caught it. */
export type FailureStage = 'prepare' | 'training' | 'model' | 'endpoint' | 'endpoint-timeout' | 'register' | 'check' | 'promote' | 'smoke';

/** A LoRA version: `name@version`. */
export interface LoraVersionRef {
  readonly name: string;
  readonly version: number;
}

/** What the registry function is asked (the Register, Make current and Mark failed states; `retire` is for operators). */
export type RegistryEvent =
  | {
      readonly action: 'register';
      readonly run: PreparedRun;
      /** The DescribeTrainingJob result the `.sync` training task returned. */
      readonly training: Record<string, unknown>;
      readonly execution: { readonly name: string; readonly startTime: string; readonly arn: string };
    }
  | { readonly action: 'promote'; readonly name: string; readonly version: number }
  | { readonly action: 'reject'; readonly name: string; readonly version: number; readonly reason: string }
  | { readonly action: 'retire'; readonly name: string; readonly version: number };

/** A version the registry function registered (status 'pending'): the Register LoRA state's output, `$.lora`. */
export interface RegisteredLora extends LoraVersionRef {
  /** `name@version`, as a request names it. */
  readonly ref: string;
  readonly status: 'pending';
  readonly modelType: ModelType;
  readonly baseModel: string;
  readonly s3Uri: string;
  readonly sha256: string;
  readonly sizeBytes: number;
  readonly rank: number;
  /** What the LoRA adapts, by diffusers component: a FLUX.1 LoRA's `lora_unet_*_blocks_*` keys adapt the `transformer`. */
  readonly components: Array<'unet' | 'transformer' | 'text_encoder' | 'text_encoder_2'>;
  readonly createdAt: string;
}

/** Make LoRA current's output, `$.promotion`: whether the version became the name's current one (false when a newer one already is). */
export interface LoraPromotion extends LoraVersionRef {
  readonly current: boolean;
}

/**
 * Mark LoRA version failed's output: the version's status afterwards. Only a 'pending' version is
 * marked failed (`changed`); one already ready or retired is left as it is.
 */
export interface LoraRejection extends LoraVersionRef {
  readonly status: LoraStatus;
  readonly changed: boolean;
}

/** A registry version's status (docs/design.md, the registry). */
export type LoraStatus = 'pending' | 'ready' | 'failed' | 'retired';

/** retire's output: the name's current version afterwards (absent when none is left). */
export interface LoraRetirement extends LoraVersionRef {
  readonly status: 'retired';
  readonly current?: number;
}

export type RegistryResult = RegisteredLora | LoraPromotion | LoraRejection | LoraRetirement;

/**
 * What the workflow passes to the lora-check function: try a shared run's new version on the
 * shared endpoint (Try LoRA), or smoke-test a dedicated run's endpoint once in service.
 */
export type LoraCheckEvent = SharedCheckEvent | DedicatedSmokeEvent;

/** What both kinds of check share: where the smoke images go, and the prompt the samples suggest. */
interface SmokeEventFields {
  readonly endpointName: string;
  readonly modelType: ModelType;
  /** The run's base model (`$.run.baseModel`): for FLUX.1 its variant decides the smoke request's steps and guidance. */
  readonly baseModel?: string;
  /** The run's training job: the smoke images go to `models/<job>/smoke/`. */
  readonly trainingJobName: string;
  /** Publish samples' answer (`$.samples`): null, PublishedSamples, or the error that stopped it. Its prompt, if any, is the smoke test's. */
  readonly samples?: unknown;
}

export interface SharedCheckEvent extends SmokeEventFields {
  readonly mode: 'shared';
  readonly inferenceComponentName: string;
  readonly lora: LoraVersionRef;
}

export interface DedicatedSmokeEvent extends SmokeEventFields {
  readonly mode: 'dedicated';
}

/** The smoke test's outcome: the same prompt and seed without and with the LoRA, and how far apart the two images are. */
export interface SmokeResult {
  readonly bucket: string;
  /** Keys of `without-lora.png`, `with-lora.png` and `side-by-side.png` under `models/<job>/smoke/`. */
  readonly withoutLora: string;
  readonly withLora: string;
  readonly sideBySide: string;
  readonly prompt: string;
  readonly seed: number;
  readonly width: number;
  readonly height: number;
  readonly steps: number;
  /** Mean absolute difference per RGB channel, 0–255. */
  readonly meanAbsoluteDifference: number;
  /** Share (0–1) of pixels with a channel differing by more than the pixel tolerance. */
  readonly changedPixelShare: number;
  /** The threshold: a smaller mean difference means the LoRA had no effect (SmokeTestFailed). */
  readonly minMeanAbsoluteDifference: number;
  readonly milliseconds: number;
}

/** The lora-check function's answer in shared mode, `$.check`: the version served, and the smoke test made with it. */
export interface LoraCheckResult {
  readonly endpointName: string;
  readonly inferenceComponentName: string;
  /** `name@version` the endpoint said it used. */
  readonly lora: string;
  readonly sha256?: string;
  readonly milliseconds: number;
  readonly smoke: SmokeResult;
}

/** What the workflow passes to the samples function after training. */
export interface PublishSamplesEvent {
  readonly trainingJobName: string;
  /**
   * The run's dataset folder (`s3://<bucket>/<prefix>`, prefix ending in `/`): the captions the job
   * wrote for images without one are copied back there, next to their images, never over an existing object.
   */
  readonly datasetFolder: { readonly bucket: string; readonly prefix: string };
}

/** The samples function's answer, `$.samples`: what it wrote from the `sample/` folder of `models/<job>/output/output.tar.gz` to `models/<job>/samples/`. */
export interface PublishedSamples {
  readonly bucket: string;
  /** `models/<job>/samples/` */
  readonly prefix: string;
  /** Files written; 0 when the job rendered none (sampling off: no output.tar.gz, or no `sample/` in it). */
  readonly count: number;
  /** Keys of the copies of `samples.json` and the contact sheet, when the job wrote them. */
  readonly samplesJson?: string;
  readonly contactSheet?: string;
  /** Sample files left in the archive beyond the function's bounds (count, bytes, per-file size). */
  readonly omitted: number;
  /** The first sample prompt, from samples.json: the smoke test's prompt. */
  readonly prompt?: string;
  /** Captions the job generated and the function wrote next to their images in the dataset folder. */
  readonly captionsWritten?: number;
  /** Generated captions not written because the folder already had that caption file (the user's wins). */
  readonly captionsKept?: number;
}

/** The samples function's error for an output.tar.gz that is not a readable tar.gz: never retried. */
export const SAMPLES_ARCHIVE_INVALID = 'SamplesArchiveInvalid';

/** The registry function's timeout: a registration's claim on its execution lasts longer (lambda/registry/register.ts). */
export const REGISTRY_TIMEOUT_SECONDS = 600;

/** The errors of the registry and lora-check functions (their Lambda error names). */
export const LORA_ERRORS = {
  /** The training output holds no single readable `.safetensors` LoRA of the run's family. */
  loraFileInvalid: 'LoraFileInvalid',
  /** A conditional registry write lost (a version or status changed under it). */
  registryConflict: 'RegistryConflict',
  /** The name or version is not in the registry. */
  loraNotFound: 'LoraNotFound',
  /** The registry event is malformed. */
  invalidRegistryEvent: 'InvalidRegistryEvent',
  /** A registry transaction lost to another write or was throttled, or another invocation holds the registration: the state retries. */
  registryBusy: 'RegistryBusy',
  /** The shared endpoint has no copy of its model yet (scaling from zero): the state retries. */
  sharedEndpointWarming: 'SharedEndpointWarming',
  /** The shared endpoint answered 429, 503 or 504 (at capacity, registry or S3 throttling, a slow download): the state retries. */
  sharedEndpointBusy: 'SharedEndpointBusy',
  /** The shared endpoint could not judge the LoRA (a 500, an answer that is not the shared server's): a fault of the deployment, not of the LoRA. */
  sharedEndpointUnavailable: 'SharedEndpointUnavailable',
  /** The shared server refused the LoRA itself (400, 404, 410, 422): the version is rejected; the Cause says what it answered. */
  loraCheckFailed: 'LoraCheckFailed',
  /**
   * The smoke test: the same prompt and seed without and with the LoRA gave the same image (the LoRA
   * had no effect), or a dedicated endpoint failed to answer them. Never retried.
   */
  smokeTestFailed: 'SmokeTestFailed',
  /** A dedicated endpoint answered the smoke test 429, 503 or 504, or was not ready: the state retries. */
  endpointBusy: 'EndpointBusy',
} as const;

/** The errors that say what is wrong with a request or a LoRA: never retried (the same call would be refused again). */
export const LORA_REFUSALS: readonly string[] = [
  LORA_ERRORS.loraFileInvalid,
  LORA_ERRORS.registryConflict,
  LORA_ERRORS.loraNotFound,
  LORA_ERRORS.invalidRegistryEvent,
  LORA_ERRORS.loraCheckFailed,
  LORA_ERRORS.smokeTestFailed,
];

/** What the workflow passes to Report at the end of a run. */
export type ReportEvent =
  | {
      readonly outcome: 'succeeded';
      readonly execution: { readonly name: string; readonly startTime: string };
      readonly run: PreparedRun;
      /** The DescribeTrainingJob result the `.sync` training task returned. */
      readonly training: Record<string, unknown>;
      // The workflow seeds the four as null; each mode's states fill its own.
      /** The last DescribeEndpoint result (dedicated runs). */
      readonly endpoint?: Record<string, unknown> | null;
      /** The registered version (shared runs). */
      readonly lora?: RegisteredLora | null;
      /** Whether the version became current (shared runs). */
      readonly promotion?: LoraPromotion | null;
      /** The check request's answer (shared runs), with its smoke test. */
      readonly check?: LoraCheckResult | null;
      /** Publish samples' answer, or the error that stopped it (`{Error, Cause}`): the run goes on without samples. */
      readonly samples?: PublishedSamples | { readonly Error: string; readonly Cause?: string } | null;
      /** The dedicated endpoint's smoke test (dedicated runs; a shared run's is in `check`). */
      readonly smoke?: SmokeResult | null;
    }
  | {
      readonly outcome: 'failed';
      readonly execution: { readonly name: string; readonly startTime: string };
      readonly stage: FailureStage;
      /** The caught error: `{Error, Cause}` as Step Functions' Catch gives it. */
      readonly error: { readonly Error: string; readonly Cause?: string };
      /**
       * The execution's state when the failure was caught: `request`, and once prepared `run`
       * (PreparedRun), `training`, `endpoint` (the last DescribeEndpoint), and `deployment`
       * (`{endpointExisted}`: false when this run created the endpoint, true when it updated one);
       * for shared runs `lora` (RegisteredLora) once registered, `check` once checked.
       */
      readonly state: Record<string, unknown>;
    };

/**
 * A successful run's summary: the execution's output. Should the Report function fail, the
 * workflow's fallback gives only run, dataset, trainingJobName, modelArtifact and endpointName.
 */
export interface RunSummary {
  readonly run: string;
  readonly dataset: string;
  readonly trainingJobName: string;
  readonly modelArtifact: string;
  readonly endpointName: string;
  readonly trainingSeconds: number;
  readonly billableSeconds: number;
  /** `(1 - billable / training) × 100`, rounded to one decimal; 0 without spot. */
  readonly spotSavingsPercent: number;
  readonly servingMode: 'shared' | 'dedicated';
  /** Shared runs: the registered LoRA's name and version. */
  readonly loraName?: string;
  readonly loraVersion?: number;
  /** Shared runs: the inference component a request names. */
  readonly inferenceComponentName?: string;
  /** Shared runs: whether a request naming only the LoRA's name now gets this version. */
  readonly madeCurrent?: boolean;
  /** A ready-to-paste `aws sagemaker-runtime invoke-endpoint …` line. */
  readonly invokeCommand: string;
  /** A run of a shared deployment served by an endpoint of its own: why. */
  readonly dedicatedBecause?: string;
  /** The training samples copied next to the model, or why there are none. */
  readonly samples?: SamplesSummary;
  /** The smoke test that proved the LoRA changes the image. */
  readonly smoke?: SmokeSummary;
  /** Captions the job generated for images without one, written back next to them (when any were generated). */
  readonly captions?: CaptionsSummary;
}

/** The captions a run generated: written next to their images in the dataset folder, or kept (the user's caption was there first). */
export interface CaptionsSummary {
  readonly written: number;
  readonly kept: number;
  /** `s3://bucket/prefix/` of the dataset folder. */
  readonly folder: string;
}

/** Where a run's samples are: `count` objects under `location` (0 when sampling was off, or with `note` when publishing failed). */
export interface SamplesSummary {
  readonly count: number;
  /** `s3://bucket/models/<job>/samples/` */
  readonly location?: string;
  readonly contactSheet?: string;
  readonly note?: string;
}

/** A smoke test's numbers and where its three images are. */
export interface SmokeSummary {
  readonly meanAbsoluteDifference: number;
  readonly changedPixelShare: number;
  readonly minMeanAbsoluteDifference: number;
  /** `s3://bucket/models/<job>/smoke/` */
  readonly location: string;
}

/**
 * What a failed run leaves to clean up: a dedicated run's model and endpoint config (and the
 * endpoint it created), a shared run's registered version, which is marked failed, or (a failed
 * smoke test on an endpoint this run updated) the endpoint to update back to its previous config.
 */
export type RunCleanup =
  | {
      readonly modelName: string;
      readonly endpointConfigName: string;
      /** Set when this run created the endpoint (it failed as new), so it is deleted too. */
      readonly endpointName?: string;
      readonly loraVersion?: undefined;
      readonly rollBack?: undefined;
    }
  | {
      readonly modelName?: undefined;
      readonly endpointConfigName?: undefined;
      readonly endpointName?: undefined;
      readonly loraVersion: LoraVersionRef;
      readonly rollBack?: undefined;
    }
  | {
      readonly modelName?: undefined;
      readonly endpointConfigName?: undefined;
      readonly endpointName?: undefined;
      readonly loraVersion?: undefined;
      /** UpdateEndpoint's request: the endpoint, and the config it served before this run. */
      readonly rollBack: { readonly EndpointName: string; readonly EndpointConfigName: string };
    };

/** What Report returns: the notification, and the execution's output or its Error and Cause. */
export interface ReportResult {
  /** SNS Subject: printable ASCII, fewer than 100 characters, one line. */
  readonly subject: string;
  /** The notification body: readable text, then the details as JSON. */
  readonly message: string;
  /** On success, the execution's output. */
  readonly summary?: RunSummary;
  /** On failure, the Fail state's Error: e.g. `InvalidDataset`, `TrainingFailed`, `EndpointFailed`. */
  readonly error?: string;
  /** On failure, the Fail state's Cause: what failed and why (every problem of a refused input; at most 4000 characters). */
  readonly cause?: string;
  /**
   * On a failed deployment (stage `model` or `endpoint`, or `smoke` for an endpoint this run
   * created): what this run created, to delete; on a shared run the server refused (stage `check`)
   * or whose smoke test failed (stage `smoke`): the version to mark failed; on a dedicated run's
   * failed smoke test after an update: the endpoint and the config to update it back to.
   */
  readonly cleanup?: RunCleanup;
}

/**
 * The deploy-time settings Prepare works from, set by the stack as the function's `SETTINGS`
 * environment variable (JSON). They are the defaults a run's `train.json` and execution input
 * override, and the limits no run may pass.
 */
export interface PrepareSettings {
  readonly datasetsBucket: string;
  /** e.g. `datasets/` */
  readonly datasetPrefix: string;
  /** e.g. `dataset.toml` */
  readonly triggerFileName: string;
  /** A folder is settled once no object in it is newer than this. */
  readonly settleSeconds: number;
  /** A run whose folder is still changing this long after the execution started fails (InvalidDataset). */
  readonly maxSettleWaitSeconds: number;
  /** First part of every run and endpoint name; the workflow's IAM policies are scoped to it. */
  readonly namePrefix: string;
  readonly modelType: ModelType;
  /** The deploy-time base model, resolved (a Hugging Face id or an `s3://` URI). */
  readonly baseModel: string;
  /**
   * The Secrets Manager secret (name or ARN) holding a Hugging Face token, when configured: the training
   * and serving roles may read it; jobs and models of a Hub base model get it as `HF_TOKEN_SECRET_ID`.
   */
  readonly huggingFaceTokenSecretId?: string;
  /**
   * The one S3 base model the training and endpoint roles may read (the deploy-time one, when in
   * S3). A run asking for another S3 location is refused: its job could not read it.
   */
  readonly readableS3BaseModel?: string;
  readonly training: {
    readonly instanceType: string;
    readonly spot: boolean;
    readonly maxRuntimeSeconds: number;
    readonly maxWaitSeconds: number;
    readonly volumeSizeGb: number;
    /** The deploy-wide default of the `caption_missing` hyperparameter; absent: the model type's default (the schema's). */
    readonly captionMissing?: boolean;
  };
  readonly endpoint: {
    /** shared: runs of the deploy-time modelType and baseModel use the shared endpoint. */
    readonly mode: 'shared' | 'dedicated';
    /** The shared endpoint and its inference component; undefined in dedicated mode. */
    readonly shared?: { readonly endpointName: string; readonly inferenceComponentName: string };
    readonly instanceType: string;
    readonly instanceCount: number;
    /** ContainerStartupHealthCheckTimeoutInSeconds */
    readonly startupHealthCheckTimeoutSeconds: number;
    /** ModelDataDownloadTimeoutInSeconds */
    readonly modelDataDownloadTimeoutSeconds: number;
    /** LORA_SCALE */
    readonly loraScale: number;
  };
  /** The pipeline key's ARN, for the volumes of instance types without local storage. */
  readonly keyArn: string;
  /** Checkpoints expire after this many days; a run's longest possible job must end sooner. */
  readonly checkpointExpirationDays: number;
  /** Value of the `pipeline` tag on every SageMaker resource (the stack name). */
  readonly pipeline: string;
}
