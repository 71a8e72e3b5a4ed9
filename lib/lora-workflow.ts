import { Duration, type RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as logs from 'aws-cdk-lib/aws-logs';
import { LogGroup } from 'aws-cdk-lib/aws-logs';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { CAPTION_EXTENSIONS } from '../lambda/shared/caption-extensions';
import { type PrepareSettings, REGISTRY_TIMEOUT_SECONDS } from '../lambda/shared/contract';
import { LoraRegistry } from './lora-registry';
import { iamFindingArn } from './nag-findings';
import { PipelineFunction, type PipelineFunctionProps } from './pipeline-function';
import { runDefinition } from './run-definition';
import type { PipelineStorage } from './pipeline-storage';
import { ServingContainer } from './serving-container';
import { SharedEndpoint } from './shared-endpoint';
import type { TrainingContainer } from './training-container';

/** The deployment's shared endpoint, as lib/shared-endpoint.ts names it. */
export interface SharedEndpointRef {
  readonly endpointName: string;
  readonly inferenceComponentName: string;
  readonly endpointArn: string;
  readonly inferenceComponentArn: string;
}

/** Properties of {@link LoraWorkflow}. */
export interface LoraWorkflowProps {
  readonly storage: PipelineStorage;
  readonly training: TrainingContainer;
  readonly serving: ServingContainer;
  /** Where every run reports its end. */
  readonly topic: sns.ITopic;
  /** The LoRA registry table (lib/lora-registry.ts), in both modes: the registry function writes it. */
  readonly registry: dynamodb.ITable;
  /** The shared endpoint and its inference component, when `settings.endpoint.mode` is 'shared'. */
  readonly sharedEndpoint?: SharedEndpointRef;
  /**
   * Prepare's deploy-time settings, less what the construct knows itself (buckets, key, serving
   * timeouts, the shared endpoint, the tag). See {@link PrepareSettings}.
   */
  readonly settings: Omit<PrepareSettings, 'datasetsBucket' | 'keyArn' | 'pipeline' | 'endpoint'> & {
    readonly endpoint: Pick<PrepareSettings['endpoint'], 'instanceType' | 'instanceCount' | 'loraScale' | 'mode'>;
  };
  readonly logRetention: logs.RetentionDays;
  readonly removalPolicy: RemovalPolicy;
}

/**
 * The run workflow (Step Functions, standard, JSONPath): prepare and validate the run, wait while
 * the upload settles, train on a managed-spot job with checkpoints; then either register the LoRA,
 * try it on the shared endpoint and make it current, or (a dedicated run) create the model and
 * endpoint config, create or update the dataset's endpoint and wait until it is in service; on any
 * failure, report why, clean up what the run created, notify, and fail with that reason.
 */
export class LoraWorkflow extends Construct {
  public readonly stateMachine: sfn.StateMachine;
  public readonly logGroup: LogGroup;
  public readonly prepareFunction: PipelineFunction;
  public readonly reportFunction: PipelineFunction;
  /** Registers, promotes, rejects and (for operators) retires LoRA versions; in both modes. */
  public readonly registryFunction: PipelineFunction;
  /** The smoke test: tries a new version on the shared endpoint, or a dedicated run's endpoint; in both modes. */
  public readonly checkFunction: PipelineFunction;
  /** Copies the samples a training job rendered next to its model. */
  public readonly samplesFunction: PipelineFunction;

  private readonly props: LoraWorkflowProps;

  constructor(scope: Construct, id: string, props: LoraWorkflowProps) {
    super(scope, id);
    this.props = props;
    const stack = Stack.of(this);
    const { storage, training, serving, topic, sharedEndpoint } = props;
    const namePrefix = props.settings.namePrefix;
    checkServingMode(props);

    const settings: PrepareSettings = {
      ...props.settings,
      datasetsBucket: storage.datasetsBucket.bucketName,
      keyArn: storage.key.keyArn,
      pipeline: stack.stackName,
      endpoint: {
        ...props.settings.endpoint,
        ...(sharedEndpoint && { shared: { endpointName: sharedEndpoint.endpointName, inferenceComponentName: sharedEndpoint.inferenceComponentName } }),
        startupHealthCheckTimeoutSeconds: serving.startupHealthCheckTimeoutSeconds,
        modelDataDownloadTimeoutSeconds: ServingContainer.MODEL_DATA_DOWNLOAD_TIMEOUT_SECONDS,
      },
    };
    const functionDefaults = { logRetention: props.logRetention, removalPolicy: props.removalPolicy };
    this.prepareFunction = new PipelineFunction(this, 'Prepare', {
      ...functionDefaults,
      name: 'prepare',
      description: 'Resolves and validates a run: its input, train.json, the dataset folder and hyperparameters',
      environment: { SETTINGS: stack.toJsonString(settings) },
      timeout: Duration.minutes(2),
      memorySize: 512,
    });
    this.grantDatasetRead(this.prepareFunction.role, props.settings.datasetPrefix);
    this.grantFluxFolderListing(this.prepareFunction.role);
    this.reportFunction = new PipelineFunction(this, 'Report', {
      ...functionDefaults,
      name: 'report',
      description: "Turns a run's end into its notification (with links to its samples and smoke images), its output, or its error and cause",
    });
    // Its links are presigned with its own role: they work only if the role may read the objects.
    this.grantArtifactLinks(this.reportFunction.role);
    this.registryFunction = this.createRegistryFunction(functionDefaults);
    this.samplesFunction = this.createSamplesFunction(functionDefaults);
    this.checkFunction = this.createCheckFunction(functionDefaults, namePrefix, sharedEndpoint);

    const sagemakerArn = (resource: string) => stack.formatArn({ service: 'sagemaker', resource, resourceName: `${namePrefix}-*` });
    const arns = {
      trainingJob: sagemakerArn('training-job'),
      model: sagemakerArn('model'),
      endpointConfig: sagemakerArn('endpoint-config'),
      endpoint: sagemakerArn('endpoint'),
    };
    const definition = runDefinition(this, {
      prepare: this.prepareFunction.function,
      report: this.reportFunction.function,
      samples: this.samplesFunction.function,
      check: this.checkFunction.function,
      topic,
      storage,
      datasetPrefix: props.settings.datasetPrefix,
      training,
      serving,
      shared: sharedEndpoint && { registry: this.registryFunction.function },
    });

    this.logGroup = new LogGroup(this, 'Logs', {
      logGroupName: `/aws/vendedlogs/states/${stack.stackName}-runs`,
      retention: props.logRetention,
      removalPolicy: props.removalPolicy,
    });
    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      definitionBody: sfn.DefinitionBody.fromChainable(definition),
      stateMachineType: sfn.StateMachineType.STANDARD,
      queryLanguage: sfn.QueryLanguage.JSON_PATH,
      comment: 'LoRA run: prepare, train on managed spot, then serve on the shared endpoint or deploy to an endpoint of its own',
      logs: { destination: this.logGroup, level: sfn.LogLevel.ALL, includeExecutionData: true },
      tracingEnabled: true,
    });
    this.grantSageMaker(arns, [training.role, serving.role]);
    if (sharedEndpoint) this.denySharedEndpointChanges(sharedEndpoint);
    this.grantKeyUse();
  }

  /** What the state machine does in SageMaker, on the run-name prefix's resources only. */
  private grantSageMaker(arns: Record<'trainingJob' | 'model' | 'endpointConfig' | 'endpoint', string>, roles: iam.IRole[]): void {
    const stack = Stack.of(this);
    const statements: Array<[string, string[], string[]]> = [
      // Step Functions tags the jobs it starts (AddTags) and reads their tags back (ListTags).
      ['RunTrainingJobs', ['sagemaker:CreateTrainingJob', 'sagemaker:DescribeTrainingJob', 'sagemaker:StopTrainingJob', 'sagemaker:AddTags', 'sagemaker:ListTags'], [arns.trainingJob]],
      ['ManageModels', ['sagemaker:CreateModel', 'sagemaker:DeleteModel', 'sagemaker:AddTags'], [arns.model]],
      ['ManageEndpointConfigs', ['sagemaker:CreateEndpointConfig', 'sagemaker:DeleteEndpointConfig', 'sagemaker:AddTags'], [arns.endpointConfig]],
      // Creating or updating an endpoint is authorized on the endpoint and on the config it uses.
      ['DeployEndpoints', ['sagemaker:CreateEndpoint', 'sagemaker:UpdateEndpoint'], [arns.endpoint, arns.endpointConfig]],
      ['ManageEndpoints', ['sagemaker:DescribeEndpoint', 'sagemaker:DeleteEndpoint', 'sagemaker:AddTags'], [arns.endpoint]],
      // Step Functions' own SageMaker policies read back the tags of what they create.
      ['ReadTags', ['sagemaker:ListTags'], [arns.model, arns.endpointConfig, arns.endpoint]],
      // `.sync` learns that a job ended from this managed EventBridge rule.
      [
        'FollowTrainingJobs',
        ['events:PutTargets', 'events:PutRule', 'events:DescribeRule'],
        [stack.formatArn({ service: 'events', resource: 'rule', resourceName: 'StepFunctionsGetEventsForSageMakerTrainingJobsRule' })],
      ],
    ];
    for (const [sid, actions, resources] of statements) {
      this.stateMachine.addToRolePolicy(new iam.PolicyStatement({ sid, actions, resources }));
    }
    this.stateMachine.addToRolePolicy(
      new iam.PolicyStatement({
        sid: 'PassTheJobAndEndpointRoles',
        actions: ['iam:PassRole'],
        resources: roles.map((role) => role.roleArn),
        conditions: { StringEquals: { 'iam:PassedToService': 'sagemaker.amazonaws.com' } },
      }),
    );
    const policy = this.stateMachine.role.node.findChild('DefaultPolicy');
    Validations.of(policy).acknowledge(
      ...Object.values(arns).map((arn) => ({
        id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, arn)}]`,
        reason: `Run and endpoint names are chosen per run; every name starts with the stack's prefix, so the workflow can touch no other SageMaker resource.`,
      })),
      {
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason: 'X-Ray tracing and log delivery to CloudWatch Logs (logs:*LogDelivery, xray:Put*) support no resource-level permissions.',
      },
      ...this.invokedFunctions().map(({ function: fn }) => ({
        id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, `${fn.functionArn}:*`)}]`,
        reason: `Step Functions' Lambda task may invoke ${fn.node.path} by a qualified ARN (a version or alias of that one function); CDK grants both forms.`,
      })),
    );
  }

  /** The registry function: in both modes, so an operator can retire versions whatever the mode is now. */
  private createRegistryFunction(defaults: Pick<PipelineFunctionProps, 'logRetention' | 'removalPolicy'>): PipelineFunction {
    const { storage, training, registry } = this.props;
    const fn = new PipelineFunction(this, 'Registry', {
      ...defaults,
      name: 'registry',
      description: 'Registers a trained LoRA version in the registry, makes it current, marks it failed or retires it',
      environment: {
        LORA_REGISTRY_TABLE: registry.tableName,
        LORA_BUCKET: storage.artifactsBucket.bucketName,
        MODELS_PREFIX: training.outputPrefix,
        LORA_PREFIX: SharedEndpoint.LORAS_PREFIX,
      },
      // Registering streams the LoRA (10 MB to 1 GB) out of model.tar.gz, through gunzip and a
      // SHA-256, into its copy; memory stays bounded (5 MB upload parts), time grows with the size.
      // A registration's claim outlives this timeout (lambda/registry/register.ts).
      timeout: Duration.seconds(REGISTRY_TIMEOUT_SECONDS),
      memorySize: 512,
    });
    // Its items only (no delete, no scan), and the table's key only through DynamoDB.
    LoraRegistry.grantReadWrite(registry, fn.role);
    this.grantLoraCopy(fn.role);
    return fn;
  }

  private createCheckFunction(defaults: Pick<PipelineFunctionProps, 'logRetention' | 'removalPolicy'>, namePrefix: string, sharedEndpoint?: SharedEndpointRef): PipelineFunction {
    const { storage, training } = this.props;
    const fn = new PipelineFunction(this, 'LoraCheck', {
      ...defaults,
      name: 'lora-check',
      description: 'Smoke-tests a LoRA: the same request without and with it, on the shared endpoint before it is made current, or on a dedicated endpoint',
      environment: { ARTIFACTS_BUCKET: storage.artifactsBucket.bucketName, MODELS_PREFIX: training.outputPrefix, DATA_KEY_ARN: storage.key.keyArn },
      // Two generations (SageMaker's limit for each is 60 s), then two PNG decodes and an encode.
      timeout: Duration.seconds(180),
      memorySize: 1024,
    });
    this.grantInvoke(fn.role, namePrefix, sharedEndpoint);
    this.grantSmokeWrites(fn.role);
    return fn;
  }

  private createSamplesFunction(defaults: Pick<PipelineFunctionProps, 'logRetention' | 'removalPolicy'>): PipelineFunction {
    const { storage, training } = this.props;
    const fn = new PipelineFunction(this, 'Samples', {
      ...defaults,
      name: 'samples',
      description:
        "Publishes the sample images in a training job's output.tar.gz to models/<job>/samples/, next to its model, and its generated captions next to their images",
      environment: {
        ARTIFACTS_BUCKET: storage.artifactsBucket.bucketName,
        MODELS_PREFIX: training.outputPrefix,
        DATA_KEY_ARN: storage.key.keyArn,
      },
      // Streams at most 512 MB of samples out of the archive, 4 PUTs of at most 32 MB each in flight.
      timeout: Duration.seconds(300),
      memorySize: 512,
    });
    this.grantSampleCopies(fn.role);
    this.grantCaptionWriteBack(fn.role);
    return fn;
  }

  /** The functions the state machine invokes. */
  private invokedFunctions(): PipelineFunction[] {
    return [this.prepareFunction, this.reportFunction, this.samplesFunction, this.checkFunction, ...(this.props.sharedEndpoint ? [this.registryFunction] : [])];
  }

  /**
   * The shared endpoint's name starts with the stack's prefix too, so the grants above would cover
   * it: an explicit deny keeps every run, whatever Prepare answers, from deploying to, replacing or
   * deleting it. CloudFormation alone manages it.
   */
  private denySharedEndpointChanges(sharedEndpoint: SharedEndpointRef): void {
    this.stateMachine.addToRolePolicy(
      new iam.PolicyStatement({
        sid: 'NeverTouchTheSharedEndpoint',
        effect: iam.Effect.DENY,
        actions: ['sagemaker:CreateEndpoint', 'sagemaker:UpdateEndpoint', 'sagemaker:DeleteEndpoint'],
        // By its known name, not the endpoint's attribute: the state machine then does not wait for
        // the endpoint's creation. SageMaker's ARNs hold names in lowercase.
        resources: [Stack.of(this).formatArn({ service: 'sagemaker', resource: 'endpoint', resourceName: sharedEndpoint.endpointName.toLowerCase() })],
      }),
    );
  }

  /**
   * The registry function reads the training jobs' model.tar.gz under models/ and writes the LoRA
   * copies under loras/, nothing else: no listing, no delete, and no write where training output is.
   * A multipart upload's Create, UploadPart and Complete are all authorized as s3:PutObject; its
   * abort has an action of its own. S3 uses the pipeline key for it (the bucket's default).
   */
  private grantLoraCopy(role: iam.IRole): void {
    const { artifactsBucket } = this.props.storage;
    const models = artifactsBucket.arnForObjects(`${this.props.training.outputPrefix}*`);
    const loras = artifactsBucket.arnForObjects(`${SharedEndpoint.LORAS_PREFIX}*`);
    role.addToPrincipalPolicy(new iam.PolicyStatement({ sid: 'ReadTrainingOutputs', actions: ['s3:GetObject'], resources: [models] }));
    role.addToPrincipalPolicy(new iam.PolicyStatement({ sid: 'WriteLoraCopies', actions: ['s3:PutObject', 's3:AbortMultipartUpload'], resources: [loras] }));
    this.keyThroughS3(role, 'UseTheDataKeyThroughS3', ['kms:Decrypt', 'kms:GenerateDataKey']);
    Validations.of(role.node.findChild('DefaultPolicy')).acknowledge(
      {
        id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, models)}]`,
        reason: `The registry function reads the model.tar.gz a training job wrote under ${this.props.training.outputPrefix}<job>/output/; job names are chosen per run.`,
      },
      {
        id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, loras)}]`,
        reason: `The registry function writes each LoRA version to ${SharedEndpoint.LORAS_PREFIX}<name>/<version>.safetensors (never over an existing object); names and versions are chosen per run.`,
      },
    );
  }

  /**
   * The check function invokes the shared endpoint's inference component and the runs' dedicated
   * endpoints, nothing else. InvokeEndpoint is authorized on the endpoint (required) and on the
   * inference component named in the request (optional resource type, Service Authorization
   * Reference): the shared ones by their exact ARNs, the dedicated ones by the run-name prefix.
   */
  private grantInvoke(role: iam.IRole, namePrefix: string, sharedEndpoint?: SharedEndpointRef): void {
    if (sharedEndpoint) {
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'InvokeTheSharedEndpoint',
          actions: ['sagemaker:InvokeEndpoint'],
          resources: [sharedEndpoint.endpointArn, sharedEndpoint.inferenceComponentArn],
        }),
      );
    }
    const dedicated = Stack.of(this).formatArn({ service: 'sagemaker', resource: 'endpoint', resourceName: `${namePrefix}-*` });
    role.addToPrincipalPolicy(new iam.PolicyStatement({ sid: 'InvokeDedicatedEndpoints', actions: ['sagemaker:InvokeEndpoint'], resources: [dedicated] }));
    Validations.of(role.node.findChild('DefaultPolicy')).acknowledge({
      id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, dedicated)}]`,
      reason: "A dedicated run's endpoint is named per dataset, under the stack's prefix; the smoke test invokes only those endpoints (it can create, change or delete none).",
    });
  }

  /** The pipeline key, through S3 only, for `actions`. */
  private keyThroughS3(role: iam.IRole, sid: string, actions: string[]): void {
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid,
        actions,
        resources: [this.props.storage.key.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': `s3.${Stack.of(this).region}.amazonaws.com` } },
      }),
    );
  }

  /** The smoke images, `models/<job>/smoke/*`: written (single PUTs, SSE-KMS), never read, listed or deleted. */
  private grantSmokeWrites(role: iam.IRole): void {
    const smoke = this.props.storage.artifactsBucket.arnForObjects(`${this.props.training.outputPrefix}*/smoke/*`);
    role.addToPrincipalPolicy(new iam.PolicyStatement({ sid: 'WriteSmokeImages', actions: ['s3:PutObject'], resources: [smoke] }));
    this.keyThroughS3(role, 'EncryptSmokeImagesThroughS3', ['kms:GenerateDataKey']);
    Validations.of(role.node.findChild('DefaultPolicy')).acknowledge({
      id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, smoke)}]`,
      reason: `The smoke test writes without-lora.png, with-lora.png and side-by-side.png under ${this.props.training.outputPrefix}<job>/smoke/; job names are chosen per run.`,
    });
  }

  /**
   * The samples function checks for and reads `models/<job>/output/output.tar.gz` (ListBucket limited
   * to that exact prefix, so a missing archive is "no samples", not AccessDenied) and writes
   * `models/<job>/samples/*`, with the key through S3; nothing else of the bucket.
   */
  private grantSampleCopies(role: iam.IRole): void {
    const { storage, training } = this.props;
    const source = `${training.outputPrefix}*/output/output.tar.gz`;
    const sourceObjects = storage.artifactsBucket.arnForObjects(source);
    const targetObjects = storage.artifactsBucket.arnForObjects(`${training.outputPrefix}*/samples/*`);
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({ sid: 'FindOutputArchive', actions: ['s3:ListBucket'], resources: [storage.artifactsBucket.bucketArn], conditions: { StringLike: { 's3:prefix': [source] } } }),
    );
    role.addToPrincipalPolicy(new iam.PolicyStatement({ sid: 'ReadOutputArchive', actions: ['s3:GetObject'], resources: [sourceObjects] }));
    role.addToPrincipalPolicy(new iam.PolicyStatement({ sid: 'WriteSamples', actions: ['s3:PutObject'], resources: [targetObjects] }));
    this.keyThroughS3(role, 'ReadAndWriteWithTheDataKeyThroughS3', ['kms:Decrypt', 'kms:GenerateDataKey']);
    Validations.of(role.node.findChild('DefaultPolicy')).acknowledge(
      {
        id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, sourceObjects)}]`,
        reason: `The samples function reads each training job's ${training.outputPrefix}<job>/output/output.tar.gz, where its samples are; job names are chosen per run.`,
      },
      {
        id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, targetObjects)}]`,
        reason: `The samples function writes them under ${training.outputPrefix}<job>/samples/; job names are chosen per run.`,
      },
    );
  }

  /**
   * The samples function writes the captions a job generated next to their images: `.txt` and
   * `.caption` objects under the dataset prefix only (single PUTs with If-None-Match, so never over
   * a caption already there), SSE-KMS with the key through S3. It reads and lists nothing there.
   * Called after {@link grantSampleCopies}, whose key statement covers these writes.
   */
  private grantCaptionWriteBack(role: iam.IRole): void {
    const { datasetsBucket } = this.props.storage;
    const prefix = this.props.settings.datasetPrefix;
    const captions = CAPTION_EXTENSIONS.map((extension) => datasetsBucket.arnForObjects(`${prefix}*${extension}`));
    // The key through S3 is granted with the sample copies (grantSampleCopies): the same key and service.
    // Only a PUT with If-None-Match (S3's condition key for it): a caption the user wrote is never replaced.
    const ifNoneMatch = { Null: { 's3:if-none-match': 'false' } };
    role.addToPrincipalPolicy(new iam.PolicyStatement({ sid: 'WriteGeneratedCaptions', actions: ['s3:PutObject'], resources: captions, conditions: ifNoneMatch }));
    Validations.of(role.node.findChild('DefaultPolicy')).acknowledge(
      ...captions.map((arn) => ({
        id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, arn)}]`,
        reason: `The samples function writes a generated caption next to each image that had none, in any dataset folder under ${prefix}; only caption files, never over an existing one.`,
      })),
    );
  }

  /**
   * A role that presigns links to a run's samples and smoke images (Report, the status function):
   * signing is local, but a link works only if the signer may GetObject it, with the key through S3.
   */
  public grantArtifactLinks(role: iam.IRole): void {
    const objects = ['samples', 'smoke'].map((folder) => this.props.storage.artifactsBucket.arnForObjects(`${this.props.training.outputPrefix}*/${folder}/*`));
    role.addToPrincipalPolicy(new iam.PolicyStatement({ sid: 'ReadSamplesAndSmokeImages', actions: ['s3:GetObject'], resources: objects }));
    this.keyThroughS3(role, 'DecryptSamplesAndSmokeImagesThroughS3', ['kms:Decrypt']);
    Validations.of(role.node.findChild('DefaultPolicy')).acknowledge(
      ...objects.map((arn) => ({
        id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, arn)}]`,
        reason: "The role presigns short-lived links to a run's samples and smoke images under <job>/; job names are chosen per run.",
      })),
    );
  }

  /**
   * The topic is encrypted with the pipeline key: publishing needs the key, but only through SNS.
   * (The SnsPublish tasks grant sns:Publish on the topic themselves.) An endpoint config or a job
   * that names the key (on instance types without local storage) makes SageMaker create grants
   * on it for its instances' volumes, on the caller's behalf.
   */
  private grantKeyUse(): void {
    this.stateMachine.addToRolePolicy(
      new iam.PolicyStatement({
        sid: 'LetSageMakerEncryptVolumes',
        actions: ['kms:CreateGrant', 'kms:DescribeKey'],
        resources: [this.props.storage.key.keyArn],
        conditions: { Bool: { 'kms:GrantIsForAWSResource': 'true' } },
      }),
    );
    this.stateMachine.addToRolePolicy(
      new iam.PolicyStatement({
        sid: 'EncryptNotifications',
        actions: ['kms:GenerateDataKey', 'kms:Decrypt'],
        resources: [this.props.storage.key.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': `sns.${Stack.of(this).region}.amazonaws.com` } },
      }),
    );
  }

  /**
   * A FLUX.1 deployment whose base model is an S3 folder: Prepare lists that folder (ListObjectsV2)
   * to check it holds the four FLUX.1 files before a job is started on it. Listing only, of that prefix.
   */
  private grantFluxFolderListing(role: iam.IRole): void {
    const { modelType, readableS3BaseModel } = this.props.settings;
    const folder = modelType === 'flux1' ? s3Folder(readableS3BaseModel) : undefined;
    if (folder === undefined) return;
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ListTheFluxBaseModelFolder',
        actions: ['s3:ListBucket'],
        resources: [`arn:${Stack.of(this).partition}:s3:::${folder.bucket}`],
        conditions: { StringLike: { 's3:prefix': [`${folder.prefix}*`] } },
      }),
    );
  }

  /** Prepare lists and reads the dataset folders (train.json, dataset.toml, the first bytes of images and captions), nothing else. */
  private grantDatasetRead(role: iam.IRole, datasetPrefix: string): void {
    const { datasetsBucket } = this.props.storage;
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ListDatasetFolders',
        actions: ['s3:ListBucket'],
        resources: [datasetsBucket.bucketArn],
        conditions: { StringLike: { 's3:prefix': [`${datasetPrefix}*`] } },
      }),
    );
    // Uploads still in progress are not listed as objects; the settle check asks for them too.
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({ sid: 'ListUploadsInProgress', actions: ['s3:ListBucketMultipartUploads'], resources: [datasetsBucket.bucketArn] }),
    );
    const objects = datasetsBucket.arnForObjects(`${datasetPrefix}*`);
    role.addToPrincipalPolicy(new iam.PolicyStatement({ sid: 'ReadDatasetFiles', actions: ['s3:GetObject'], resources: [objects] }));
    this.keyThroughS3(role, 'DecryptDatasetFiles', ['kms:Decrypt']);
    Validations.of(role.node.findChild('DefaultPolicy')).acknowledge({
      id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, objects)}]`,
      reason: `Prepare reads the dataset.toml, train.json, captions and image headers (ranged reads) of any dataset folder under ${datasetPrefix}; folder names are chosen by the uploaders.`,
    });
  }
}

/** The bucket and key prefix of an `s3://bucket/prefix/` folder, or undefined for anything else. */
function s3Folder(uri: string | undefined): { bucket: string; prefix: string } | undefined {
  const match = uri === undefined ? null : /^s3:\/\/([^/]+)\/(.*\/)?$/.exec(uri);
  return match ? { bucket: match[1], prefix: match[2] ?? '' } : undefined;
}

/** A shared endpoint is given exactly when the mode is shared: anything else is a wiring mistake, refused at synth. */
function checkServingMode({ settings, sharedEndpoint }: LoraWorkflowProps): void {
  if ((settings.endpoint.mode === 'shared') === (sharedEndpoint !== undefined)) return;
  throw new Error(
    `LoraWorkflow: endpoint.mode is '${settings.endpoint.mode}' but a shared endpoint was ${sharedEndpoint ? '' : 'not '}given; ` +
      'give sharedEndpoint (lib/shared-endpoint.ts) exactly when the mode is shared.',
  );
}
