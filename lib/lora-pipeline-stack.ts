import { CfnOutput, Duration, RemovalPolicy, Stack, type StackProps, Tags } from 'aws-cdk-lib';
import type * as logs from 'aws-cdk-lib/aws-logs';
import { type Construct } from 'constructs';
import { isS3BaseModel } from '../lambda/shared/models';
import { type PipelineConfig } from './config';
import { DatasetTrigger } from './dataset-trigger';
import { LoraRegistry } from './lora-registry';
import { LoraWorkflow } from './lora-workflow';
import { PipelineAlarms } from './pipeline-alarms';
import { PipelineDashboard } from './pipeline-dashboard';
import { PipelineStorage } from './pipeline-storage';
import { RunNotifications } from './run-notifications';
import { RunStatus } from './run-status';
import { ServingContainer } from './serving-container';
import { SharedEndpoint } from './shared-endpoint';
import { TrainingContainer } from './training-container';
import { PIPELINE_ENV } from '../lambda/report/run-metrics';

/** A run whose dataset folder is still changing this long after it started fails rather than waits on. */
const MAX_SETTLE_WAIT_SECONDS = 3 * 3600;

/** Properties of {@link LoraPipelineStack}. */
export interface LoraPipelineStackProps extends StackProps {
  /** Validated deploy-time configuration (see `lib/config.ts`). */
  readonly config: PipelineConfig;
}

/** The whole pipeline. The stack only wires constructs together; each concern lives in its own construct. */
export class LoraPipelineStack extends Stack {
  public readonly storage: PipelineStorage;
  public readonly training: TrainingContainer;
  public readonly serving: ServingContainer;
  /** The LoRA registry; created in both endpoint modes, so switching modes never deletes its history. */
  public readonly registry: LoraRegistry;
  /** The shared endpoint, in `endpoint.mode=shared` only. */
  public readonly sharedEndpoint?: SharedEndpoint;
  public readonly notifications: RunNotifications;
  public readonly workflow: LoraWorkflow;
  public readonly trigger: DatasetTrigger;
  public readonly status: RunStatus;
  public readonly dashboard: PipelineDashboard;
  public readonly alarms: PipelineAlarms;

  constructor(scope: Construct, id: string, props: LoraPipelineStackProps) {
    super(scope, id, props);
    const { config } = props;
    Tags.of(this).add('project', 'sagemaker-lora-pipeline');

    this.storage = new PipelineStorage(this, 'Storage', {
      removalPolicy: config.removalPolicy === 'destroy' ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN,
      checkpointExpiration: Duration.days(config.storage.checkpointExpirationDays),
      noncurrentVersionExpiration: Duration.days(config.storage.noncurrentVersionExpirationDays),
      accessLogExpiration: Duration.days(config.storage.accessLogExpirationDays),
    });

    this.training = new TrainingContainer(this, 'Training', {
      storage: this.storage,
      datasetPrefix: config.datasetPrefix,
      baseModel: config.baseModel,
      huggingFaceTokenSecret: config.huggingFaceTokenSecret,
    });
    this.serving = new ServingContainer(this, 'Serving', {
      storage: this.storage,
      modelType: config.modelType,
      baseModel: config.baseModel,
      huggingFaceTokenSecret: config.huggingFaceTokenSecret,
    });
    this.notifications = new RunNotifications(this, 'Notifications', { key: this.storage.key, email: config.notificationEmail });

    const removalPolicy = config.removalPolicy === 'destroy' ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN;
    this.registry = new LoraRegistry(this, 'Registry', { key: this.storage.key, removalPolicy });
    const sharedEndpoint =
      config.endpoint.mode === 'shared'
        ? new SharedEndpoint(this, 'SharedEndpoint', {
            storage: this.storage,
            serving: this.serving,
            registry: this.registry,
            namePrefix: config.namePrefix,
            modelType: config.modelType,
            baseModel: config.baseModel,
            endpoint: config.endpoint,
          })
        : undefined;
    this.sharedEndpoint = sharedEndpoint;
    const logging = { logRetention: config.logRetentionDays as logs.RetentionDays, removalPolicy };
    this.workflow = new LoraWorkflow(this, 'Workflow', {
      ...logging,
      storage: this.storage,
      training: this.training,
      serving: this.serving,
      topic: this.notifications.topic,
      registry: this.registry.table,
      sharedEndpoint: sharedEndpoint
        ? {
            endpointName: sharedEndpoint.endpointName,
            inferenceComponentName: sharedEndpoint.inferenceComponentName,
            endpointArn: sharedEndpoint.endpointArn,
            inferenceComponentArn: sharedEndpoint.inferenceComponentArn,
          }
        : undefined,
      settings: {
        datasetPrefix: config.datasetPrefix,
        triggerFileName: config.triggerFileName,
        settleSeconds: config.settleSeconds,
        maxSettleWaitSeconds: MAX_SETTLE_WAIT_SECONDS,
        namePrefix: config.namePrefix,
        modelType: config.modelType,
        baseModel: config.baseModel,
        readableS3BaseModel: isS3BaseModel(config.baseModel) ? config.baseModel : undefined,
        huggingFaceTokenSecretId: config.huggingFaceTokenSecret,
        training: config.training,
        endpoint: {
          instanceType: config.endpoint.instanceType,
          instanceCount: config.endpoint.instanceCount,
          loraScale: this.serving.loraScale,
          mode: config.endpoint.mode,
        },
        checkpointExpirationDays: config.storage.checkpointExpirationDays,
      },
    });
    this.trigger = new DatasetTrigger(this, 'Trigger', {
      ...logging,
      storage: this.storage,
      stateMachine: this.workflow.stateMachine,
      datasetPrefix: config.datasetPrefix,
      triggerFileName: config.triggerFileName,
    });
    this.status = new RunStatus(this, 'Status', {
      ...logging,
      stateMachine: this.workflow.stateMachine,
      registry: this.registry.table,
      namePrefix: config.namePrefix,
      artifacts: this.workflow,
    });

    this.dashboard = this.createDashboard(config, sharedEndpoint);
    this.alarms = new PipelineAlarms(this, 'Alarms', {
      alarmNamePrefix: this.stackName,
      stateMachine: this.workflow.stateMachine,
      topic: this.notifications.topic,
      topicKey: this.storage.key,
      sharedInferenceComponentName: sharedEndpoint?.inferenceComponentName,
    });

    new CfnOutput(this, 'DatasetsBucketName', {
      value: this.storage.datasetsBucket.bucketName,
      description: `Upload dataset folders to s3://<this bucket>/${config.datasetPrefix}<name>/`,
    });
    new CfnOutput(this, 'ArtifactsBucketName', {
      value: this.storage.artifactsBucket.bucketName,
      description: 'Training checkpoints and trained LoRA models',
    });
    new CfnOutput(this, 'DataKeyArn', {
      value: this.storage.key.keyArn,
      description: 'KMS key that encrypts the datasets and artifacts; uploaders need kms:GenerateDataKey on it',
    });
    new CfnOutput(this, 'StateMachineArn', {
      value: this.workflow.stateMachine.stateMachineArn,
      description: 'The run workflow: start it from the Step Functions console with the ConsoleInput below',
    });
    new CfnOutput(this, 'ConsoleInput', {
      value: JSON.stringify({ dataset: 'pokemon' }),
      description: `Execution input for a console start: the name of a folder under s3://<DatasetsBucketName>/${config.datasetPrefix}`,
    });
    new CfnOutput(this, 'StatusFunctionName', {
      value: this.status.status.function.functionName,
      description: 'aws lambda invoke --function-name <this> --cli-binary-format raw-in-base64-out --payload \'{"dataset":"pokemon"}\' status.json',
    });
    new CfnOutput(this, 'NotificationTopicArn', {
      value: this.notifications.topic.topicArn,
      description: 'Every run publishes its end here: in service, or failed and why',
    });
    new CfnOutput(this, 'RegistryTableName', {
      value: this.registry.table.tableName,
      description: 'The LoRA registry (DynamoDB): one item per trained LoRA version, and each name\'s current version',
    });
    new CfnOutput(this, 'RegistryFunctionName', {
      value: this.workflow.registryFunction.function.functionName,
      description:
        'Retires a LoRA version (the server then refuses it): aws lambda invoke --function-name <this> --cli-binary-format raw-in-base64-out ' +
        '--payload \'{"action":"retire","name":"pokemon","version":3}\' retired.json',
    });
    if (sharedEndpoint) {
      new CfnOutput(this, 'SharedEndpointName', {
        value: sharedEndpoint.endpointName,
        description: 'The endpoint serving every LoRA: invoke it with --inference-component-name <SharedInferenceComponentName>',
      });
      new CfnOutput(this, 'SharedInferenceComponentName', {
        value: sharedEndpoint.inferenceComponentName,
        description: 'The shared endpoint\'s inference component; a request names its LoRA in the body, e.g. {"prompt": "...", "lora": "pokemon"}',
      });
    }
    this.cliOutputs(config);
  }

  /** The dashboard; Report writes the run metrics it graphs under this stack's name. */
  private createDashboard(config: PipelineConfig, sharedEndpoint: SharedEndpoint | undefined): PipelineDashboard {
    this.workflow.reportFunction.function.addEnvironment(PIPELINE_ENV, this.stackName);
    return new PipelineDashboard(this, 'Dashboard', {
      namePrefix: config.namePrefix,
      pipeline: this.stackName,
      stateMachine: this.workflow.stateMachine,
      sharedEndpoint: sharedEndpoint && {
        endpointName: sharedEndpoint.endpointName,
        inferenceComponentName: sharedEndpoint.inferenceComponentName,
        variantName: sharedEndpoint.variantName,
        serverMetricsNamespace: sharedEndpoint.metricsNamespace,
        modelType: config.modelType,
        minInstances: config.endpoint.minInstances,
        maxInstances: config.endpoint.maxInstances,
      },
    });
  }

  /** The deploy-time settings the command-line tool reads (contract D), so it needs no flags for them. */
  private cliOutputs(config: PipelineConfig): void {
    const outputs: Record<string, { value: string; description: string }> = {
      DatasetPrefix: { value: config.datasetPrefix, description: 'Key prefix of the dataset folders in the datasets bucket' },
      TriggerFileName: { value: config.triggerFileName, description: 'The file whose upload, last, starts a run of its folder' },
      ModelType: { value: config.modelType, description: 'The deploy-time model family (sd15, sdxl or flux1)' },
      BaseModel: { value: config.baseModel, description: 'The deploy-time base model; a run on another one gets a dedicated endpoint' },
      EndpointMode: { value: config.endpoint.mode, description: 'shared: one endpoint serves every LoRA; dedicated: one endpoint per dataset' },
      NamePrefix: { value: config.namePrefix, description: 'First part of every training job, model, endpoint config and endpoint name' },
      CaptionMissing: {
        value: config.training.captionMissing === undefined ? 'default' : String(config.training.captionMissing),
        description: "training.captionMissing: a run's caption_missing unless it sets its own (true, false, or default: the model type's)",
      },
      DashboardName: { value: this.dashboard.dashboardName, description: 'The CloudWatch dashboard of runs, endpoints and the LoRA cache' },
    };
    for (const [id, output] of Object.entries(outputs)) new CfnOutput(this, id, output);
  }
}
