import { Stack } from 'aws-cdk-lib';
import { flattenCfnReference } from 'cdk-nag/lib/utils/flatten-cfn-reference';
import type { Construct } from 'constructs';

/**
 * The resource part of an IAM5 finding id, as cdk-nag writes it (references as `<LogicalId.Arn>`,
 * pseudo parameters as `<AWS::Region>`), using cdk-nag's own flattening so the two cannot drift.
 * An acknowledgement names exactly the resource it excuses.
 */
export function iamFindingArn(scope: Construct, arn: string): string {
  return flattenCfnReference(Stack.of(scope).resolve(arn));
}
