import { Duration, type RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as s3n from 'aws-cdk-lib/aws-s3-notifications';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { PipelineFunction } from './pipeline-function';
import type { PipelineStorage } from './pipeline-storage';

/** The id aws-cdk-lib gives its bucket-notifications handler (a stack singleton). */
const BUCKET_NOTIFICATIONS_HANDLER = 'BucketNotificationsHandler050a0587b7544547bf325f094a3db834';

/** Properties of {@link DatasetTrigger}. */
export interface DatasetTriggerProps {
  readonly storage: PipelineStorage;
  /** The workflow each upload starts. */
  readonly stateMachine: sfn.IStateMachine;
  /** e.g. `datasets/` */
  readonly datasetPrefix: string;
  /** e.g. `dataset.toml` */
  readonly triggerFileName: string;
  readonly logRetention: logs.RetentionDays;
  readonly removalPolicy: RemovalPolicy;
}

/**
 * Starts one run per upload of a dataset folder's trigger file: an S3 event notification, filtered
 * to `<datasetPrefix>…/<triggerFileName>`, invokes the kickoff function, which starts an execution
 * named after the upload (so a duplicate delivery starts nothing). Events it could not handle after
 * Lambda's retries are kept in a dead-letter queue rather than lost.
 */
export class DatasetTrigger extends Construct {
  public readonly kickoff: PipelineFunction;
  public readonly deadLetterQueue: sqs.Queue;

  constructor(scope: Construct, id: string, props: DatasetTriggerProps) {
    super(scope, id);
    const { storage } = props;
    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      encryption: sqs.QueueEncryption.KMS,
      encryptionMasterKey: storage.key,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    this.kickoff = new PipelineFunction(this, 'Kickoff', {
      name: 'kickoff',
      description: 'Starts one workflow run per upload of a dataset folder trigger file',
      environment: {
        STATE_MACHINE_ARN: props.stateMachine.stateMachineArn,
        DATASETS_BUCKET: storage.datasetsBucket.bucketName,
        DATASET_PREFIX: props.datasetPrefix,
        TRIGGER_FILE_NAME: props.triggerFileName,
      },
      deadLetterQueue: this.deadLetterQueue,
      logRetention: props.logRetention,
      removalPolicy: props.removalPolicy,
    });
    props.stateMachine.grantStartExecution(this.kickoff.function);
    // Lambda writes to the dead-letter queue with the function's role; the queue's messages are
    // encrypted with the pipeline key, which the role may use only through SQS.
    this.kickoff.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'EncryptDeadLetters',
        actions: ['kms:GenerateDataKey', 'kms:Decrypt'],
        resources: [storage.key.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': `sqs.${Stack.of(this).region}.amazonaws.com` } },
      }),
    );
    storage.datasetsBucket.addEventNotification(s3.EventType.OBJECT_CREATED, new s3n.LambdaDestination(this.kickoff.function), {
      prefix: props.datasetPrefix,
      suffix: `/${props.triggerFileName}`,
    });
    // The notification is configured by aws-cdk-lib's own handler, one per stack.
    const handlerRole = Stack.of(this).node.tryFindChild(BUCKET_NOTIFICATIONS_HANDLER)?.node.tryFindChild('Role');
    if (handlerRole) {
      Validations.of(handlerRole).acknowledge({
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
        reason: "aws-cdk-lib's bucket-notifications handler (it sets the S3 event notification at deploy time) writes its logs with this managed policy; its role is CDK's, not configurable.",
      });
    }
  }
}
