import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import type { Construct } from 'constructs';

/** Publishes Report's subject and message, then goes on to `end` even if publishing fails: the outcome stands. */
export function notify(scope: Construct, name: string, topic: sns.ITopic, end: sfn.State): sfn.State {
  const publish = new tasks.SnsPublish(scope, name, {
    topic,
    subject: sfn.JsonPath.stringAt('$.report.subject'),
    message: sfn.TaskInput.fromJsonPathAt('$.report.message'),
    resultPath: sfn.JsonPath.DISCARD,
  });
  publish.addCatch(end, { resultPath: '$.notifyError' });
  publish.next(end);
  return publish;
}
