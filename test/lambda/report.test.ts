import { type FailureStage, type PublishedSamples, type ReportEvent, type ReportResult } from '../../lambda/shared/contract';
import { MAX_CAUSE_LENGTH } from '../../lambda/report/failure-causes';
import { MAX_SUBJECT_LENGTH, snsSubject } from '../../lambda/report/notification';
import { report } from '../../lambda/report/report';
import { preparedRunFixture, sharedRunFixture, trainingJobFixture } from '../support/runs';

const execution = { name: 'pokemon-0123456789abcdef', startTime: '2025-01-01T11:55:00.000Z' };
const run = preparedRunFixture();
const now = new Date('2025-01-01T12:50:00.000Z');

function failed(stage: FailureStage, error: { Error: string; Cause?: string }, state: Record<string, unknown> = { request: { dataset: 'pokemon' }, run }): ReportResult {
  return report({ outcome: 'failed', execution, stage, error, state }, { now, region: 'eu-west-1' });
}

function lambdaCause(errorType: string, errorMessage: string): string {
  return JSON.stringify({ errorType, errorMessage, trace: [`${errorType}: ${errorMessage}`, '    at prepare (/var/task/index.js:1:1)'] });
}

function expectValidSubject(subject: string): void {
  expect(subject).toMatch(/^[\x20-\x7e]+$/);
  expect(subject.length).toBeLessThanOrEqual(MAX_SUBJECT_LENGTH);
  expect(subject).toBe(subject.trim());
}

describe('a run that succeeded', () => {
  const endpoint = { EndpointName: 'lora-pokemon', EndpointStatus: 'InService', EndpointConfigName: run.run };
  const result = report({ outcome: 'succeeded', execution, run, training: trainingJobFixture(), endpoint }, { now });

  test('returns the run summary as the execution output', () => {
    expect(result.summary).toEqual({
      run: run.run,
      dataset: 'pokemon',
      trainingJobName: run.run,
      modelArtifact: `s3://artifacts-bucket/models/${run.run}/output/model.tar.gz`,
      endpointName: 'lora-pokemon',
      trainingSeconds: 1000,
      billableSeconds: 370,
      spotSavingsPercent: 63,
      servingMode: 'dedicated',
      invokeCommand:
        'aws sagemaker-runtime invoke-endpoint --endpoint-name lora-pokemon --content-type application/json --accept image/png ' +
        `--cli-binary-format raw-in-base64-out --body '{"prompt": "..."}' image.png`,
    });
    expect(result.error).toBeUndefined();
    expect(result.cleanup).toBeUndefined();
  });

  test('says the run is in service, and how to invoke the endpoint', () => {
    expect(result.subject).toBe(`LoRA run ${run.run} is in service`);
    expectValidSubject(result.subject);
    expect(result.message).toContain('aws sagemaker-runtime invoke-endpoint --endpoint-name lora-pokemon');
    expect(result.message).toContain('63% saved by managed spot');
    const json = result.message.slice(result.message.lastIndexOf('\n{'));
    expect(JSON.parse(json)).toEqual(result.summary);
  });

  test('a run without spot says nothing of savings', () => {
    const training = trainingJobFixture({ EnableManagedSpotTraining: false, BillableTimeInSeconds: 1000 });
    const plain = report({ outcome: 'succeeded', execution, run, training, endpoint }, { now });
    expect(plain.summary?.spotSavingsPercent).toBe(0);
    expect(plain.message).not.toContain('saved by managed spot');
  });
});

describe('a run that failed while preparing', () => {
  test.each(['InvalidInput', 'InvalidDataset'])('keeps %s and its message, not the trace', (name) => {
    const result = failed('prepare', { Error: name, Cause: lambdaCause(name, 'datasets/pokemon/ holds no images') }, { request: { dataset: 'pokemon' } });
    expect(result.error).toBe(name);
    expect(result.cause).toMatch(/: datasets\/pokemon\/ holds no images\.$/);
    expect(result.cause).not.toContain('/var/task');
    expect(result.cleanup).toBeUndefined();
    expect(result.subject).toBe(`LoRA dataset "pokemon" failed: ${name}`);
  });

  test('any other error is PreparationFailed and names what was caught', () => {
    const result = failed('prepare', { Error: 'Lambda.Unknown', Cause: 'The cause could not be determined because Lambda did not return an error type.' }, { request: { dataset: 's3://b/datasets/pokemon/' } });
    expect(result.error).toBe('PreparationFailed');
    expect(result.cause).toBe('Preparing the run failed (Lambda.Unknown): The cause could not be determined because Lambda did not return an error type.');
    expect(result.message).toContain('Dataset: pokemon');
  });

  test('a Lambda error of another type is PreparationFailed with its message', () => {
    const result = failed('prepare', { Error: 'TypeError', Cause: lambdaCause('TypeError', 'x is undefined') }, { request: {} });
    expect(result.error).toBe('PreparationFailed');
    expect(result.cause).toBe('Preparing the run failed (TypeError): x is undefined.');
  });
});

describe('a run that failed in training', () => {
  test('a failed job: its FailureReason, and the logs link in the message', () => {
    const job = trainingJobFixture({ TrainingJobStatus: 'Failed', SecondaryStatus: 'Failed', FailureReason: 'AlgorithmError: CUDA out of memory' });
    const result = failed('training', { Error: 'States.TaskFailed', Cause: JSON.stringify(job) });
    expect(result.error).toBe('TrainingFailed');
    expect(result.cause).toBe(`The training job ${run.run} failed: AlgorithmError: CUDA out of memory.`);
    expect(result.message).toContain(`Training logs: https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logsV2:`);
    expect(result.message).toContain(`logStreamNameFilter$3D${run.run}`);
    expect(result.cleanup).toBeUndefined();
  });

  test('a stopped job says it was stopped, and why', () => {
    const job = trainingJobFixture({ TrainingJobStatus: 'Stopped', SecondaryStatus: 'MaxWaitTimeExceeded', FailureReason: undefined });
    const result = failed('training', { Error: 'States.TaskFailed', Cause: JSON.stringify(job) });
    expect(result.cause).toBe(`The training job ${run.run} was stopped before it finished: it reached its maximum wait for spot capacity and training (training.maxWaitSeconds).`);
  });

  test('a refused job: the plain-text cause as is, and a logs link from the region', () => {
    const cause = 'The account-level service limit for ml.g5.2xlarge for spot training job usage is 0 Instances. (Service: SageMaker, Status Code: 400)';
    const result = failed('training', { Error: 'SageMaker.ResourceLimitExceededException', Cause: cause });
    expect(result.error).toBe('TrainingFailed');
    expect(result.cause).toBe(`The training job ${run.run} could not run (SageMaker.ResourceLimitExceededException): ${cause}.`);
    expect(result.message).toContain('Training logs: https://eu-west-1.console.aws.amazon.com/');
  });
});

test('a run that failed creating its model or config is DeploymentFailed; whichever of the two exists is removed', () => {
  const result = failed('model', { Error: 'SageMaker.AmazonSageMakerException', Cause: 'Could not find model data at s3://x.' });
  expect(result.error).toBe('DeploymentFailed');
  expect(result.cause).toBe(`Creating the model and endpoint configuration of run ${run.run} failed (SageMaker.AmazonSageMakerException): Could not find model data at s3://x.`);
  // The model may exist when the config failed; the endpoint was never touched.
  expect(result.cleanup).toEqual({ modelName: run.run, endpointConfigName: run.run });
});

describe('a run whose endpoint failed', () => {
  const failedEndpoint = { EndpointName: 'lora-pokemon', EndpointStatus: 'Failed', EndpointConfigName: run.run, FailureReason: 'The primary container for production variant AllTraffic did not pass the ping health check.' };

  test('a new endpoint: its FailureReason, and this run cleans up the endpoint too', () => {
    const result = failed('endpoint', { Error: 'EndpointFailed', Cause: 'Endpoint status is Failed' }, { request: { dataset: 'pokemon' }, run, endpoint: failedEndpoint, deployment: { endpointExisted: false } });
    expect(result.error).toBe('EndpointFailed');
    expect(result.cause).toBe(`Endpoint lora-pokemon failed (status Failed): ${failedEndpoint.FailureReason}`);
    expect(result.cleanup).toEqual({ modelName: run.run, endpointConfigName: run.run, endpointName: 'lora-pokemon' });
  });

  test.each([[true], [undefined]])('an endpoint that existed (endpointExisted %p) is not deleted', (endpointExisted) => {
    const result = failed('endpoint', { Error: 'EndpointFailed' }, { request: {}, run, endpoint: failedEndpoint, deployment: { endpointExisted } });
    expect(result.cleanup).toEqual({ modelName: run.run, endpointConfigName: run.run });
  });

  test('an update rolled back: the endpoint still serves the previous model', () => {
    const endpoint = { EndpointName: 'lora-pokemon', EndpointStatus: 'InService', EndpointConfigName: 'lora-pokemon-20241201080000-fedcba', FailureReason: 'Out of capacity for ml.g5.xlarge.' };
    const result = failed('endpoint', { Error: 'EndpointFailed' }, { request: {}, run, endpoint, deployment: { endpointExisted: true } });
    expect(result.error).toBe('EndpointFailed');
    expect(result.cause).toBe(
      `Updating endpoint lora-pokemon to run ${run.run} failed and was rolled back; it still serves the previous model (endpoint config lora-pokemon-20241201080000-fedcba). Out of capacity for ml.g5.xlarge.`,
    );
    expect(result.cleanup).toEqual({ modelName: run.run, endpointConfigName: run.run });
  });

  test('a describe call that failed while the endpoint was still being created deletes nothing: it may still come up', () => {
    const creating = { EndpointName: 'lora-pokemon', EndpointStatus: 'Creating', EndpointConfigName: run.run };
    const state = { request: {}, run, endpoint: creating, deployment: { endpointExisted: false } };
    expect(failed('endpoint', { Error: 'SageMaker.SageMakerException', Cause: 'Rate exceeded' }, state).cleanup).toBeUndefined();
    // Nor before the first describe answered.
    expect(failed('endpoint', { Error: 'SageMaker.SageMakerException', Cause: 'Rate exceeded' }, { ...state, endpoint: undefined }).cleanup).toBeUndefined();
    // Control: the same run once the endpoint has failed.
    expect(failed('endpoint', { Error: 'EndpointFailed' }, { ...state, endpoint: failedEndpoint }).cleanup).toEqual({
      modelName: run.run,
      endpointConfigName: run.run,
      endpointName: 'lora-pokemon',
    });
  });

  test('a refused create or update (no deployment recorded) removes the model and config only', () => {
    const result = failed('endpoint', { Error: 'SageMaker.AmazonSageMakerException', Cause: 'Could not find endpoint configuration.' }, { request: {}, run });
    expect(result.cleanup).toEqual({ modelName: run.run, endpointConfigName: run.run });
  });

  test('a refused UpdateEndpoint is not mistaken for a rollback', () => {
    const existing = { EndpointName: 'lora-pokemon', EndpointStatus: 'InService', EndpointConfigName: 'an-older-run' };
    // A refused call records no deployment; the endpoint was described after the refusal.
    const result = failed('endpoint', { Error: 'SageMaker.ResourceLimitExceededException', Cause: 'Quota exceeded.' }, { request: {}, run, endpoint: existing });
    expect(result.cause).toBe('Deploying endpoint lora-pokemon failed (SageMaker.ResourceLimitExceededException): Quota exceeded.');
    expect(result.cleanup).toEqual({ modelName: run.run, endpointConfigName: run.run });
  });

  test('a create that answered with an error yet took effect: the endpoint is on this run\'s config, so nothing is deleted', () => {
    const creating = { EndpointName: 'lora-pokemon', EndpointStatus: 'Creating', EndpointConfigName: run.run };
    const result = failed('endpoint', { Error: 'SageMaker.AmazonSageMakerException', Cause: 'Cannot create already existing endpoint.' }, { request: {}, run, endpoint: creating });
    expect(result.cleanup).toBeUndefined();
    expect(result.cause).toBe(
      "Deploying endpoint lora-pokemon answered with an error (SageMaker.AmazonSageMakerException): Cannot create already existing endpoint. Yet the endpoint is on this run's configuration (status Creating). The endpoint was left as it is and may still come up on this run's model: check the run with the status function.",
    );
  });

  test('following an accepted deployment failed: the cause says so, and nothing is deleted', () => {
    const result = failed('endpoint', { Error: 'SageMaker.SageMakerException', Cause: 'Rate exceeded' }, { request: {}, run, deployment: { endpointExisted: true } });
    expect(result.cause).toMatch(/^SageMaker accepted the update of endpoint lora-pokemon, but following it failed \(SageMaker\.SageMakerException\): Rate exceeded\. The endpoint was left as it is/);
    expect(result.cleanup).toBeUndefined();
  });
});

test('a timed-out endpoint: how long was waited, that it may still come up, and no cleanup', () => {
  const endpoint = { EndpointName: 'lora-pokemon', EndpointStatus: 'Creating' };
  const training = trainingJobFixture({ TrainingEndTime: '2025-01-01T12:20:00.000Z' });
  const result = failed('endpoint-timeout', { Error: 'EndpointTimeout', Cause: 'polled 30 times' }, { request: {}, run, training, endpoint, deployment: { endpointExisted: false } });
  expect(result.error).toBe('EndpointTimeout');
  expect(result.cause).toMatch(/^Endpoint lora-pokemon was not in service after about 30 minutes of deployment \(status Creating\)\./);
  expect(result.cause).toContain('may still come up');
  expect(result.cause).toContain('status');
  expect(result.cleanup).toBeUndefined();
});

describe('odd input never throws', () => {
  test.each([
    ['garbage JSON', { Error: 'States.TaskFailed', Cause: '{"TrainingJobStatus": ' }],
    ['a JSON array', { Error: 'States.TaskFailed', Cause: '[1, 2]' }],
    ['no cause', { Error: 'States.Timeout' }],
    ['an empty cause', { Error: 'States.Timeout', Cause: '   ' }],
  ])('%s', (_, error) => {
    const result = failed('training', error);
    expect(result.error).toBe('TrainingFailed');
    expect(result.cause).toMatch(/^The training job lora-pokemon-20250101120000-abc123 could not run( \(States\.TaskFailed\): | with States\.Timeout\.$)/);
  });

  test('an event with nothing in it', () => {
    const result = report({} as unknown as ReportEvent, { now });
    expect(result.error).toBe('PreparationFailed');
    expect(result.cause).toBe('Preparing the run failed with UnknownError.');
    expectValidSubject(result.subject);
  });

  test('a state that is not an object, and an unsettled run', () => {
    const event = { outcome: 'failed', execution, stage: 'endpoint', error: { Error: 'EndpointFailed' }, state: { run: { settled: false, waitSeconds: 60, reason: 'x' } } };
    const result = report(event as unknown as ReportEvent, { now });
    expect(result.cleanup).toBeUndefined();
    expect(result.cause).toBe('Deploying endpoint of this run failed with EndpointFailed.');
    const nullState = report({ ...event, state: null } as unknown as ReportEvent, { now });
    expect(nullState.error).toBe('EndpointFailed');
  });
});

test('the cause is capped, keeping its beginning', () => {
  const long = `Start ${'x'.repeat(10000)}`;
  const result = failed('model', { Error: 'SageMaker.AmazonSageMakerException', Cause: long });
  expect(result.cause).toHaveLength(MAX_CAUSE_LENGTH);
  expect(result.cause).toMatch(/^Creating the model .*: Start x+…$/);
});

describe('subjects', () => {
  test('a unicode dataset name becomes printable ASCII on one line', () => {
    const result = failed('prepare', { Error: 'InvalidInput', Cause: lambdaCause('InvalidInput', 'bad') }, { request: { dataset: 'pokémon ドラゴン\nline' } });
    expect(result.subject).toBe('LoRA dataset "pokemon ???? line" failed: InvalidInput');
    expectValidSubject(result.subject);
  });

  test('a long subject is cut below SNS limit', () => {
    const result = failed('prepare', { Error: 'InvalidInput' }, { request: { dataset: 'd'.repeat(300) } });
    expectValidSubject(result.subject);
    expect(result.subject).toHaveLength(MAX_SUBJECT_LENGTH);
    expect(result.subject).toMatch(/^LoRA dataset "d+\.\.\.$/);
  });

  test('snsSubject never returns an empty subject', () => {
    expect(snsSubject(' \n\t ')).toBe('LoRA run');
    expect(snsSubject('Ünïcödé\u0000\u0007')).toBe('Unicode??');
  });
});

describe('a shared run that succeeded', () => {
  const shared = sharedRunFixture();
  const lora = { name: 'pokemon', version: 3, ref: 'pokemon@3', status: 'pending' };
  const succeeded = (promotion: unknown) =>
    report({ outcome: 'succeeded', execution, run: shared, training: trainingJobFixture(), endpoint: null, lora, check: null, promotion } as unknown as ReportEvent, { now });

  test('the summary names the shared endpoint, its inference component, the exact version and a ready-to-paste command', () => {
    const result = succeeded({ name: 'pokemon', version: 3, current: true });
    expect(result.summary).toMatchObject({
      servingMode: 'shared',
      endpointName: 'lora-shared-sd15',
      inferenceComponentName: 'lora-shared-sd15',
      loraName: 'pokemon',
      loraVersion: 3,
      madeCurrent: true,
      invokeCommand:
        'aws sagemaker-runtime invoke-endpoint --endpoint-name lora-shared-sd15 --inference-component-name lora-shared-sd15 ' +
        `--content-type application/json --accept image/png --cli-binary-format raw-in-base64-out --body '{"prompt": "...", "lora": "pokemon@3"}' image.png`,
    });
    expect(result.summary).not.toHaveProperty('dedicatedBecause');
    expect(result.subject).toBe('LoRA pokemon@3 is ready on lora-shared-sd15');
    expectValidSubject(result.subject);
    expect(result.message).toContain('requests naming "pokemon" get it');
    expect(result.message).toContain(`  ${result.summary?.invokeCommand}`);
    expect(JSON.parse(result.message.slice(result.message.lastIndexOf('\n{')))).toEqual(result.summary);
  });

  test('a version that was not made current says which one requests get, and how to name this one', () => {
    const result = succeeded({ name: 'pokemon', version: 3, current: false });
    expect(result.summary?.madeCurrent).toBe(false);
    expect(result.message).toContain('A newer version of pokemon is current');
    expect(result.message).toContain('name "pokemon@3" to use this one');
  });

  test('a dedicated run of a shared deployment says why it got its own endpoint', () => {
    const because = "The shared endpoint lora-shared-sd15 cannot serve this run: its modelType sdxl (execution input) is not the shared endpoint's sd15; it gets an endpoint of its own.";
    const dedicatedRun = { ...run, serving: { ...run.serving, dedicatedBecause: because } } as typeof run;
    const endpoint = { EndpointName: 'lora-pokemon', EndpointStatus: 'InService' };
    const result = report({ outcome: 'succeeded', execution, run: dedicatedRun, training: trainingJobFixture(), endpoint, lora: null, check: null, promotion: null }, { now });
    expect(result.summary).toMatchObject({ servingMode: 'dedicated', endpointName: 'lora-pokemon', dedicatedBecause: because });
    expect(result.summary).not.toHaveProperty('loraVersion');
    expect(result.message).toContain(because);
  });
});

describe('a shared run that failed after training', () => {
  const shared = sharedRunFixture();
  const lora = { name: 'pokemon', version: 4, ref: 'pokemon@4', status: 'pending' };
  const state = (extra: Record<string, unknown>) => ({ request: { dataset: 'pokemon' }, run: shared, endpoint: null, lora: null, check: null, ...extra });

  test('an unusable LoRA file keeps LoraFileInvalid and its reason; nothing was registered, so nothing is cleaned up', () => {
    const message = 's3://artifacts/models/job/output/model.tar.gz (pokemon.safetensors) cannot be served by the shared endpoint: it is an SDXL LoRA';
    const result = failed('register', { Error: 'LoraFileInvalid', Cause: lambdaCause('LoraFileInvalid', message) }, state({}));
    expect(result.error).toBe('LoraFileInvalid');
    expect(result.cause).toBe(`The trained LoRA pokemon could not be registered: ${message}.`);
    expect(result.cleanup).toBeUndefined();
  });

  test('any other registration error is RegistrationFailed naming what was caught', () => {
    const result = failed('register', { Error: 'ProvisionedThroughputExceededException', Cause: lambdaCause('ProvisionedThroughputExceededException', 'Rate exceeded') }, state({}));
    expect(result.error).toBe('RegistrationFailed');
    expect(result.cause).toBe('Registering the trained LoRA pokemon in the registry failed (ProvisionedThroughputExceededException): Rate exceeded.');
  });

  const promoteLater = 'invoke the registry function (the stack\'s RegistryFunctionName output) with {"action":"promote","name":"pokemon","version":4}.';

  test("the server refusing the LoRA: LoraCheckFailed with what the endpoint answered, and the version to mark failed by the clean-up", () => {
    const answer = 'Generating with LoRA pokemon@4 on inference component lora-shared-sd15 of endpoint lora-shared-sd15 failed: the server answered 400: the LoRA is not an SD 1.5 LoRA (field lora).';
    const result = failed('check', { Error: 'LoraCheckFailed', Cause: lambdaCause('LoraCheckFailed', answer) }, state({ lora }));
    expect(result.error).toBe('LoraCheckFailed');
    expect(result.cause).toBe(
      `The shared endpoint refused pokemon@4: ${answer} pokemon@4 will be marked failed by the clean-up that follows this report (the server then answers 410 for it) and was not made current; the name's current version is unchanged.`,
    );
    expect(result.cleanup).toEqual({ loraVersion: { name: 'pokemon', version: 4 } });
    expect(result.message).toContain('To be marked failed in the registry by the clean-up: pokemon@4');
    expect(result.message).not.toContain('Cleaned up:');
  });

  test.each([
    ['never warmed up within the retries', 'SharedEndpointWarming', /^The shared endpoint lora-shared-sd15 still had no copy ready after the workflow's retries \(no copy ready\)\./],
    ['stayed busy (503) through the retries', 'SharedEndpointBusy', /^The shared endpoint lora-shared-sd15 was still busy after the workflow's retries: no copy ready\. Consider a higher endpoint\.maxInstances\./],
    ['answered 500 (a deployment fault)', 'SharedEndpointUnavailable', /^The check request with pokemon@4 to the shared endpoint lora-shared-sd15 could not be answered \(SharedEndpointUnavailable\): no copy ready\. This is a fault of the deployment/],
    ['failed with an unclassified error', 'Lambda.Unknown', /could not be answered \(Lambda\.Unknown\)/],
  ])('an endpoint that %s: SharedEndpointUnavailable, the version stays pending (never rejected) and the Cause says how to promote it', (_, errorName, opening) => {
    const result = failed('check', { Error: errorName, Cause: lambdaCause(errorName, 'no copy ready') }, state({ lora }));
    expect(result.error).toBe('SharedEndpointUnavailable');
    expect(result.cause).toMatch(opening);
    expect(result.cause).toContain("pokemon@4 stays pending: it was not made current, nor marked failed, and the name's current version is unchanged.");
    expect(result.cause).toContain(promoteLater);
    expect(result.cleanup).toBeUndefined();
    expect(result.message).not.toContain('marked failed in the registry');
  });

  test('a failed promotion is PromotionFailed; the version is never marked failed, and the Cause says how to promote it', () => {
    const result = failed('promote', { Error: 'RegistryBusy', Cause: lambdaCause('RegistryBusy', 'Making pokemon@4 current was cancelled (TransactionConflict, None)') }, state({ lora, check: { lora: 'pokemon@4' } }));
    expect(result.error).toBe('PromotionFailed');
    expect(result.cause).toMatch(/^pokemon@4 passed its check, but making it current failed \(RegistryBusy\): Making pokemon@4 current was cancelled \(TransactionConflict, None\)\. It was not marked failed: it stays pending/);
    expect(result.cause).toContain(promoteLater);
    expect(result.cleanup).toBeUndefined();
  });

  test('no version to mark failed when none was registered (lora still null), or the stage is not after registration', () => {
    expect(failed('check', { Error: 'LoraCheckFailed', Cause: 'x' }, state({})).cleanup).toBeUndefined();
    expect(failed('check', { Error: 'LoraCheckFailed', Cause: 'x' }, state({ lora: { name: 'pokemon', version: 0 } })).cleanup).toBeUndefined();
    expect(failed('register', { Error: 'RegistryConflict', Cause: 'x' }, state({ lora })).cleanup).toBeUndefined();
    // A shared run never has a model or endpoint config to delete.
    expect(failed('endpoint', { Error: 'States.TaskFailed', Cause: 'x' }, state({})).cleanup).toBeUndefined();
  });
});

describe('captions generated for images without one (caption_missing)', () => {
  const endpoint = { EndpointName: 'lora-pokemon', EndpointStatus: 'InService', EndpointConfigName: run.run };
  const published = { bucket: 'artifacts', prefix: `models/${run.run}/samples/`, count: 0, omitted: 0 };
  const succeeded = (prepared: typeof run, samples: PublishedSamples | { Error: string; Cause: string }) => report({ outcome: 'succeeded', execution, run: prepared, training: trainingJobFixture(), endpoint, samples }, { now });
  const toCaption = { ...run, dataset: { ...run.dataset, skipped: [], skippedCount: 0, notes: [], captionsToWrite: 12 } };

  test('the notification says how many Prepare found to caption, and the summary what Publish samples wrote and kept', () => {
    const { message, summary } = succeeded(toCaption, { ...published, captionsWritten: 11, captionsKept: 1 });
    expect(message).toContain('12 images without a caption will be captioned by BLIP; the captions are written next to them in S3 for review.');
    expect(summary?.captions).toEqual({ written: 11, kept: 1, folder: run.dataset.uri });
    expect(message).toContain(`Captions: BLIP's captions of 11 image(s) were written next to them in ${run.dataset.uri} for review; 1 not written, as the folder already had that caption file (yours is kept).`);
  });

  test('a failure after Prepare says which images were to be captioned', () => {
    const { message } = failed('training', { Error: 'States.TaskFailed', Cause: JSON.stringify(trainingJobFixture({ TrainingJobStatus: 'Failed', FailureReason: 'AlgorithmError: x' })) }, { request: { dataset: 'pokemon' }, run: toCaption });
    expect(message).toContain('12 images without a caption will be captioned by BLIP');
  });

  test('control: no captions to write or written (or a run from before the fields), no line and no summary field', () => {
    for (const samples of [{ ...published, captionsWritten: 0, captionsKept: 0 }, published, { Error: 'SamplesArchiveInvalid', Cause: 'x' }]) {
      const { message, summary } = succeeded(run, samples);
      expect(summary).not.toHaveProperty('captions');
      expect(message).not.toMatch(/BLIP/);
    }
  });
});

describe('files Prepare found the training skips', () => {
  const skipped = Array.from({ length: 20 }, (_, i) => `img${i}.txt: not an image kohya trains, nor the caption of one`);
  const withSkipped = {
    ...run,
    dataset: { ...run.dataset, skipped: ['a.Png: mixed-case extension, kohya ignores it; rename it to .png', ...skipped.slice(0, 19)], skippedCount: 27, notes: ['2 caption file(s) were not read'] },
  };
  const endpoint = { EndpointName: 'lora-pokemon', EndpointStatus: 'InService', EndpointConfigName: run.run };
  const succeeded = (prepared: typeof run) => report({ outcome: 'succeeded', execution, run: prepared, training: trainingJobFixture(), endpoint }, { now });

  test('the success notification says how many, names a few with why, and gives the notes', () => {
    const { message, summary } = succeeded(withSkipped);
    expect(message).toContain(
      '27 files were not trained: a.Png (mixed-case extension, kohya ignores it; rename it to .png), img0.txt (not an image kohya trains, nor the caption of one), ' +
        'img1.txt (not an image kohya trains, nor the caption of one), and 24 more (the status function lists the first 20).',
    );
    expect(message).toContain('Dataset note: 2 caption file(s) were not read.');
    // The execution output keeps its shape.
    expect(summary).not.toHaveProperty('datasetCheck');
  });

  test('one file, no notes: singular, nothing more', () => {
    const one = { ...run, dataset: { ...run.dataset, skipped: ['a.Png: mixed-case extension, kohya ignores it'], skippedCount: 1, notes: [] } };
    const { message } = succeeded(one);
    expect(message).toContain('1 file was not trained: a.Png (mixed-case extension, kohya ignores it).');
    expect(message).not.toContain('more (the status function');
    expect(message).not.toContain('Dataset note');
  });

  test('a failure after Prepare says it too, beside the cause', () => {
    const { message } = failed('training', { Error: 'States.TaskFailed', Cause: JSON.stringify(trainingJobFixture({ TrainingJobStatus: 'Failed', FailureReason: 'AlgorithmError: x' })) }, { request: { dataset: 'pokemon' }, run: withSkipped });
    expect(message).toContain('27 files were not trained: a.Png (mixed-case extension');
  });

  test('control: nothing skipped or noted (or a run from before the fields), no line at all', () => {
    const clean = { ...run, dataset: { ...run.dataset, skipped: [], skippedCount: 0, notes: [] } };
    for (const prepared of [clean, run]) {
      expect(succeeded(prepared).message).not.toMatch(/not trained|Dataset note/);
      expect(failed('training', { Error: 'States.TaskFailed', Cause: JSON.stringify(trainingJobFixture({ TrainingJobStatus: 'Failed' })) }, { request: { dataset: 'pokemon' }, run: prepared }).message).not.toMatch(/not trained|Dataset note/);
    }
  });
});
