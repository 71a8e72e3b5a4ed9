import { ArnFormat, Duration, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as sns from 'aws-cdk-lib/aws-sns';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';

/** Properties of {@link PipelineAlarms}. */
export interface PipelineAlarmsProps {
  /** First part of the alarms' names (the stack's name, so two stacks never share one). */
  readonly alarmNamePrefix: string;
  readonly stateMachine: sfn.IStateMachine;
  /** The run notification topic: the alarms publish to it as well. */
  readonly topic: sns.ITopic;
  /** The key the topic is encrypted with: CloudWatch must be able to use it to publish. */
  readonly topicKey: kms.IKey;
  /** The shared endpoint's inference component; absent in dedicated-only deployments. */
  readonly sharedInferenceComponentName?: string;
}

const FIVE_MINUTES = Duration.minutes(5);
/**
 * 5xx answers in each of two consecutive 5-minute periods before the shared endpoint alarms. The
 * server answers 503 to a request beyond its queue (see containers/inference/README.md), so a
 * short burst is expected under load; errors that last ten minutes are not.
 */
export const SHARED_5XX_THRESHOLD = 5;
export const SHARED_5XX_PERIODS = 2;

/**
 * The pipeline's alarms, both to the notification topic: a failed run (any execution that ends
 * Failed, whatever the Report step managed to say), and the shared endpoint's 5xx errors.
 * Dedicated endpoints are named per dataset at run time: a SEARCH over their names can be graphed
 * but not alarmed on, so they have no alarm here (see the dashboard).
 */
export class PipelineAlarms extends Construct {
  public readonly runsFailed: cloudwatch.Alarm;
  public readonly shared5xx?: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: PipelineAlarmsProps) {
    super(scope, id);
    this.runsFailed = new cloudwatch.Alarm(this, 'RunsFailed', {
      alarmName: `${props.alarmNamePrefix}-runs-failed`,
      alarmDescription: 'A LoRA run failed: its notification on the same topic says why (the status function and the execution show it too).',
      metric: props.stateMachine.metricFailed({ period: FIVE_MINUTES, statistic: cloudwatch.Stats.SUM }),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      // No run, no data point: that is the healthy state, not an unknown one.
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    const alarms = [this.runsFailed];
    if (props.sharedInferenceComponentName !== undefined) {
      this.shared5xx = this.sharedEndpoint5xx(props.alarmNamePrefix, props.sharedInferenceComponentName);
      alarms.push(this.shared5xx);
    }
    for (const alarm of alarms) alarm.addAlarmAction(new actions.SnsAction(props.topic));
    allowAlarmsToPublish(this, props, alarms);
  }

  private sharedEndpoint5xx(prefix: string, inferenceComponentName: string): cloudwatch.Alarm {
    return new cloudwatch.Alarm(this, 'SharedEndpoint5xx', {
      alarmName: `${prefix}-shared-endpoint-5xx`,
      alarmDescription:
        `The shared endpoint's inference component ${inferenceComponentName} answered ${SHARED_5XX_THRESHOLD} or more 5xx errors ` +
        `in each of ${SHARED_5XX_PERIODS} consecutive 5-minute periods: check its logs in /aws/sagemaker/InferenceComponents/${inferenceComponentName}.`,
      metric: new cloudwatch.Metric({
        namespace: 'AWS/SageMaker',
        metricName: 'Invocation5XXErrors',
        dimensionsMap: { InferenceComponentName: inferenceComponentName },
        statistic: cloudwatch.Stats.SUM,
        period: FIVE_MINUTES,
      }),
      threshold: SHARED_5XX_THRESHOLD,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: SHARED_5XX_PERIODS,
      datapointsToAlarm: SHARED_5XX_PERIODS,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
  }
}

/**
 * CloudWatch publishes alarm notifications as the service principal: the topic's policy (which
 * otherwise only denies non-TLS publishing) must let it publish, and the topic's key must let it
 * encrypt the message (kms:GenerateDataKey*, kms:Decrypt, as the SNS guide lists for AWS service
 * sources of encrypted topics). Both only for these alarms of this account.
 */
function allowAlarmsToPublish(scope: Construct, props: PipelineAlarmsProps, alarms: readonly cloudwatch.Alarm[]): void {
  const stack = Stack.of(scope);
  const principal = new iam.ServicePrincipal('cloudwatch.amazonaws.com');
  // ARNs made from the names, not the alarms' attributes: the key policy referring to an alarm
  // that refers to the topic that refers to the key would be a circular dependency.
  const alarmArns = alarms.map((alarm) => alarmArn(stack, alarm));
  const conditions = {
    StringEquals: { 'aws:SourceAccount': stack.account },
    ArnEquals: { 'aws:SourceArn': alarmArns },
  };
  props.topic.addToResourcePolicy(
    new iam.PolicyStatement({
      sid: 'CloudWatchAlarmsPublish',
      principals: [principal],
      actions: ['sns:Publish'],
      resources: [props.topic.topicArn],
      conditions,
    }),
  );
  props.topicKey.addToResourcePolicy(
    new iam.PolicyStatement({
      sid: 'CloudWatchAlarmsUseKeyForTopic',
      principals: [principal],
      actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
      // In a key policy, "*" is this key.
      resources: ['*'],
      conditions,
    }),
  );
}

function alarmArn(stack: Stack, alarm: cloudwatch.Alarm): string {
  const name = (alarm.node.defaultChild as cloudwatch.CfnAlarm).alarmName;
  if (name === undefined) throw new Error(`alarm ${alarm.node.path} needs a fixed name: its ARN scopes who may publish to the topic`);
  return stack.formatArn({ service: 'cloudwatch', resource: 'alarm', resourceName: name, arnFormat: ArnFormat.COLON_RESOURCE_NAME });
}
