import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, GetCommand } from '@aws-sdk/lib-dynamodb';
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import * as sagemaker from '@aws-sdk/client-sagemaker';
import { InvokeEndpointCommand, ModelError, ModelNotReadyException, SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import * as sns from '@aws-sdk/client-sns';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { mockClient } from 'aws-sdk-client-mock';
import type { StateMachineDefinition } from 'aws-local-stepfunctions';
import { STATES, type PrepareSettings } from '../lambda/shared/contract';
import { createHandler as createCheckHandler, storageFromEnvironment as smokeStorage } from '../lambda/lora-check/index';
import { encodePng } from '../lambda/lora-check/png';
import { createHandler as createSamplesHandler, storageFromEnvironment as sampleStorage } from '../lambda/samples/index';
import { createHandler } from '../lambda/prepare/handler';
import { parseSettings } from '../lambda/prepare/settings';
import { kickoff, settingsFromEnvironment } from '../lambda/kickoff/kickoff';
import { createHandler as createRegistryHandler } from '../lambda/registry/handler';
import { RegistryTable } from '../lambda/registry/table';
import { handler as reportHandler } from '../lambda/report/index';
import { ENDPOINT_POLL_LIMIT, WARMING_RETRY } from '../lib/run-definition';
import { synthPipeline } from './support/app';
import { assertValidAsl, extractDefinition, resolveIntrinsics } from './support/asl';
import { runLocally, taskError, type JsonValue, type TaskHandler } from './support/local-sfn';
import { safetensorsFile, sd15Lora } from './fixtures/lora-files';
import { modelTarGz, tarArchive } from './support/tar-archive';
import { motoAvailable, startMoto, type MotoServer } from './support/moto';
import { createTableAsDeclared } from './support/registry-table';
import { failFirst, integrationHandlers, type SdkService } from './support/sfn-integrations';

/**
 * The synthesized workflow, run locally: its definition resolved to plain ASL, Prepare and Report
 * as their real handler code, and every SageMaker and SNS request sent through the real AWS SDK v3
 * clients to moto, checked against the SDK's request shapes on the way.
 */

/**
 * The deployed workflow of a configuration: its plain ASL, Prepare's settings and the registry
 * function's environment as the stack sets them, and the registry table as it declares it.
 */
function deployed(config: Record<string, unknown> = {}) {
  const { template, stack } = synthPipeline(config);
  const definition = extractDefinition(template);
  const resources = template.toJSON().Resources as Record<string, { Type: string; Properties?: any }>;
  const environment = (fn: { node: { defaultChild?: unknown } }) =>
    resolveIntrinsics(resources[stack.getLogicalId(fn.node.defaultChild as never)].Properties.Environment.Variables, resources as never) as Record<string, string>;
  const settings: PrepareSettings = parseSettings(environment(stack.workflow.prepareFunction.function).SETTINGS);
  const registryEnvironment = environment(stack.workflow.registryFunction.function);
  const table = resources[stack.getLogicalId(stack.registry.table.node.defaultChild as never)].Properties;
  return {
    definition,
    settings,
    kickoffEnvironment: environment(stack.trigger.kickoff.function),
    registryEnvironment,
    checkEnvironment: environment(stack.workflow.checkFunction.function),
    samplesEnvironment: environment(stack.workflow.samplesFunction.function),
    table,
  };
}

const dedicated = deployed({ 'endpoint.mode': 'dedicated' });
const { definition: defaultDefinition, settings: defaultSettings, kickoffEnvironment } = dedicated;
const definition = defaultDefinition;
const settings = defaultSettings;
const topicArn = String((definition.States[STATES.notifyFailure] as any).Parameters.TopicArn);
const S3_BASE_MODEL = 's3://base-models/sd15/v1-5-pruned-emaonly.safetensors';
const withS3BaseModel = deployed({ 'endpoint.mode': 'dedicated', baseModel: S3_BASE_MODEL });
/** FLUX.1-dev, gated: dedicated endpoints, and the Hugging Face token's secret named in the configuration. */
const FLUX_DEV = 'black-forest-labs/FLUX.1-dev';
const fluxDev = deployed({ 'endpoint.mode': 'dedicated', modelType: 'flux1', baseModel: FLUX_DEV, huggingFaceTokenSecret: 'hf/token' });
/** The default deployment: one shared endpoint for the deploy-time base model. */
const shared = deployed();
const { LORA_REGISTRY_TABLE: registryTable, LORA_BUCKET: artifactsBucket, MODELS_PREFIX: modelsPrefix, LORA_PREFIX: lorasPrefix } = shared.registryEnvironment;

/** A whole 64 × 64 PNG: Prepare's pre-flight reads each image's header, and refuses one smaller than a bucket step. */
const PNG = encodePng({ width: 64, height: 64, channels: 3, data: new Uint8Array(64 * 64 * 3) });

/** A generated image as the server sends it: 16 × 16 RGB at `level` (plus a gradient), as base64 PNG. */
const generated = (level: number) => {
  const data = new Uint8Array(16 * 16 * 3).map((_, i) => Math.min(255, level + (i % 48)));
  return encodePng({ width: 16, height: 16, channels: 3, data }).toString('base64');
};
/** The base model's image, and the LoRA's: far apart, as a LoRA at its trained scale makes them. */
const BASE_LEVEL = 60;
const LORA_LEVEL = 140;

const describeWithMoto = motoAvailable() ? describe : describe.skip;

test('the synthesized definitions are valid ASL, in both serving modes', () => {
  assertValidAsl(definition);
  assertValidAsl(shared.definition);
  expect(shared.settings.endpoint).toMatchObject({ mode: 'shared', shared: { endpointName: 'lora-shared-sd15', inferenceComponentName: 'lora-shared-sd15' } });
  expect(settings.endpoint.mode).toBe('dedicated');
});

describeWithMoto('the workflow, run locally against moto', () => {
  let moto: MotoServer;
  let s3: S3Client;
  let sm: sagemaker.SageMakerClient;
  let snsClient: sns.SNSClient;
  let dynamodb: DynamoDBClient;
  let registry: RegistryTable;
  let published: Array<{ Subject?: string; Message?: string }>;
  /** The shared endpoint, as the check function's SageMaker Runtime client reaches it. */
  const runtime = mockClient(SageMakerRuntimeClient);
  const runtimeClient = new SageMakerRuntimeClient({ region: 'us-east-1', maxAttempts: 1 });
  /** What a dedicated endpoint's fused LoRA gives (BASE_LEVEL: a LoRA that does nothing). */
  let dedicatedLoraLevel: number;
  /** Report presigns links with the default credentials: test ones, restored afterwards. */
  const savedEnvironment = { ...process.env };

  beforeAll(async () => {
    // The functions log a JSON line per decision; the assertions below say what matters.
    jest.spyOn(console, 'log').mockImplementation(() => undefined);
    jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'testing', AWS_SECRET_ACCESS_KEY: 'testing', AWS_REGION: 'us-east-1' });
    moto = await startMoto();
    s3 = new S3Client(moto.clientConfig);
    sm = new sagemaker.SageMakerClient(moto.clientConfig);
    snsClient = new sns.SNSClient(moto.clientConfig);
    dynamodb = new DynamoDBClient(moto.clientConfig);
    registry = new RegistryTable(DynamoDBDocumentClient.from(dynamodb), registryTable);
  });
  afterAll(async () => {
    for (const client of [s3, sm, snsClient, dynamodb]) client?.destroy();
    runtime.restore();
    await moto?.stop();
    for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_REGION']) {
      if (savedEnvironment[name] === undefined) delete process.env[name];
      else process.env[name] = savedEnvironment[name];
    }
  });
  beforeEach(async () => {
    await moto.reset();
    runtime.reset();
    // A dedicated endpoint: its fused LoRA at the default scale, the base model at lora_scale 0.
    dedicatedLoraLevel = LORA_LEVEL;
    runtime.on(InvokeEndpointCommand).callsFake((input: { Body: Uint8Array }) => {
      const request = JSON.parse(Buffer.from(input.Body).toString('utf8')) as Record<string, unknown>;
      const image = generated(request.lora_scale === 0 ? BASE_LEVEL : dedicatedLoraLevel);
      return { Body: Buffer.from(JSON.stringify({ images: [image], seed: request.seed })), ContentType: 'application/json' };
    });
    published = [];
    await s3.send(new CreateBucketCommand({ Bucket: settings.datasetsBucket }));
    await s3.send(new CreateBucketCommand({ Bucket: artifactsBucket }));
    await snsClient.send(new sns.CreateTopicCommand({ Name: topicArn.split(':').pop() }));
    await createTableAsDeclared(dynamodb, registryTable, shared.table);
  });

  async function upload(folder: string, files: Record<string, string | Buffer>): Promise<void> {
    for (const [name, body] of Object.entries(files)) {
      await s3.send(new PutObjectCommand({ Bucket: settings.datasetsBucket, Key: `${settings.datasetPrefix}${folder}/${name}`, Body: body }));
    }
  }
  const pokemon = () => upload('pokemon', { '0001.png': PNG, '0001.txt': 'a green pokemon', '0002.png': PNG, '0002.txt': 'a red pokemon', 'dataset.toml': '' });

  /** SageMaker as moto answers it, with some answers replaced, as a job or an endpoint that fails would give them. */
  function sagemakerService(override?: (command: unknown, answer: () => Promise<any>) => Promise<unknown>): SdkService {
    const client = override ? { send: (command: never) => override(command, () => sm.send(command)) } : sm;
    return { client, commands: sagemaker, errorPrefix: 'SageMaker' };
  }

  /** SageMaker as moto answers it, but with `patch` laid over every answer to one kind of command. */
  function patched(Command: new (...args: never[]) => unknown, patch: (answer: Record<string, unknown>) => Record<string, unknown>): SdkService {
    return sagemakerService(async (command, answer) => {
      const answered = await answer();
      return command instanceof Command ? { ...answered, ...patch(answered) } : answered;
    });
  }

  interface RunOptions {
    readonly service?: SdkService;
    /** The clock Prepare reads; by default each call is a minute after the previous one, so uploads settle. */
    readonly now?: () => Date;
    readonly wrap?: Partial<Record<string, (handler: TaskHandler) => TaskHandler>>;
    readonly name?: string;
  }

  async function run(input: Record<string, unknown>, options: RunOptions & { readonly pipeline?: ReturnType<typeof deployed> } = {}) {
    const { definition, settings } = options.pipeline ?? { definition: defaultDefinition, settings: defaultSettings };
    let minutes = 0;
    const now = options.now ?? (() => new Date(Date.now() + 60_000 * ++minutes));
    const prepare = createHandler({ s3, settings, now });
    // The registry function's own code against moto's DynamoDB and S3, as the stack configures it.
    const registryFunction = createRegistryHandler({ s3, table: registry, storage: { bucket: artifactsBucket, modelsPrefix, lorasPrefix } });
    const pipeline = options.pipeline ?? dedicated;
    const checkFunction = createCheckHandler({ runtime: runtimeClient, s3, storage: smokeStorage(pipeline.checkEnvironment) });
    const samplesFunction = createSamplesHandler(s3, sampleStorage(pipeline.samplesEnvironment));
    const handlers = integrationHandlers(definition, {
      services: { sagemaker: options.service ?? sagemakerService(), sns: { client: snsClient, commands: sns, errorPrefix: 'SNS' } },
      lambdas: {
        WorkflowPrepareFunction: (payload) => prepare(payload as never),
        WorkflowReportFunction: (payload) => reportHandler(payload as never),
        WorkflowRegistryFunction: (payload) => registryFunction(payload),
        WorkflowLoraCheckFunction: (payload) => checkFunction(payload),
        WorkflowSamplesFunction: (payload) => samplesFunction(payload),
      },
    });
    for (const state of [STATES.notifySuccess, STATES.notifyFailure]) {
      const send = handlers[state];
      handlers[state] = (request: JsonValue) => {
        published.push(request as never);
        return send(request);
      };
    }
    for (const [state, wrap] of Object.entries(options.wrap ?? {})) handlers[state] = wrap!(handlers[state]);
    const name = options.name ?? 'run-1';
    return runLocally(definition as StateMachineDefinition, input as JsonValue, {
      handlers,
      context: { Execution: { Name: name, Id: `arn:aws:states:us-east-1:123456789012:execution:TestStack-runs:${name}` } } as never,
    });
  }

  const list = async () => ({
    jobs: (await sm.send(new sagemaker.ListTrainingJobsCommand({}))).TrainingJobSummaries ?? [],
    models: (await sm.send(new sagemaker.ListModelsCommand({}))).Models ?? [],
    configs: (await sm.send(new sagemaker.ListEndpointConfigsCommand({}))).EndpointConfigs ?? [],
    endpoints: (await sm.send(new sagemaker.ListEndpointsCommand({}))).Endpoints ?? [],
  });

  test('happy path: a new endpoint serves the trained LoRA, and every request reads back as sent', async () => {
    await pokemon();
    const result = await run({ dataset: 'pokemon' });
    expect(result.error).toBeUndefined();
    expect(result.status).toBe('SUCCEEDED');
    expect(result.visited).toContain(STATES.createEndpoint);
    expect(result.visited).not.toContain(STATES.updateEndpoint);

    const output = result.output as Record<string, unknown>;
    const runName = String(output.run);
    expect(runName).toMatch(/^lora-pokemon-[0-9]{14}-[0-9a-f]{6}$/);
    expect(output).toMatchObject({ dataset: 'pokemon', trainingJobName: runName, endpointName: 'lora-pokemon' });
    expect(Object.keys(output).sort()).toEqual(['billableSeconds', 'dataset', 'endpointName', 'invokeCommand', 'modelArtifact', 'run', 'samples', 'servingMode', 'smoke', 'spotSavingsPercent', 'trainingJobName', 'trainingSeconds']);
    expect(output.servingMode).toBe('dedicated');

    const job = await sm.send(new sagemaker.DescribeTrainingJobCommand({ TrainingJobName: runName }));
    expect(job.EnableManagedSpotTraining).toBe(true);
    expect(job.StoppingCondition).toEqual({ MaxRuntimeInSeconds: 3600, MaxWaitTimeInSeconds: 7200 });
    expect(job.CheckpointConfig).toEqual({ S3Uri: expect.stringMatching(new RegExp(`^s3://[a-z0-9]+/checkpoints/${runName}/$`)), LocalPath: '/opt/ml/checkpoints' });
    expect(job.OutputDataConfig?.KmsKeyId).toMatch(/^arn:aws:kms:/);
    expect(job.OutputDataConfig?.S3OutputPath).toMatch(/^s3:\/\/[a-z0-9]+\/models\/$/);
    // g4dn has local NVMe storage, for which SageMaker refuses a volume key.
    expect(job.ResourceConfig).toEqual({ InstanceType: 'ml.g4dn.xlarge', InstanceCount: 1, VolumeSizeInGB: 50 });
    expect(job.InputDataConfig?.map((c) => [c.ChannelName, c.DataSource?.S3DataSource?.S3Uri])).toEqual([
      ['dataset', `s3://${settings.datasetsBucket}/${settings.datasetPrefix}pokemon/`],
    ]);
    expect(job.HyperParameters).toMatchObject({ model_type: 'sd15', base_model: 'stable-diffusion-v1-5/stable-diffusion-v1-5' });
    // (moto does not keep MetricDefinitions; test/workflow.test.ts checks them in the definition.)

    const model = await sm.send(new sagemaker.DescribeModelCommand({ ModelName: runName }));
    expect(model.PrimaryContainer?.Environment).toEqual({ MODEL_TYPE: 'sd15', LORA_SCALE: '1', BASE_MODEL_ID: 'stable-diffusion-v1-5/stable-diffusion-v1-5' });
    const endpoint = await sm.send(new sagemaker.DescribeEndpointCommand({ EndpointName: 'lora-pokemon' }));
    expect(endpoint.EndpointConfigName).toBe(runName);
    const config = await sm.send(new sagemaker.DescribeEndpointConfigCommand({ EndpointConfigName: runName }));
    expect(config.ProductionVariants?.[0]).toMatchObject({ ModelName: runName, InstanceType: 'ml.g4dn.xlarge', InitialInstanceCount: 1 });
    expect(config.KmsKeyId).toBeUndefined();

    expect(published).toEqual([expect.objectContaining({ Subject: `LoRA run ${runName} is in service` })]);
  });

  /**
   * Train LoRA, and the samples the job rendered: the container copies its sample/ folder to
   * /opt/ml/output/data, which SageMaker uploads as output.tar.gz beside model.tar.gz (moto writes neither).
   */
  const rendersSamples =
    (files: Record<string, string | Buffer>): ((handler: TaskHandler) => TaskHandler) =>
    (handler) =>
    async (request) => {
      const job = (await handler(request)) as { TrainingJobName: string };
      const entries = Object.entries(files).map(([name, body]) => ({ path: `sample/${name}`, body: Buffer.from(body) }));
      const archive = gzipSync(tarArchive([{ path: 'sample/', type: '5' }, ...entries]));
      await s3.send(new PutObjectCommand({ Bucket: artifactsBucket, Key: `models/${job.TrainingJobName}/output/output.tar.gz`, Body: archive }));
      return job as never;
    };
  const SAMPLES = {
    'pokemon_e000001_00_20250101120000.png': PNG,
    'samples.json': JSON.stringify({ prompts: [{ index: 0, prompt: 'a green pokemon with a menacing face', seed: 1234 }], images: [], contact_sheet: 'contact-sheet.png' }),
    'contact-sheet.png': PNG,
  };
  const keysUnder = async (prefix: string) => ((await s3.send(new ListObjectsV2Command({ Bucket: artifactsBucket, Prefix: prefix }))).Contents ?? []).map((o) => o.Key!.slice(prefix.length)).sort();
  const dedicatedRequests = () => runtime.commandCalls(InvokeEndpointCommand).map((c) => JSON.parse(Buffer.from(c.args[0].input.Body as Uint8Array).toString('utf8')) as Record<string, unknown>);

  describe('samples and the smoke test, dedicated', () => {
    test('samples published next to the model, the endpoint smoke-tested with the first sample prompt, both in the output, links in the notification', async () => {
      await pokemon();
      const result = await run({ dataset: 'pokemon' }, { wrap: { [STATES.train]: rendersSamples(SAMPLES) } });
      expect(result.error).toBeUndefined();
      expect(result.visited).toEqual(expect.arrayContaining([STATES.publishSamples, STATES.smokeTest]));
      expect(result.visited.indexOf(STATES.smokeTest)).toBeGreaterThan(result.visited.lastIndexOf(STATES.endpointReady));
      const output = result.output as Record<string, any>;
      const job = String(output.trainingJobName);
      expect(await keysUnder(`models/${job}/samples/`)).toEqual(['contact-sheet.png', 'pokemon_e000001_00_20250101120000.png', 'samples.json']);
      expect(await keysUnder(`models/${job}/smoke/`)).toEqual(['side-by-side.png', 'with-lora.png', 'without-lora.png']);
      expect(output.samples).toEqual({ count: 3, location: `s3://${artifactsBucket}/models/${job}/samples/`, contactSheet: `s3://${artifactsBucket}/models/${job}/samples/contact-sheet.png` });
      expect(output.smoke).toEqual({ meanAbsoluteDifference: LORA_LEVEL - BASE_LEVEL, changedPixelShare: 1, minMeanAbsoluteDifference: 2, location: `s3://${artifactsBucket}/models/${job}/smoke/` });
      // The dedicated endpoint: its LoRA at the default scale, then at 0, with the samples' first prompt.
      expect(dedicatedRequests().map((r) => [r.prompt, r.lora_scale])).toEqual([
        ['a green pokemon with a menacing face', undefined],
        ['a green pokemon with a menacing face', 0],
      ]);
      const message = String(published[0].Message);
      expect(message).toContain('Smoke test passed');
      for (const file of ['samples/samples.json', 'samples/contact-sheet.png', 'smoke/without-lora.png', 'smoke/with-lora.png', 'smoke/side-by-side.png']) {
        expect(message).toMatch(new RegExp(`https://[^ ]*models/${job}/${file}\\?[^ ]*X-Amz-Signature=`));
      }
    });

    test('sampling off: nothing copied, "none" in the output, the run succeeds', async () => {
      await pokemon();
      const result = await run({ dataset: 'pokemon' });
      expect(result.status).toBe('SUCCEEDED');
      expect((result.output as Record<string, any>).samples).toEqual({ count: 0, note: expect.stringContaining('rendered no samples') });
      expect(await keysUnder('models/')).toEqual(expect.not.arrayContaining([expect.stringContaining('samples/')]));
      // The default prompt, without samples.
      expect(dedicatedRequests()[0].prompt).toBe('a detailed photograph');
    });

    test('a samples function that keeps failing: retried, then the run goes on and succeeds without samples, saying so', async () => {
      await pokemon();
      const broken: (handler: TaskHandler) => TaskHandler = () => () => {
        throw taskError('AccessDenied', 'User is not authorized to perform: s3:ListBucket');
      };
      const result = await run({ dataset: 'pokemon' }, { wrap: { [STATES.publishSamples]: broken } });
      expect(result.status).toBe('SUCCEEDED');
      expect(result.retries[STATES.publishSamples]).toBe(3);
      expect((result.output as Record<string, any>).samples.note).toContain('Publishing the samples failed (AccessDenied): User is not authorized');
    });

    test('a LoRA with no effect on a new endpoint: SmokeTestFailed, its images kept, the endpoint, config and model deleted', async () => {
      await pokemon();
      dedicatedLoraLevel = BASE_LEVEL;
      const result = await run({ dataset: 'pokemon' });
      expect(result).toMatchObject({ status: 'FAILED', error: 'SmokeTestFailed' });
      expect(result.cause).toContain('The LoRA had no effect');
      expect(result.cause).toContain('which this run created, is deleted by the clean-up');
      expect(result.retries[STATES.smokeTest]).toBeUndefined();
      expect(result.visited).toEqual(expect.arrayContaining([STATES.smokeTestFailed, STATES.deleteFailedEndpoint, STATES.deleteEndpointConfig, STATES.deleteModel, STATES.notifyFailure]));
      const left = await list();
      expect({ models: left.models, configs: left.configs, endpoints: left.endpoints }).toEqual({ models: [], configs: [], endpoints: [] });
      const job = left.jobs[0].TrainingJobName!;
      expect(await keysUnder(`models/${job}/smoke/`)).toEqual(['side-by-side.png', 'with-lora.png', 'without-lora.png']);
      expect(published).toEqual([expect.objectContaining({ Subject: expect.stringContaining('SmokeTestFailed') })]);
    });

    test('a LoRA with no effect on an updated endpoint: SmokeTestFailed; the endpoint is updated back to the previous config, this run\'s model and config kept', async () => {
      await pokemon();
      const first = await run({ dataset: 'pokemon' }, { name: 'first' });
      const previous = String((first.output as Record<string, unknown>).run);
      dedicatedLoraLevel = BASE_LEVEL;
      const updates: JsonValue[] = [];
      const record: (handler: TaskHandler) => TaskHandler = (handler) => (request) => {
        updates.push(request);
        return handler(request);
      };
      published = [];
      const second = await run({ dataset: 'pokemon' }, { name: 'second', wrap: { [STATES.rollBackEndpoint]: record } });
      expect(second).toMatchObject({ status: 'FAILED', error: 'SmokeTestFailed' });
      const failed = String((await list()).configs.map((c) => c.EndpointConfigName).find((name) => name !== previous));
      expect(updates).toEqual([{ EndpointName: 'lora-pokemon', EndpointConfigName: previous }]);
      expect(second.cause).toContain(`rolls it back to endpoint config ${previous}`);
      expect(second.visited).toEqual(expect.arrayContaining([STATES.smokeTestFailed, STATES.reportFailure, STATES.rollBackEndpoint, STATES.notifyFailure]));
      for (const state of [STATES.deleteFailedEndpoint, STATES.deleteEndpointConfig, STATES.deleteModel, STATES.rollBackFailed]) expect(second.visited).not.toContain(state);
      const endpoint = await sm.send(new sagemaker.DescribeEndpointCommand({ EndpointName: 'lora-pokemon' }));
      expect(endpoint.EndpointConfigName).toBe(previous);
      const left = await list();
      // Kept while the endpoint moves off them; the Cause says how to delete them.
      expect(left.configs.map((c) => c.EndpointConfigName).sort()).toEqual([previous, failed].sort());
      expect(left.models.length).toBe(2);
      expect(published).toEqual([expect.objectContaining({ Subject: expect.stringContaining('SmokeTestFailed'), Message: expect.stringContaining(`To be rolled back by the clean-up: endpoint lora-pokemon, to endpoint config ${previous}`) })]);
    });

    test('a roll-back SageMaker refuses (the previous config is gone): retried, then the run still fails with SmokeTestFailed and notifies, saying so first', async () => {
      await pokemon();
      const first = await run({ dataset: 'pokemon' }, { name: 'first' });
      const previous = String((first.output as Record<string, unknown>).run);
      await sm.send(new sagemaker.DeleteEndpointConfigCommand({ EndpointConfigName: previous }));
      dedicatedLoraLevel = BASE_LEVEL;
      published = [];
      const second = await run({ dataset: 'pokemon' }, { name: 'second' });
      expect(second).toMatchObject({ status: 'FAILED', error: 'SmokeTestFailed' });
      expect(second.cause).toContain(`aws sagemaker update-endpoint --endpoint-name lora-pokemon --endpoint-config-name ${previous}`);
      expect(second.retries[STATES.rollBackEndpoint]).toBeGreaterThan(0);
      expect(second.visited).toEqual(expect.arrayContaining([STATES.rollBackEndpoint, STATES.rollBackFailed, STATES.notifyFailure, STATES.failed]));
      expect(published).toEqual([expect.objectContaining({ Subject: expect.stringContaining('SmokeTestFailed'), Message: expect.stringMatching(/^THE ROLL-BACK FAILED: .*Could not find endpoint configuration/) })]);
      expect((published[0] as unknown as { Message: string }).Message).toContain('The LoRA had no effect');
      // The endpoint still serves this run's config: nothing was deleted under it.
      const endpoint = await sm.send(new sagemaker.DescribeEndpointCommand({ EndpointName: 'lora-pokemon' }));
      expect(endpoint.EndpointConfigName).not.toBe(previous);
      expect((await list()).endpoints.length).toBe(1);
    });

    test('a busy endpoint is retried (EndpointBusy), then the smoke test passes; an endpoint error fails it, not retried', async () => {
      await pokemon();
      let busy = 2;
      runtime.on(InvokeEndpointCommand).callsFake((input: { Body: Uint8Array }) => {
        if (busy-- > 0) throw new ModelError({ message: 'Received server error (503)', $metadata: {}, OriginalStatusCode: 503, OriginalMessage: '{"error": "busy"}' });
        const request = JSON.parse(Buffer.from(input.Body).toString('utf8')) as Record<string, unknown>;
        return { Body: Buffer.from(JSON.stringify({ images: [generated(request.lora_scale === 0 ? BASE_LEVEL : LORA_LEVEL)] })) };
      });
      const passed = await run({ dataset: 'pokemon' }, { name: 'first' });
      expect(passed.status).toBe('SUCCEEDED');
      expect(passed.retries[STATES.smokeTest]).toBe(2);
      runtime.on(InvokeEndpointCommand).rejects(new ModelError({ message: 'x', $metadata: {}, OriginalStatusCode: 500, OriginalMessage: '{"error": "CUDA error: an illegal memory access"}' }));
      const failed = await run({ dataset: 'pokemon' }, { name: 'second' });
      expect(failed).toMatchObject({ status: 'FAILED', error: 'SmokeTestFailed' });
      expect(failed.cause).toContain('the server answered 500: CUDA error');
      expect(failed.retries[STATES.smokeTest]).toBeUndefined();
    });
  });

  test('an upload through the kickoff: its execution input and name run the workflow, for a folder name S3 had to encode', async () => {
    const folder = 'Poké mon+1';
    await upload(folder, { '0001.png': PNG, '0001.txt': 'a green pokemon', 'dataset.toml': '' });
    const key = `${settings.datasetPrefix}${folder}/dataset.toml`;
    // S3 event notifications carry keys URL-encoded, a space as '+'.
    const s3Key = encodeURIComponent(key).replace(/%2F/g, '/').replace(/%20/g, '+');
    const event = {
      Records: [
        {
          eventVersion: '2.1',
          eventSource: 'aws:s3',
          awsRegion: 'us-east-1',
          eventTime: new Date().toISOString(),
          eventName: 'ObjectCreated:Put',
          s3: { bucket: { name: settings.datasetsBucket }, object: { key: s3Key, size: 0, sequencer: '0066D2B5A3F1C0E2A1' } },
        },
      ],
    };
    const requests: Array<{ name: string; input: string }> = [];
    // The kickoff function's settings as the stack sets them.
    await kickoff(event as never, settingsFromEnvironment(kickoffEnvironment), async (request) => {
      requests.push(request);
      return { executionArn: 'arn', startDate: new Date() };
    });
    expect(requests).toHaveLength(1);
    const result = await run(JSON.parse(requests[0].input), { name: requests[0].name });
    expect(result.error).toBeUndefined();
    expect(result.output).toMatchObject({ dataset: folder, endpointName: expect.stringMatching(/^lora-poke-mon-1-[0-9a-f]{8}$/) });
  });

  test('retrain: a second run of the dataset updates its endpoint in place', async () => {
    await pokemon();
    const first = await run({ dataset: 'pokemon' }, { name: 'first' });
    const second = await run({ dataset: `s3://${settings.datasetsBucket}/${settings.datasetPrefix}pokemon/` }, { name: 'second' });
    expect([first.status, second.status]).toEqual(['SUCCEEDED', 'SUCCEEDED']);
    expect(second.visited).toContain(STATES.updateEndpoint);
    expect(second.visited).not.toContain(STATES.createEndpoint);
    const secondRun = String((second.output as Record<string, unknown>).run);
    expect(secondRun).not.toBe((first.output as Record<string, unknown>).run);
    const endpoint = await sm.send(new sagemaker.DescribeEndpointCommand({ EndpointName: 'lora-pokemon' }));
    expect(endpoint.EndpointConfigName).toBe(secondRun);
  });

  test('an upload still in progress: the run waits, asks again, and trains once the folder has settled', async () => {
    await pokemon();
    const started = Date.now();
    let calls = 0;
    // The first look is right after the upload; the second, after the Wait, is past settleSeconds.
    const now = () => new Date(started + (++calls === 1 ? 1_000 : (settings.settleSeconds + 5) * 1000));
    const result = await run({ dataset: 'pokemon' }, { now });
    expect(result.status).toBe('SUCCEEDED');
    expect(result.visited.filter((s) => s === STATES.prepare)).toHaveLength(2);
    expect(result.visited.filter((s) => s === STATES.waitForUpload)).toHaveLength(1);
  });

  test('an invalid dataset fails with InvalidDataset, notifies, and makes no SageMaker call', async () => {
    await upload('empty', { 'notes.md': 'no images here', 'dataset.toml': '' });
    const calls: string[] = [];
    const service = sagemakerService((command, answer) => {
      calls.push((command as object).constructor.name);
      return answer();
    });
    const result = await run({ dataset: 'empty' }, { service });
    expect(result).toMatchObject({ status: 'FAILED', error: 'InvalidDataset' });
    expect(result.cause).toMatch(/image/i);
    expect(calls).toEqual([]);
    expect(await list()).toEqual({ jobs: [], models: [], configs: [], endpoints: [] });
    expect(published).toEqual([expect.objectContaining({ Subject: expect.stringContaining('InvalidDataset') })]);
  });

  test('invalid input fails with InvalidInput before any SageMaker call', async () => {
    const result = await run({ datset: 'pokemon' });
    expect(result).toMatchObject({ status: 'FAILED', error: 'InvalidInput' });
    expect(result.cause).toContain('dataset');
    expect(result.visited).not.toContain(STATES.train);
  });

  test('a failed training job: its FailureReason is the cause, and no model is created', async () => {
    await pokemon();
    const reason = 'AlgorithmError: dataset.toml: [[datasets]] resolution must be a multiple of 64';
    const service = patched(sagemaker.DescribeTrainingJobCommand, () => ({ TrainingJobStatus: 'Failed', FailureReason: reason }));
    const result = await run({ dataset: 'pokemon' }, { service });
    expect(result).toMatchObject({ status: 'FAILED', error: 'TrainingFailed' });
    expect(result.cause).toContain(reason);
    expect(result.visited).not.toContain(STATES.createModel);
    expect((await list()).models).toEqual([]);
    expect(published).toHaveLength(1);
  });

  test('ResourceLimitExceeded twice: the training job is retried, then created', async () => {
    await pokemon();
    const limit = taskError('SageMaker.ResourceLimitExceededException', 'The account-level service limit for ml.g4dn.xlarge for spot training job usage is 1 Instances');
    const result = await run({ dataset: 'pokemon' }, { wrap: { [STATES.train]: (h) => failFirst(2, limit, h) } });
    expect(result.status).toBe('SUCCEEDED');
    expect(result.retries[STATES.train]).toBe(2);
  });

  test('an endpoint that fails: the model, config and new endpoint are removed, and the failure notified', async () => {
    await pokemon();
    const reason = 'The primary container for production variant AllTraffic did not pass the ping health check.';
    const service = patched(sagemaker.DescribeEndpointCommand, () => ({ EndpointStatus: 'Failed', FailureReason: reason }));
    const result = await run({ dataset: 'pokemon' }, { service });
    expect(result).toMatchObject({ status: 'FAILED', error: 'EndpointFailed' });
    expect(result.cause).toContain(reason);
    expect(result.visited).toEqual(expect.arrayContaining([STATES.deleteFailedEndpoint, STATES.deleteEndpointConfig, STATES.deleteModel, STATES.notifyFailure]));
    const left = await list();
    expect({ models: left.models, configs: left.configs, endpoints: left.endpoints }).toEqual({ models: [], configs: [], endpoints: [] });
    expect(left.jobs).toHaveLength(1);
    expect(published).toEqual([expect.objectContaining({ Subject: expect.stringContaining('EndpointFailed') })]);
  });

  test('an S3 base model: mounted by channel for the job and the model, both without network, never named as a hyperparameter', async () => {
    await pokemon();
    const createModel: JsonValue[] = [];
    const record = (handler: TaskHandler): TaskHandler => (request) => {
      createModel.push(request);
      return handler(request);
    };
    const result = await run({ dataset: 'pokemon' }, { pipeline: withS3BaseModel, wrap: { [STATES.createModel]: record } });
    expect(result.error).toBeUndefined();
    const runName = String((result.output as Record<string, unknown>).run);
    const job = await sm.send(new sagemaker.DescribeTrainingJobCommand({ TrainingJobName: runName }));
    expect(job.EnableNetworkIsolation).toBe(true);
    expect(job.InputDataConfig?.map((c) => [c.ChannelName, c.DataSource?.S3DataSource?.S3Uri])).toEqual([
      ['dataset', `s3://${settings.datasetsBucket}/${settings.datasetPrefix}pokemon/`],
      ['base_model', S3_BASE_MODEL],
    ]);
    expect(job.HyperParameters).not.toHaveProperty('base_model');
    // moto keeps neither of the model's two fields below, so the request itself is checked (the
    // harness has already held it against the SDK's CreateModel shape).
    expect(createModel).toEqual([
      expect.objectContaining({
        EnableNetworkIsolation: true,
        PrimaryContainer: expect.objectContaining({
          Environment: { MODEL_TYPE: 'sd15', LORA_SCALE: '1' },
          AdditionalModelDataSources: [{ ChannelName: 'base_model', S3DataSource: { S3Uri: S3_BASE_MODEL, S3DataType: 'S3Object', CompressionType: 'None' } }],
        }),
      }),
    ]);
  });

  /** moto's enum of endpoint instance types predates ml.g6e, which SageMaker takes: CreateEndpointConfig is sent to moto with one it knows. */
  const instanceTypeMotoKnows =
    (handler: TaskHandler): TaskHandler =>
    (request) => {
      const { ProductionVariants: variants, ...rest } = request as { ProductionVariants: Array<Record<string, JsonValue>> };
      return handler({ ...rest, ProductionVariants: variants.map((v) => ({ ...v, InstanceType: 'ml.g4dn.xlarge' })) } as JsonValue);
    };

  test('a FLUX.1-dev run: trained and served on the FLUX.1 instances, the token secret named to the job and the model, captions asked back to the dataset folder', async () => {
    await pokemon();
    const requests: Record<string, JsonValue[]> = {};
    const record =
      (state: string) =>
      (handler: TaskHandler): TaskHandler =>
      (request) => {
        (requests[state] ??= []).push(request);
        return handler(request);
      };
    const wrap = Object.fromEntries([STATES.train, STATES.createModel, STATES.publishSamples].map((state) => [state, record(state)]));
    wrap[STATES.createEndpointConfig] = (handler) => record(STATES.createEndpointConfig)(instanceTypeMotoKnows(handler));
    const result = await run({ dataset: 'pokemon' }, { pipeline: fluxDev, wrap });
    expect([result.error, result.cause]).toEqual([undefined, undefined]);
    expect(result.status).toBe('SUCCEEDED');
    const runName = String((result.output as Record<string, unknown>).run);

    const job = await sm.send(new sagemaker.DescribeTrainingJobCommand({ TrainingJobName: runName }));
    expect(job.ResourceConfig).toEqual({ InstanceType: 'ml.g5.2xlarge', InstanceCount: 1, VolumeSizeInGB: 150 });
    expect(job.HyperParameters).toMatchObject({ model_type: 'flux1', base_model: FLUX_DEV });
    expect(JSON.stringify(job.HyperParameters)).not.toContain('hf/token');
    // The secret's id, never the token, in the job's environment (checked on the request: moto may not keep it),
    // with Prepare's region, where boto3 finds a secret given by name.
    const token = { HF_TOKEN_SECRET_ID: 'hf/token', AWS_DEFAULT_REGION: 'us-east-1' };
    expect(requests[STATES.train]).toEqual([expect.objectContaining({ Environment: token, EnableNetworkIsolation: false })]);
    expect(requests[STATES.createModel]).toEqual([
      expect.objectContaining({
        PrimaryContainer: expect.objectContaining({ Environment: { MODEL_TYPE: 'flux1', LORA_SCALE: '1', BASE_MODEL_ID: FLUX_DEV, ...token } }),
      }),
    ]);
    expect(requests[STATES.createEndpointConfig]).toEqual([expect.objectContaining({ ProductionVariants: [expect.objectContaining({ InstanceType: 'ml.g6e.xlarge' })] })]);
    // The samples function is told where the dataset folder is, to write generated captions back.
    expect(requests[STATES.publishSamples]).toEqual([
      { trainingJobName: runName, datasetFolder: { bucket: fluxDev.settings.datasetsBucket, prefix: `${fluxDev.settings.datasetPrefix}pokemon/` } },
    ]);
  });

  test('a FLUX.1 run on a folder with an uncaptioned image: the caption the job generated is written next to it, one the user uploaded meanwhile is kept', async () => {
    await pokemon();
    await upload('pokemon', { '0003.png': PNG, '0004.png': PNG });
    // The job captioned 0003 and 0004 (caption_missing, on by default for flux1); the user uploaded 0004.txt meanwhile.
    const captions = { '0003.txt': 'a blue pokemon', '0004.txt': 'a yellow pokemon' };
    const rendersCaptions = (handler: TaskHandler): TaskHandler => async (request) => {
      const job = (await handler(request)) as { TrainingJobName: string };
      const entries = Object.entries(captions).map(([name, body]) => ({ path: `captions/${name}`, body: Buffer.from(body) }));
      const archive = gzipSync(tarArchive([{ path: 'captions/', type: '5' }, ...entries]));
      await s3.send(new PutObjectCommand({ Bucket: artifactsBucket, Key: `models/${job.TrainingJobName}/output/output.tar.gz`, Body: archive }));
      await upload('pokemon', { '0004.txt': 'my own caption' });
      return job as never;
    };
    const result = await run({ dataset: 'pokemon' }, { pipeline: fluxDev, wrap: { [STATES.train]: rendersCaptions, [STATES.createEndpointConfig]: instanceTypeMotoKnows } });
    expect([result.error, result.cause]).toEqual([undefined, undefined]);
    const text = async (name: string) =>
      (await s3.send(new GetObjectCommand({ Bucket: fluxDev.settings.datasetsBucket, Key: `${fluxDev.settings.datasetPrefix}pokemon/${name}` }))).Body!.transformToString();
    expect(await text('0003.txt')).toBe('a blue pokemon');
    expect(await text('0004.txt')).toBe('my own caption');
    expect(result.output).toMatchObject({ captions: { written: 1, kept: 1 } });
  });

  test('a FLUX.1 run on an instance too small for it is refused before any SageMaker call, saying what fits', async () => {
    await pokemon();
    const result = await run({ dataset: 'pokemon', training: { instanceType: 'ml.g4dn.xlarge' } }, { pipeline: fluxDev });
    expect(result.status).toBe('FAILED');
    expect(result.error).toBe('InvalidInput');
    expect(result.cause).toMatch(/ml\.g4dn\.xlarge cannot train FLUX\.1: .*; use ml\.g5\.2xlarge/);
    expect((await list()).jobs).toEqual([]);
  });

  /** An error as the SDK raises it for one SageMaker's API model does not list (throttling, validation). */
  const unlisted = (name: string, message: string) => new sagemaker.SageMakerServiceException({ name, $fault: 'client', $metadata: {}, message });

  test('a throttled endpoint poll is retried under the name Step Functions gives it, and the run succeeds', async () => {
    await pokemon();
    let throttled = 0;
    const service = sagemakerService(async (command, answer) => {
      if (command instanceof sagemaker.DescribeEndpointCommand && throttled === 0 && (await list()).endpoints.length > 0) {
        throttled += 1;
        throw unlisted('ThrottlingException', 'Rate exceeded');
      }
      return answer();
    });
    const result = await run({ dataset: 'pokemon' }, { service });
    expect(throttled).toBe(1);
    expect(result.status).toBe('SUCCEEDED');
    expect(result.retries[STATES.describeEndpoint]).toBe(1);
  });

  test('an endpoint config not yet visible to CreateEndpoint: the create is retried', async () => {
    await pokemon();
    let refused = 0;
    const service = sagemakerService(async (command, answer) => {
      if (command instanceof sagemaker.CreateEndpointCommand && refused === 0) {
        refused += 1;
        throw unlisted('ValidationException', 'Could not find endpoint configuration "lora-pokemon-…".');
      }
      return answer();
    });
    const result = await run({ dataset: 'pokemon' }, { service });
    expect(result.status).toBe('SUCCEEDED');
    expect(result.retries[STATES.createEndpoint]).toBe(1);
  });

  test('a create whose answer is lost: the retry is refused as a duplicate, and nothing the endpoint is coming up on is deleted', async () => {
    await pokemon();
    let answers = 0;
    const service = sagemakerService(async (command, answer) => {
      const result = await answer();
      if (command instanceof sagemaker.CreateEndpointCommand && answers++ === 0) throw unlisted('InternalFailure', 'We encountered an internal error. Please try again.');
      return result;
    });
    const result = await run({ dataset: 'pokemon' }, { service });
    expect(result).toMatchObject({ status: 'FAILED', error: 'EndpointFailed' });
    expect(result.visited).toContain(STATES.checkEndpoint);
    expect(result.cause).toContain("Yet the endpoint is on this run's configuration");
    expect(result.visited).not.toContain(STATES.deleteModel);
    const left = await list();
    expect([left.models.length, left.configs.length, left.endpoints.length]).toEqual([1, 1, 1]);
  });

  test('a failed endpoint left from before (a timed-out run): it is deleted and created again on this run, not updated', async () => {
    await pokemon();
    const first = await run({ dataset: 'pokemon' }, { name: 'first' });
    expect(first.status).toBe('SUCCEEDED');
    // The endpoint reads as Failed until it is deleted; a create refuses the name while it is going.
    let deleted = false;
    let refusedWhileDeleting = 0;
    const service = sagemakerService(async (command, answer) => {
      if (command instanceof sagemaker.CreateEndpointCommand && refusedWhileDeleting === 0) {
        refusedWhileDeleting += 1;
        throw unlisted('ValidationException', 'Cannot create already existing endpoint "lora-pokemon".');
      }
      const answered = await answer();
      if (command instanceof sagemaker.DeleteEndpointCommand) deleted = true;
      return command instanceof sagemaker.DescribeEndpointCommand && !deleted ? { ...answered, EndpointStatus: 'Failed', FailureReason: 'An earlier deployment failed.' } : answered;
    });
    const second = await run({ dataset: 'pokemon' }, { name: 'second', service });
    expect(second.error).toBeUndefined();
    expect(second.status).toBe('SUCCEEDED');
    expect(second.visited).toEqual(expect.arrayContaining([STATES.deleteUnusableEndpoint, STATES.replaceEndpoint]));
    expect(second.visited).not.toContain(STATES.updateEndpoint);
    expect(second.retries[STATES.replaceEndpoint]).toBe(1);
    const endpoint = await sm.send(new sagemaker.DescribeEndpointCommand({ EndpointName: 'lora-pokemon' }));
    expect(endpoint.EndpointConfigName).toBe((second.output as Record<string, unknown>).run);
  });

  test('an update that SageMaker rolls back: EndpointFailed, this run\'s model and config removed, the endpoint kept on the previous run', async () => {
    await pokemon();
    const first = await run({ dataset: 'pokemon' }, { name: 'first' });
    const previous = String((first.output as Record<string, unknown>).run);
    // The update is accepted, then the endpoint comes back in service on its previous config.
    const service = patched(sagemaker.DescribeEndpointCommand, () => ({
      EndpointStatus: 'InService',
      EndpointConfigName: previous,
      FailureReason: 'Insufficient capacity for ml.g4dn.xlarge.',
    }));
    published = [];
    const second = await run({ dataset: 'pokemon' }, { name: 'second', service });
    expect(second).toMatchObject({ status: 'FAILED', error: 'EndpointFailed' });
    expect(second.cause).toContain('rolled back');
    expect(second.visited).not.toContain(STATES.deleteFailedEndpoint);
    const left = await list();
    expect(left.models.map((m) => m.ModelName)).toEqual([previous]);
    expect(left.configs.map((c) => c.EndpointConfigName)).toEqual([previous]);
    expect(left.endpoints.map((e) => e.EndpointName)).toEqual(['lora-pokemon']);
    expect(published).toHaveLength(1);
  });

  test('a Report function that fails still ends the run as failed with the error caught, and notifies', async () => {
    await upload('empty', { 'notes.md': 'no images here', 'dataset.toml': '' });
    const broken: (handler: TaskHandler) => TaskHandler = () => () => {
      throw taskError('Lambda.Unknown', 'The function timed out');
    };
    const result = await run({ dataset: 'empty' }, { wrap: { [STATES.reportFailure]: broken } });
    expect(result).toMatchObject({ status: 'FAILED', error: 'InvalidDataset' });
    expect(result.visited).toContain(STATES.reportFailurePlainly);
    expect(published).toEqual([expect.objectContaining({ Subject: 'A LoRA run failed (its report could not be written)' })]);
  });

  test('a Report function that fails after a successful deployment: the run still succeeds, with the summary the state holds', async () => {
    await pokemon();
    const broken: (handler: TaskHandler) => TaskHandler = () => () => {
      throw taskError('Lambda.Unknown', 'The function timed out');
    };
    const result = await run({ dataset: 'pokemon' }, { wrap: { [STATES.reportSuccess]: broken } });
    expect(result.status).toBe('SUCCEEDED');
    const output = result.output as Record<string, unknown>;
    expect(output).toEqual({
      run: expect.stringMatching(/^lora-pokemon-/),
      dataset: 'pokemon',
      trainingJobName: output.run,
      modelArtifact: expect.stringMatching(/^s3:\/\//),
      endpointName: 'lora-pokemon',
    });
    expect(published).toEqual([expect.objectContaining({ Subject: `LoRA run ${String(output.run)} is in service` })]);
  });

  test('an endpoint that never comes up: polling stops at its cap, and nothing is deleted', async () => {
    await pokemon();
    const service = patched(sagemaker.DescribeEndpointCommand, () => ({ EndpointStatus: 'Creating' }));
    const result = await run({ dataset: 'pokemon' }, { service });
    expect(result).toMatchObject({ status: 'FAILED', error: 'EndpointTimeout' });
    expect(result.visited.filter((s) => s === STATES.describeEndpoint)).toHaveLength(ENDPOINT_POLL_LIMIT);
    expect(result.visited).not.toContain(STATES.deleteModel);
    expect((await list()).endpoints).toHaveLength(1);
  });
  describe('in shared mode: a run registers its LoRA, tries it on the shared endpoint, and makes it current', () => {
    const endpointName = 'lora-shared-sd15';
    /** What the shared endpoint was asked, and the version's registry status when it was. */
    let asked: Array<{ request: Record<string, unknown>; endpoint: string; component?: string; status?: string }>;

    /** A version item, or the name's head item (version 0), as the registry holds it. */
    const item = async (name: string, version: number) =>
      (await DynamoDBDocumentClient.from(dynamodb).send(new GetCommand({ TableName: registryTable, Key: { name, version }, ConsistentRead: true }))).Item;

    /**
     * The shared server's answer: with the version named, it used it, and only it, and its image is
     * the LoRA's (`loraLevel`); without a LoRA, it used none, and its image is the base model's.
     */
    const servedAt =
      (loraLevel: number) =>
      (request: Record<string, unknown>): Record<string, unknown> => {
        if (request.lora === undefined) return { loras: [], images: [generated(BASE_LEVEL)] };
        const [name, version] = String(request.lora).split('@');
        return { loras: [{ name, version: Number(version), scale: 1, sha256: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' }], images: [generated(loraLevel)] };
      };
    const served = servedAt(LORA_LEVEL);

    /** The shared endpoint answers with `answer` (or throws what it returns as an Error). */
    function sharedEndpoint(answer: (request: Record<string, unknown>) => Record<string, unknown> | Error = served) {
      runtime.on(InvokeEndpointCommand).callsFake(async (input: { EndpointName: string; InferenceComponentName?: string; Body: Uint8Array }) => {
        const request = JSON.parse(Buffer.from(input.Body).toString('utf8')) as Record<string, unknown>;
        const [name, version] = String(request.lora).split('@');
        const status = request.lora === undefined ? undefined : ((await item(name, Number(version)))?.status as string | undefined);
        asked.push({ request, endpoint: input.EndpointName, component: input.InferenceComponentName, status });
        const answered = answer(request);
        if (answered instanceof Error) throw answered;
        return { Body: Buffer.from(JSON.stringify(answered)), ContentType: 'application/json' };
      });
    }

    /**
     * Train LoRA, and then what the training container saved to /opt/ml/model, packed as SageMaker
     * does into the model.tar.gz its ModelArtifacts names (moto names it but writes nothing):
     * `pokemon.safetensors` beside `training-metadata.json`, or the metadata alone.
     */
    const savesLora =
      (file: Buffer | null = safetensorsFile(sd15Lora())): ((handler: TaskHandler) => TaskHandler) =>
      (handler) =>
      async (request) => {
        const job = (await handler(request)) as { ModelArtifacts: { S3ModelArtifacts: string } };
        const [, bucket, key] = /^s3:\/\/([^/]+)\/(.*)$/.exec(job.ModelArtifacts.S3ModelArtifacts)!;
        const metadataOnly = gzipSync(tarArchive([{ path: 'training-metadata.json', body: Buffer.from('{}') }]));
        await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: file ? modelTarGz(file) : metadataOnly }));
        return job as never;
      };

    const runShared = (options: RunOptions = {}) => run({ dataset: 'pokemon' }, { pipeline: shared, ...options, wrap: { [STATES.train]: savesLora(), ...options.wrap } });

    beforeEach(() => {
      asked = [];
    });

    test('the version is registered pending, tried by name@version, then made current; no SageMaker model or endpoint is created', async () => {
      await pokemon();
      sharedEndpoint();
      const result = await runShared();
      expect(result.error).toBeUndefined();
      expect(result.status).toBe('SUCCEEDED');
      expect(result.visited).toEqual(expect.arrayContaining([STATES.servingMode, STATES.registerLora, STATES.tryLora, STATES.makeLoraCurrent, STATES.reportSuccess]));
      for (const state of [STATES.createModel, STATES.createEndpointConfig, STATES.findEndpoint, STATES.createEndpoint, STATES.updateEndpoint]) expect(result.visited).not.toContain(state);
      const left = await list();
      expect({ models: left.models, configs: left.configs, endpoints: left.endpoints }).toEqual({ models: [], configs: [], endpoints: [] });

      const runName = String((result.output as Record<string, unknown>).run);
      // The check named this version, on the shared endpoint's component, while it was still pending;
      // then the smoke test's same request without a LoRA.
      expect(asked).toEqual([
        { request: expect.objectContaining({ lora: 'pokemon@1', seed: 1234, output_format: 'png' }), endpoint: endpointName, component: endpointName, status: 'pending' },
        { request: expect.not.objectContaining({ lora: expect.anything() }), endpoint: endpointName, component: endpointName, status: undefined },
      ]);
      expect(asked[1].request).toEqual({ ...asked[0].request, lora: undefined });
      const version = await item('pokemon', 1);
      expect(version).toMatchObject({ status: 'ready', modelType: 'sd15', run: runName, trainingJob: runName, s3Uri: `s3://${artifactsBucket}/loras/pokemon/1.safetensors` });
      // The copy the server reads is the trained file, byte for byte, as the item's hash says.
      const copy = await s3.send(new GetObjectCommand({ Bucket: artifactsBucket, Key: 'loras/pokemon/1.safetensors' }));
      const bytes = Buffer.from(await copy.Body!.transformToByteArray());
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(version?.sha256);
      expect(bytes).toEqual(safetensorsFile(sd15Lora()));
      expect(await item('pokemon', 0)).toMatchObject({ latest: 1, current: 1 });
      expect(result.output).toMatchObject({ servingMode: 'shared', loraName: 'pokemon', loraVersion: 1, inferenceComponentName: endpointName, madeCurrent: true, endpointName });
      expect(String((result.output as Record<string, unknown>).invokeCommand)).toMatch(/--endpoint-name lora-shared-sd15 .*--inference-component-name lora-shared-sd15.*pokemon@1/);
      expect(published).toHaveLength(1);
    });

    test('a second run of the name registers version 2, which becomes current', async () => {
      await pokemon();
      sharedEndpoint();
      const first = await runShared({ name: 'first' });
      const second = await runShared({ name: 'second' });
      expect([first.status, second.status]).toEqual(['SUCCEEDED', 'SUCCEEDED']);
      expect(asked.map((a) => a.request.lora)).toEqual(['pokemon@1', undefined, 'pokemon@2', undefined]);
      expect(await item('pokemon', 0)).toMatchObject({ latest: 2, current: 2 });
      expect(await item('pokemon', 1)).toMatchObject({ status: 'ready' });
    });

    test('a new version with no effect: SmokeTestFailed, never retried; it is marked failed, the previous version stays current, and the images are kept', async () => {
      await pokemon();
      sharedEndpoint();
      const first = await runShared({ name: 'first' });
      expect(first.status).toBe('SUCCEEDED');
      sharedEndpoint(servedAt(BASE_LEVEL));
      published = [];
      const second = await runShared({ name: 'second' });
      expect(second).toMatchObject({ status: 'FAILED', error: 'SmokeTestFailed' });
      expect(second.cause).toContain('The LoRA had no effect: LoRA pokemon@2 on the shared endpoint lora-shared-sd15');
      expect(second.cause).toContain("pokemon@2 will be marked failed by the clean-up that follows this report and was not made current; the name's current version is unchanged.");
      expect(second.retries[STATES.tryLora]).toBeUndefined();
      expect(second.visited).toEqual(expect.arrayContaining([STATES.smokeTestFailed, STATES.reportFailure, STATES.rejectLora, STATES.notifyFailure]));
      expect(second.visited).not.toContain(STATES.loraCheckFailed);
      expect(second.visited).not.toContain(STATES.makeLoraCurrent);
      expect(await item('pokemon', 2)).toMatchObject({ status: 'failed', failure: expect.stringContaining('The LoRA had no effect') });
      expect(await item('pokemon', 1)).toMatchObject({ status: 'ready' });
      expect(await item('pokemon', 0)).toMatchObject({ latest: 2, current: 1 });
      const job = (await list()).jobs.map((j) => j.TrainingJobName!).find((name) => name !== String((first.output as Record<string, unknown>).trainingJobName))!;
      expect(await keysUnder(`models/${job}/smoke/`)).toEqual(['side-by-side.png', 'with-lora.png', 'without-lora.png']);
      expect(published).toEqual([expect.objectContaining({ Subject: expect.stringContaining('SmokeTestFailed') })]);
    });

    test('a check the endpoint fails: LoraCheckFailed with what it answered, the version marked failed and never current', async () => {
      await pokemon();
      const answer = JSON.stringify({ error: 'LoRA pokemon@1: sha256 mismatch', field: 'lora' });
      sharedEndpoint(() => new ModelError({ message: 'Received client error (400)', $metadata: {}, OriginalStatusCode: 400, OriginalMessage: answer }));
      const result = await runShared();
      expect(result).toMatchObject({ status: 'FAILED', error: 'LoraCheckFailed' });
      expect(result.cause).toContain('sha256 mismatch');
      expect(result.visited).toEqual(expect.arrayContaining([STATES.loraCheckFailed, STATES.reportFailure, STATES.rejectLora, STATES.notifyFailure]));
      expect(result.visited).not.toContain(STATES.makeLoraCurrent);
      expect(await item('pokemon', 1)).toMatchObject({ status: 'failed', failure: expect.stringContaining('sha256 mismatch') });
      expect(await item('pokemon', 0)).not.toHaveProperty('current');
      expect(published).toEqual([expect.objectContaining({ Subject: expect.stringContaining('LoraCheckFailed') })]);
    });

    test.each([
      ['busy (503, at maxInstances under traffic)', 503, 8],
      ['misconfigured (500: the registry or S3 refused)', 500, 4],
    ])('a shared endpoint %s: retried, then SharedEndpointUnavailable; the version stays pending, never marked failed', async (_, status, retries) => {
      await pokemon();
      const answer = JSON.stringify({ error: 'the registry is throttling; retry', field: 'lora' });
      sharedEndpoint(() => new ModelError({ message: `Received server error (${status})`, $metadata: {}, OriginalStatusCode: status, OriginalMessage: answer }));
      const result = await runShared();
      expect(result).toMatchObject({ status: 'FAILED', error: 'SharedEndpointUnavailable' });
      expect(result.retries[STATES.tryLora]).toBe(retries);
      expect(result.cause).toContain('pokemon@1 stays pending');
      expect(result.cause).toContain('{"action":"promote","name":"pokemon","version":1}');
      expect(result.visited).not.toContain(STATES.rejectLora);
      expect(result.visited).not.toContain(STATES.makeLoraCurrent);
      expect(await item('pokemon', 1)).toMatchObject({ status: 'pending' });
      expect(await item('pokemon', 0)).not.toHaveProperty('current');
      // An operator promotes it once the endpoint serves: the registry function's promote action.
      const registry = createRegistryHandler({ s3, table: new RegistryTable(DynamoDBDocumentClient.from(dynamodb), registryTable), storage: { bucket: artifactsBucket, modelsPrefix, lorasPrefix } });
      expect(await registry({ action: 'promote', name: 'pokemon', version: 1 })).toEqual({ name: 'pokemon', version: 1, current: true });
    });

    test('a shared endpoint scaled to zero: the check is retried while it warms, every minute, then passes', async () => {
      await pokemon();
      let cold = 2;
      sharedEndpoint((request) => (cold-- > 0 ? new ModelNotReadyException({ message: 'Inference component has no capacity to process this request.', $metadata: {} }) : served(request)));
      const result = await runShared();
      expect(result.status).toBe('SUCCEEDED');
      expect(result.retries[STATES.tryLora]).toBe(2);
      const retrier = (shared.definition.States[STATES.tryLora] as any).Retry.find((r: { ErrorEquals: string[] }) => r.ErrorEquals.includes('SharedEndpointWarming'));
      expect(retrier).toMatchObject({ IntervalSeconds: WARMING_RETRY.interval.toSeconds(), MaxAttempts: WARMING_RETRY.maxAttempts, BackoffRate: 1 });
      expect(await item('pokemon', 0)).toMatchObject({ current: 1 });
    });

    test('a training output without a LoRA file: registration fails, nothing is registered or tried', async () => {
      await pokemon();
      sharedEndpoint();
      const result = await runShared({ wrap: { [STATES.train]: savesLora(null) } });
      expect(result).toMatchObject({ status: 'FAILED', error: 'LoraFileInvalid' });
      expect(result.cause).toContain('.safetensors');
      expect(result.visited).toContain(STATES.registrationFailed);
      expect(result.visited).not.toContain(STATES.tryLora);
      expect(result.visited).not.toContain(STATES.rejectLora);
      expect(asked).toEqual([]);
      expect(await item('pokemon', 1)).toBeUndefined();
    });

    test('a run on another base model than the shared endpoint\'s gets an endpoint of its own, and its output says why', async () => {
      await pokemon();
      // Its own endpoint answers the smoke test (the default, dedicated server), never the shared one.
      const result = await run({ dataset: 'pokemon', baseModel: 'runwayml/stable-diffusion-v1-5' }, { pipeline: shared });
      expect(result.error).toBeUndefined();
      expect(runtime.commandCalls(InvokeEndpointCommand).map((c) => [c.args[0].input.EndpointName, c.args[0].input.InferenceComponentName])).toEqual([
        ['lora-pokemon', undefined],
        ['lora-pokemon', undefined],
      ]);
      expect(result.visited).toEqual(expect.arrayContaining([STATES.servingMode, STATES.createModel, STATES.createEndpoint]));
      expect(result.visited).not.toContain(STATES.registerLora);
      expect(result.output).toMatchObject({ servingMode: 'dedicated', endpointName: 'lora-pokemon', dedicatedBecause: expect.stringContaining('baseModel') });
      expect(asked).toEqual([]);
      expect(await item('pokemon', 0)).toBeUndefined();
    });
  });
});
