import type * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';

/** Properties of {@link RunNotifications}. */
export interface RunNotificationsProps {
  /** Encrypts the messages at rest; they carry dataset names and failure reasons. */
  readonly key: kms.IKey;
  /**
   * Subscribed to the topic (SNS first sends it a confirmation e-mail).
   * @default no subscription
   */
  readonly email?: string;
}

/** The SNS topic every run reports its end to: in service, or failed and why. */
export class RunNotifications extends Construct {
  public readonly topic: sns.ITopic;

  constructor(scope: Construct, id: string, props: RunNotificationsProps) {
    super(scope, id);
    const topic = new sns.Topic(this, 'Topic', {
      displayName: 'LoRA pipeline runs',
      masterKey: props.key,
      enforceSSL: true,
    });
    if (props.email) topic.addSubscription(new subscriptions.EmailSubscription(props.email));
    this.topic = topic;
  }
}
