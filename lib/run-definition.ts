import type * as lambda from 'aws-cdk-lib/aws-lambda';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type { Construct } from 'constructs';
import { STATES } from '../lambda/shared/contract';
import type { PipelineStorage } from './pipeline-storage';
import { tryLora, warmingRetry } from './run-stages/check-lora';
import { deployDedicated } from './run-stages/deploy-dedicated';
import { failAndCleanUp } from './run-stages/fail-and-clean-up';
import { prepareAndSettle } from './run-stages/prepare-and-settle';
import { publishSamples } from './run-stages/publish-samples';
import { makeLoraCurrent, registerLora } from './run-stages/register-lora';
import { reportSuccess } from './run-stages/report-success';
import { smokeTestEndpoint } from './run-stages/smoke-test';
import { train } from './run-stages/train';
import type { ServingContainer } from './serving-container';
import type { TrainingContainer } from './training-container';

export { ENDPOINT_POLL_LIMIT, ENDPOINT_POLL_SECONDS } from './run-stages/deploy-dedicated';
export { WARMING_RETRY } from './run-stages/check-lora';

/** What the run definition calls and where it writes. */
export interface RunDefinitionProps {
  /** The Prepare function (lambda/prepare). */
  readonly prepare: lambda.IFunction;
  /** The Report function (lambda/report). */
  readonly report: lambda.IFunction;
  /** The samples function (lambda/samples): publishes what training rendered. */
  readonly samples: lambda.IFunction;
  /** The lora-check function (lambda/lora-check): the smoke test, in both modes. */
  readonly check: lambda.IFunction;
  readonly topic: sns.ITopic;
  readonly storage: PipelineStorage;
  /** Key prefix of the dataset folders in the datasets bucket: generated captions are written back under it. */
  readonly datasetPrefix: string;
  readonly training: TrainingContainer;
  readonly serving: ServingContainer;
  /** In a deployment with a shared endpoint: the function of its runs' stages. */
  readonly shared?: {
    /** The registry function (lambda/registry). */
    readonly registry: lambda.IFunction;
  };
}

/**
 * The states of a run, as docs/design.md ("Workflow") describes them, named as
 * lambda/shared/contract.ts names them; returns the first. `scope` owns the states. Each stage is
 * built in lib/run-stages/, given the states it goes on to.
 */
export function runDefinition(scope: Construct, props: RunDefinitionProps): sfn.IChainable {
  const { shared } = props;
  const failure = failAndCleanUp(scope, props.report, props.topic, shared?.registry);
  const succeed = reportSuccess(scope, props.report, props.topic);
  let serve = deployDedicated(scope, props.serving, failure, smokeTestEndpoint(scope, props.check, failure, succeed));
  if (shared) {
    const promote = makeLoraCurrent(scope, shared.registry, failure, succeed);
    // The shared endpoint is of the deploy-time model type: it may warm for as long as that type starts.
    const check = tryLora(scope, props.check, failure, promote, warmingRetry(props.serving.startupHealthCheckTimeoutSeconds));
    const register = registerLora(scope, shared.registry, failure, check);
    // Prepare decides per run: a run of another base model or family than the shared endpoint's is dedicated.
    serve = new sfn.Choice(scope, STATES.servingMode).when(sfn.Condition.stringEquals('$.run.serving.mode', 'shared'), register).otherwise(serve);
  }
  const trained = train(scope, props.storage, props.training, failure, publishSamples(scope, props.samples, { bucket: props.storage.datasetsBucket.bucketName, datasetPrefix: props.datasetPrefix }, serve));
  return prepareAndSettle(scope, props.prepare, failure, trained);
}
