/**
 * The contracts between the workflow (lib/run-definition.ts) and its functions: the state names the
 * status function reads back from an execution's history, what the kickoff puts into an
 * execution's input, what Prepare receives and returns, and what Report turns a run's end into.
 * Both sides import these types, so a change to one shows up as a type error in the other.
 */

/** The workflow's state names. The status function maps them to phases; the definition uses them as is. */
export const STATES = {
  readInput: 'Read input',
  prepare: 'Prepare run',
  settled: 'Dataset settled?',
  waitForUpload: 'Wait for the upload to settle',
  train: 'Train LoRA',
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
  reportFailure: 'Report failure',
  reportFailurePlainly: 'Report failure without details',
  cleanUp: 'Clean up?',
  deleteFailedEndpoint: 'Delete failed endpoint',
  deleteEndpointConfig: 'Delete endpoint config',
  deleteModel: 'Delete model',
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
  [STATES.reportFailure]: 'FAILED',
  [STATES.reportFailurePlainly]: 'FAILED',
  [STATES.cleanUp]: 'FAILED',
  [STATES.deleteFailedEndpoint]: 'FAILED',
  [STATES.deleteEndpointConfig]: 'FAILED',
  [STATES.deleteModel]: 'FAILED',
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
  readonly modelType?: 'sd15' | 'sdxl';
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
  };
  readonly modelType: 'sd15' | 'sdxl';
  readonly baseModel: string;
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
  };
  /** Per-run fields of CreateModel, CreateEndpointConfig and Create/UpdateEndpoint. */
  readonly serving: {
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
  };
  /** `dataset`, `run` (and `pipeline`) tags for every SageMaker resource of the run. */
  readonly tags: Tag[];
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
export type FailureStage = 'prepare' | 'training' | 'model' | 'endpoint' | 'endpoint-timeout';

/** What the workflow passes to Report at the end of a run. */
export type ReportEvent =
  | {
      readonly outcome: 'succeeded';
      readonly execution: { readonly name: string; readonly startTime: string };
      readonly run: PreparedRun;
      /** The DescribeTrainingJob result the `.sync` training task returned. */
      readonly training: Record<string, unknown>;
      /** The last DescribeEndpoint result. */
      readonly endpoint: Record<string, unknown>;
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
       * (`{endpointExisted}`: false when this run created the endpoint, true when it updated one).
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
}

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
  /** On a failed deployment (stage `model` or `endpoint`): what this run created, to delete. */
  readonly cleanup?: {
    readonly modelName: string;
    readonly endpointConfigName: string;
    /** Set when this run created the endpoint (it failed as new), so it is deleted too. */
    readonly endpointName?: string;
  };
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
  readonly modelType: 'sd15' | 'sdxl';
  /** The deploy-time base model, resolved (a Hugging Face id or an `s3://` URI). */
  readonly baseModel: string;
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
  };
  readonly endpoint: {
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
