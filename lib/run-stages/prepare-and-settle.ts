import { Duration } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import type { Construct } from 'constructs';
import { STATES } from '../../lambda/shared/contract';
import type { FailurePath } from './fail-and-clean-up';
import { catchInto, EXECUTION } from './tasks';

/**
 * Read input → Prepare run (validates the input and the dataset; the run at `$.run`) → Dataset
 * settled? → while the upload goes on, wait and prepare again; once settled, `next`.
 */
export function prepareAndSettle(scope: Construct, prepareFunction: lambda.IFunction, failure: FailurePath, next: sfn.IChainable): sfn.Chain {
  const prepare = new tasks.LambdaInvoke(scope, STATES.prepare, {
    lambdaFunction: prepareFunction,
    payloadResponseOnly: true,
    payload: sfn.TaskInput.fromObject({ 'request.$': '$.request', execution: EXECUTION }),
    resultPath: '$.run',
    retryOnServiceExceptions: false,
  });
  // A mistake in the input or the dataset is final; anything else (Lambda or S3 having a bad
  // moment) is tried again.
  prepare.addRetry({ errors: ['InvalidInput', 'InvalidDataset'], maxAttempts: 0 });
  prepare.addRetry({ errors: [sfn.Errors.ALL], interval: Duration.seconds(5), backoffRate: 2, maxAttempts: 4, jitterStrategy: sfn.JitterType.FULL });
  catchInto(prepare, failure.caught(STATES.preparationFailed));
  const waitForUpload = new sfn.Wait(scope, STATES.waitForUpload, { time: sfn.WaitTime.secondsPath('$.run.waitSeconds') });
  waitForUpload.next(prepare);
  const settled = new sfn.Choice(scope, STATES.settled).when(sfn.Condition.booleanEquals('$.run.settled', true), next).otherwise(waitForUpload);

  // The execution input moves under `request`, so that each pass of Prepare sees it unchanged.
  // What only one serving mode produces starts as null: Report's payloads name every one of them,
  // and a JSONPath field whose path is absent fails the run (States.Runtime). (CDK leaves a plain
  // null out of Parameters; its DISCARD token is written as JSON null.)
  const none = sfn.JsonPath.DISCARD;
  const readInput = new sfn.Pass(scope, STATES.readInput, {
    parameters: { 'request.$': '$', polls: { count: 0 }, endpoint: none, lora: none, check: none, promotion: none, samples: none, smoke: none },
  });
  return readInput.next(prepare).next(settled);
}
