import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type { Construct } from 'constructs';
import { STATES } from '../../lambda/shared/contract';
import { notify } from './notify';
import { EXECUTION, invokeFunction } from './tasks';

/** Report success (the run's summary and notification, for either serving mode) → Notify success → Done, whose output is the summary. */
export function reportSuccess(scope: Construct, report: lambda.IFunction, topic: sns.ITopic): sfn.State {
  const done = new sfn.Succeed(scope, STATES.succeeded, { outputPath: '$.report.summary' });
  const notifySuccess = notify(scope, STATES.notifySuccess, topic, done);
  const reporting = invokeFunction(
    scope,
    STATES.reportSuccess,
    report,
    {
      outcome: 'succeeded',
      execution: EXECUTION,
      'run.$': '$.run',
      'training.$': '$.training',
      // Each serving mode fills its own: the others are still null (Read input).
      'endpoint.$': '$.endpoint',
      'lora.$': '$.lora',
      'check.$': '$.check',
      'promotion.$': '$.promotion',
      // Both modes: the samples published (or why not), and a dedicated run's smoke test (a shared run's is in check).
      'samples.$': '$.samples',
      'smoke.$': '$.smoke',
    },
    '$.report',
  );
  reporting.next(notifySuccess);
  // The LoRA is served whatever happens to the report: a summary from the state alone.
  reporting.addCatch(
    new sfn.Pass(scope, STATES.reportSuccessPlainly, {
      parameters: {
        'subject.$': "States.Format('LoRA run {} is in service', $.run.run)",
        'message.$': "States.Format('Endpoint {} serves run {}.', $.run.serving.endpointName, $.run.run)",
        summary: {
          'run.$': '$.run.run',
          'dataset.$': '$.run.dataset.name',
          'trainingJobName.$': '$.run.training.jobName',
          'modelArtifact.$': '$.training.ModelArtifacts.S3ModelArtifacts',
          'endpointName.$': '$.run.serving.endpointName',
        },
      },
      resultPath: '$.report',
    }).next(notifySuccess),
    { resultPath: '$.reportError' },
  );
  return reporting;
}
