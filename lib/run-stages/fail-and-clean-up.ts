import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type { Construct } from 'constructs';
import { type FailureStage, LORA_ERRORS, STATES } from '../../lambda/shared/contract';
import { notify } from './notify';
import { registryTask } from './register-lora';
import { EXECUTION, invokeFunction, retry, sagemakerTask } from './tasks';

/** The states that record an error a stage caught (at `$.error`), and the stage Report is told, in run order. */
const CAUGHT = {
  [STATES.preparationFailed]: 'prepare',
  [STATES.trainingFailed]: 'training',
  [STATES.deploymentFailed]: 'model',
  [STATES.endpointFailed]: 'endpoint',
  // Either mode's smoke test: a dedicated endpoint's, or the shared check's verdict.
  [STATES.smokeTestFailed]: 'smoke',
} as const satisfies Record<string, FailureStage>;

/** Likewise for the stages of a run served by the shared endpoint. */
const CAUGHT_SHARED = {
  [STATES.registrationFailed]: 'register',
  [STATES.loraCheckFailed]: 'check',
  [STATES.promotionFailed]: 'promote',
} as const satisfies Record<string, FailureStage>;

/** Where each stage sends its failures. */
export interface FailurePath {
  /** The state that records the error caught at `$.error` as a failure of its stage, then reports it. */
  caught(name: keyof typeof CAUGHT | keyof typeof CAUGHT_SHARED): sfn.State;
  /** A new state that records the run failed at `stage` with an error the workflow itself found, then reports it. */
  found(name: string, stage: FailureStage, error: { Error: string; Cause: string }): sfn.State;
}

/**
 * Report failure (Report turns the stage and error into a reason and says what to clean up) →
 * clean up what the run created, best effort → Notify failure → Failed, with Report's Error and Cause.
 */
export function failAndCleanUp(scope: Construct, report: lambda.IFunction, topic: sns.ITopic, registry?: lambda.IFunction): FailurePath {
  const failed = new sfn.Fail(scope, STATES.failed, { errorPath: '$.report.error', causePath: '$.report.cause' });
  const notifyFailure = notify(scope, STATES.notifyFailure, topic, failed);

  const reportFailure = invokeFunction(
    scope,
    STATES.reportFailure,
    report,
    { outcome: 'failed', execution: EXECUTION, 'stage.$': '$.failure.stage', 'error.$': '$.failure.error', 'state.$': '$' },
    '$.report',
  );
  reportFailure.next(cleanUp(scope, notifyFailure, registry));
  // Report is our code: should it fail, the run still notifies and fails with the error caught,
  // unparsed, and cleans nothing up (what failed is then not known well enough to delete).
  reportFailure.addCatch(
    new sfn.Pass(scope, STATES.reportFailurePlainly, {
      parameters: {
        // Static: an execution started by hand may have a name SNS refuses in a subject.
        subject: 'A LoRA run failed (its report could not be written)',
        'message.$': 'States.JsonToString($.failure)',
        'error.$': '$.failure.error.Error',
        'cause.$': 'States.JsonToString($.failure.error)',
      },
      resultPath: '$.report',
    }).next(notifyFailure),
    { resultPath: '$.reportError' },
  );

  const failure = (name: string, parameters: Record<string, unknown>): sfn.State => {
    const recorded = new sfn.Pass(scope, name, { parameters, resultPath: '$.failure' });
    recorded.next(reportFailure);
    return recorded;
  };
  // Only the stages a deployment has: a state no other state leads to is not valid ASL.
  const stages = registry ? { ...CAUGHT, ...CAUGHT_SHARED } : CAUGHT;
  const caught = new Map(Object.entries(stages).map(([name, stage]) => [name, failure(name, { stage, 'error.$': '$.error' })]));
  return {
    caught: (name) => {
      const state = caught.get(name);
      if (!state) throw new Error(`${name} belongs to runs on the shared endpoint; give failAndCleanUp the registry function to build it.`);
      return state;
    },
    found: (name, stage, error) => failure(name, { stage, error }),
  };
}

/**
 * Deletes what Report says this run created and left serving nothing (a dedicated run; after a
 * failed smoke test, the endpoint it created too), rolls back the endpoint a dedicated run updated
 * when it failed the smoke test, or marks the version it registered failed when the shared server
 * refused it or it failed the smoke test (a shared run), then notifies.
 */
function cleanUp(scope: Construct, notifyFailure: sfn.State, registry?: lambda.IFunction): sfn.Choice {
  const deleteModel = sagemakerTask(scope, STATES.deleteModel, 'aws-sdk:sagemaker:deleteModel', {
    Parameters: { 'ModelName.$': '$.report.cleanup.modelName' },
    ResultPath: null,
  });
  const deleteEndpointConfig = sagemakerTask(scope, STATES.deleteEndpointConfig, 'aws-sdk:sagemaker:deleteEndpointConfig', {
    Parameters: { 'EndpointConfigName.$': '$.report.cleanup.endpointConfigName' },
    ResultPath: null,
  });
  const deleteFailedEndpoint = sagemakerTask(scope, STATES.deleteFailedEndpoint, 'aws-sdk:sagemaker:deleteEndpoint', {
    Parameters: { 'EndpointName.$': '$.report.cleanup.endpointName' },
    ResultPath: null,
  });
  // Clean-up is best effort: a resource that is already gone, or cannot go, must not hide the
  // failure being reported.
  for (const [state, next] of [
    [deleteFailedEndpoint, deleteEndpointConfig],
    [deleteEndpointConfig, deleteModel],
    [deleteModel, notifyFailure],
  ] as const) {
    retry(state, 'write');
    state.addCatch(next, { resultPath: '$.cleanupError' });
    state.next(next);
  }
  const choice = new sfn.Choice(scope, STATES.cleanUp);
  // Only the server's refusal of the LoRA, or a smoke test showing it does nothing, rejects it; a
  // fault of the endpoint or registry leaves it pending, whatever Report answers.
  const refused = sfn.Condition.and(
    sfn.Condition.isPresent('$.report.cleanup.loraVersion'),
    sfn.Condition.or(...[LORA_ERRORS.loraCheckFailed, LORA_ERRORS.smokeTestFailed].map((error) => sfn.Condition.stringEquals('$.failure.error.Error', error))),
  );
  if (registry) choice.when(refused, rejectLora(scope, registry, notifyFailure));
  // A dedicated run's failed smoke test on an endpoint it updated (Report gives a shared run no
  // rollBack): back to the config the endpoint served before.
  return choice
    .when(sfn.Condition.isPresent('$.report.cleanup.rollBack'), rollBackEndpoint(scope, notifyFailure))
    .when(sfn.Condition.isPresent('$.report.cleanup.endpointName'), deleteFailedEndpoint)
    .when(sfn.Condition.isPresent('$.report.cleanup.endpointConfigName'), deleteEndpointConfig)
    .otherwise(notifyFailure);
}

/**
 * Updates the endpoint back to the config it served before this run (Report names both). This
 * run's model and config stay: SageMaker says not to delete a config while an update is under way.
 * Best effort: a failed call is added to the notification, which still goes out.
 */
function rollBackEndpoint(scope: Construct, notifyFailure: sfn.State): sfn.State {
  const rollBack = sagemakerTask(scope, STATES.rollBackEndpoint, 'sagemaker:updateEndpoint', {
    Parameters: { 'EndpointName.$': '$.report.cleanup.rollBack.EndpointName', 'EndpointConfigName.$': '$.report.cleanup.rollBack.EndpointConfigName' },
    ResultPath: null,
  });
  retry(rollBack, 'deploy');
  // Report wrote the message before the call: say that it failed, at the top, so no one reads "rolls it back" as done.
  const rollBackFailed = new sfn.Pass(scope, STATES.rollBackFailed, {
    parameters: {
      'subject.$': '$.report.subject',
      'message.$':
        "States.Format('THE ROLL-BACK FAILED: the endpoint still serves this run; the Cause below says how to go back by hand. UpdateEndpoint answered {} -- {}', States.JsonToString($.cleanupError), $.report.message)",
      'error.$': '$.report.error',
      'cause.$': '$.report.cause',
    },
    resultPath: '$.report',
  });
  rollBackFailed.next(notifyFailure);
  rollBack.addCatch(rollBackFailed, { resultPath: '$.cleanupError' });
  rollBack.next(notifyFailure);
  return rollBack;
}

/** Mark LoRA version failed (after LoraCheckFailed or SmokeTestFailed only): the server then refuses it by its version too. Best effort, as every clean-up. */
function rejectLora(scope: Construct, registry: lambda.IFunction, notifyFailure: sfn.State): sfn.State {
  const reject = registryTask(
    scope,
    STATES.rejectLora,
    registry,
    { action: 'reject', 'name.$': '$.report.cleanup.loraVersion.name', 'version.$': '$.report.cleanup.loraVersion.version', 'reason.$': '$.report.cause' },
    '$.rejection',
  );
  reject.addCatch(notifyFailure, { resultPath: '$.cleanupError' });
  reject.next(notifyFailure);
  return reject;
}
