import { Duration, type RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as logs from 'aws-cdk-lib/aws-logs';
import { LogGroup } from 'aws-cdk-lib/aws-logs';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { type PrepareSettings } from '../lambda/shared/contract';
import { iamFindingArn } from './nag-findings';
import { PipelineFunction } from './pipeline-function';
import { runDefinition } from './run-definition';
import type { PipelineStorage } from './pipeline-storage';
import { ServingContainer } from './serving-container';
import type { TrainingContainer } from './training-container';

/** Properties of {@link LoraWorkflow}. */
export interface LoraWorkflowProps {
  readonly storage: PipelineStorage;
  readonly training: TrainingContainer;
  readonly serving: ServingContainer;
  /** Where every run reports its end. */
  readonly topic: sns.ITopic;
  /**
   * Prepare's deploy-time settings, less what the construct knows itself (buckets, key, serving
   * timeouts, the tag). See {@link PrepareSettings}.
   */
  readonly settings: Omit<PrepareSettings, 'datasetsBucket' | 'keyArn' | 'pipeline' | 'endpoint'> & {
    readonly endpoint: Pick<PrepareSettings['endpoint'], 'instanceType' | 'instanceCount' | 'loraScale'>;
  };
  readonly logRetention: logs.RetentionDays;
  readonly removalPolicy: RemovalPolicy;
}

/**
 * The run workflow (Step Functions, standard, JSONPath): prepare and validate the run, wait while
 * the upload settles, train on a managed-spot job with checkpoints, create the model and endpoint
 * config, create or update the dataset's endpoint and wait until it is in service; on any failure,
 * report why, clean up what the run created for a failed endpoint, notify, and fail with that reason.
 */
export class LoraWorkflow extends Construct {
  public readonly stateMachine: sfn.StateMachine;
  public readonly logGroup: LogGroup;
  public readonly prepareFunction: PipelineFunction;
  public readonly reportFunction: PipelineFunction;

  private readonly props: LoraWorkflowProps;

  constructor(scope: Construct, id: string, props: LoraWorkflowProps) {
    super(scope, id);
    this.props = props;
    const stack = Stack.of(this);
    const { storage, training, serving, topic } = props;
    const namePrefix = props.settings.namePrefix;

    const settings: PrepareSettings = {
      ...props.settings,
      datasetsBucket: storage.datasetsBucket.bucketName,
      keyArn: storage.key.keyArn,
      pipeline: stack.stackName,
      endpoint: {
        ...props.settings.endpoint,
        startupHealthCheckTimeoutSeconds: ServingContainer.STARTUP_HEALTH_CHECK_TIMEOUT_SECONDS,
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
    this.reportFunction = new PipelineFunction(this, 'Report', {
      ...functionDefaults,
      name: 'report',
      description: "Turns a run's end into its notification, its output, or its error and cause",
    });

    const sagemakerArn = (resource: string) => stack.formatArn({ service: 'sagemaker', resource, resourceName: `${namePrefix}-*` });
    const arns = {
      trainingJob: sagemakerArn('training-job'),
      model: sagemakerArn('model'),
      endpointConfig: sagemakerArn('endpoint-config'),
      endpoint: sagemakerArn('endpoint'),
    };
    const definition = runDefinition(this, { prepare: this.prepareFunction.function, report: this.reportFunction.function, topic, storage, training, serving });

    this.logGroup = new LogGroup(this, 'Logs', {
      logGroupName: `/aws/vendedlogs/states/${stack.stackName}-runs`,
      retention: props.logRetention,
      removalPolicy: props.removalPolicy,
    });
    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      definitionBody: sfn.DefinitionBody.fromChainable(definition),
      stateMachineType: sfn.StateMachineType.STANDARD,
      queryLanguage: sfn.QueryLanguage.JSON_PATH,
      comment: 'LoRA run: prepare, train on managed spot, deploy to an endpoint',
      logs: { destination: this.logGroup, level: sfn.LogLevel.ALL, includeExecutionData: true },
      tracingEnabled: true,
    });
    this.grantSageMaker(arns, [training.role, serving.role]);
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
      ...[this.prepareFunction, this.reportFunction].map(({ function: fn }) => ({
        id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, `${fn.functionArn}:*`)}]`,
        reason: `Step Functions' Lambda task may invoke ${fn.node.path} by a qualified ARN (a version or alias of that one function); CDK grants both forms.`,
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

  /** Prepare lists and reads the dataset folders (and their train.json), nothing else. */
  private grantDatasetRead(role: iam.IRole, datasetPrefix: string): void {
    const { datasetsBucket, key } = this.props.storage;
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
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'DecryptDatasetFiles',
        actions: ['kms:Decrypt'],
        resources: [key.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': `s3.${Stack.of(this).region}.amazonaws.com` } },
      }),
    );
    Validations.of(role.node.findChild('DefaultPolicy')).acknowledge({
      id: `AwsSolutions-IAM5[Resource::${iamFindingArn(this, objects)}]`,
      reason: `Prepare reads the dataset.toml and train.json of any dataset folder under ${datasetPrefix}; folder names are chosen by the uploaders.`,
    });
  }
}
