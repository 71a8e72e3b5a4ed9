import {
  CreateEndpointCommand,
  CreateEndpointConfigCommand,
  CreateModelCommand,
  DescribeEndpointCommand,
  DescribeEndpointConfigCommand,
  DescribeModelCommand,
  SageMakerClient,
} from '@aws-sdk/client-sagemaker';
import { type ConfigResource, type EndpointResource, type Inventory, planCleanup, type Resource, runOrder } from '../../cli/cleanup-plan';
import { motoAvailable, type MotoServer, startMoto } from '../support/moto';
import { capturedIo, cliEnv, runCli } from './read-side-support';

const STACK = 'SageMakerLoraPipeline';
const run = (day: string, hash = 'abc123') => `lora-pokemon-202501${day}120000-${hash}`;

describe('the cleanup plan', () => {
  const model = (name: string): Resource => ({ kind: 'model', name, run: name });
  const config = (name: string, models = [name]): ConfigResource => ({ kind: 'endpoint config', name, run: name, modelNames: models });
  const endpoint = (name: string, configName: string, status = 'InService', extra: Partial<EndpointResource> = {}): EndpointResource => ({
    kind: 'endpoint',
    name,
    run: run('01'),
    status,
    configName,
    ...extra,
  });
  const names = (decisions: ReadonlyArray<{ resource: Resource }>) => decisions.map(({ resource }) => `${resource.kind}:${resource.name}`);
  const runs = ['01', '02', '03'].map((day) => run(day));
  const base: Inventory = { endpoints: [endpoint('lora-pokemon', runs[2])], configs: runs.map((name) => config(name)), models: runs.map(model) };

  test("keeps the serving endpoint, its current config and that config's model; deletes older runs' configs and models, endpoints first", () => {
    const plan = planCleanup(base);
    expect(plan.serving?.name).toBe('lora-pokemon');
    expect(names(plan.remove)).toEqual([`endpoint config:${runs[0]}`, `endpoint config:${runs[1]}`, `model:${runs[0]}`, `model:${runs[1]}`]);
    expect(names(plan.keep)).toEqual(['endpoint:lora-pokemon', `endpoint config:${runs[2]}`, `model:${runs[2]}`]);
  });

  test('the serving config is kept even when it is the OLDEST run (a newer run failed to deploy): newer ones are kept too', () => {
    const plan = planCleanup({ ...base, endpoints: [endpoint('lora-pokemon', runs[0])] });
    expect(names(plan.remove)).toEqual([]);
    expect(plan.keep.find(({ resource }) => resource.name === runs[1])?.reason).toBe('newer than the serving run: a run may be deploying it');
  });

  test('an endpoint being updated is kept with its current and pending configs (and their models), whatever their age', () => {
    const updating = endpoint('lora-pokemon', runs[0], 'Updating', { pendingConfigName: runs[1] });
    const plan = planCleanup({ ...base, endpoints: [endpoint('lora-pokemon-new', runs[2]), updating] });
    expect(plan.serving?.name).toBe('lora-pokemon-new');
    expect(names(plan.remove)).toEqual([]);
    expect(plan.keep.find(({ resource }) => resource.name === 'lora-pokemon')?.reason).toBe('Updating: a change is under way');
    // Settled, the same endpoint is superseded: the rule is the status, not the name.
    const settled = planCleanup({ ...base, endpoints: [endpoint('lora-pokemon-new', runs[2]), { ...updating, status: 'InService', pendingConfigName: undefined }] });
    expect(names(settled.remove)).toEqual(['endpoint:lora-pokemon', `endpoint config:${runs[0]}`, `endpoint config:${runs[1]}`, `model:${runs[0]}`, `model:${runs[1]}`]);
  });

  test('of two endpoints, the one on the newest run serves; an endpoint in service wins over a failed one on a newer run', () => {
    const plan = planCleanup({ ...base, endpoints: [endpoint('old-name', runs[0]), endpoint('lora-pokemon', runs[2])] });
    expect(plan.serving?.name).toBe('lora-pokemon');
    expect(names(plan.remove)[0]).toBe('endpoint:old-name');
    const failedNewer = planCleanup({ ...base, endpoints: [endpoint('old-name', runs[1]), endpoint('lora-pokemon', runs[2], 'Failed')] });
    expect(failedNewer.serving?.name).toBe('old-name');
    expect(names(failedNewer.remove)).toContain('endpoint:lora-pokemon');
    expect(names(failedNewer.keep)).toEqual(expect.arrayContaining([`endpoint config:${runs[1]}`, `model:${runs[1]}`, `endpoint config:${runs[2]}`]));
  });

  test('no endpoint: the newest run is kept to deploy again, the rest deleted', () => {
    const plan = planCleanup({ ...base, endpoints: [] });
    expect(plan.serving).toBeUndefined();
    expect(names(plan.keep)).toEqual([`endpoint config:${runs[2]}`, `model:${runs[2]}`]);
    expect(names(plan.remove)).toHaveLength(4);
  });

  test('the shared endpoint is never a candidate, even tagged with the dataset (negative control: another name is)', () => {
    const shared = endpoint('lora-shared-sd15', runs[0]);
    const plan = planCleanup({ ...base, endpoints: [shared, endpoint('lora-pokemon', runs[2])] }, 'lora-shared-sd15');
    expect(names(plan.remove)).not.toContain('endpoint:lora-shared-sd15');
    expect(plan.keep.find(({ resource }) => resource.name === 'lora-shared-sd15')?.reason).toBe('the shared endpoint: never cleaned up');
    // Nor the config it is on, nor that config's model.
    expect(names(plan.remove)).not.toContain(`endpoint config:${runs[0]}`);
    expect(names(plan.remove)).not.toContain(`model:${runs[0]}`);
    expect(names(planCleanup({ ...base, endpoints: [shared, endpoint('lora-pokemon', runs[2])] }, 'other-shared').remove)).toContain('endpoint:lora-shared-sd15');
  });

  test("a config another dataset's endpoint is on (two folders with one train.json name) is kept with its model; negative control: without that endpoint it goes", () => {
    // pokemon-v2's endpoint (tagged by its first run) now serves pokemon's run 01; pokemon has no endpoint of its own.
    const other = { ...endpoint('lora-pokemon', runs[1]), name: 'lora-pokemon-shared-name' };
    const plan = planCleanup({ ...base, endpoints: [], otherEndpoints: [other] });
    expect(names(plan.keep)).toEqual(expect.arrayContaining([`endpoint config:${runs[1]}`, `model:${runs[1]}`]));
    expect(plan.keep.find(({ resource }) => resource.name === runs[1])?.reason).toBe("the current config of lora-pokemon-shared-name (another dataset's endpoint)");
    expect(names(plan.remove)).toEqual([`endpoint config:${runs[0]}`, `model:${runs[0]}`]);
    expect(names(planCleanup({ ...base, endpoints: [], otherEndpoints: [] }).remove)).toContain(`endpoint config:${runs[1]}`);
  });

  test("runs are ordered by the start time in their name, else by creation time", () => {
    expect(runOrder({ run: run('03') })).toBeGreaterThan(runOrder({ run: run('02', 'fff999') }));
    expect(runOrder({ createdMs: Date.parse('2025-01-02T00:00:00Z') })).toBe(20250102000000);
    expect(runOrder(undefined)).toBe(0);
  });
});

const describeWithMoto = motoAvailable() ? describe : describe.skip;

describeWithMoto('lora-pipeline cleanup, on SageMaker in moto', () => {
  let moto: MotoServer;
  let sagemaker: SageMakerClient;
  let env: NodeJS.ProcessEnv;
  const tags = (dataset: string, runName: string, pipeline = STACK) => [
    { Key: 'pipeline', Value: pipeline },
    { Key: 'dataset', Value: dataset },
    { Key: 'run', Value: runName },
  ];

  beforeAll(async () => {
    moto = await startMoto();
    sagemaker = new SageMakerClient(moto.clientConfig);
    env = cliEnv({ 'shared-endpoint': 'lora-shared-sd15', 'name-prefix': 'lora' }, { LORA_PIPELINE_ENDPOINT_URL: moto.endpoint, AWS_REGION: moto.clientConfig.region });
  });
  afterAll(async () => {
    sagemaker?.destroy();
    await moto?.stop();
  });

  async function modelAndConfig(name: string, tagList: Array<{ Key: string; Value: string }>): Promise<void> {
    await sagemaker.send(
      new CreateModelCommand({ ModelName: name, ExecutionRoleArn: 'arn:aws:iam::123456789012:role/serving', PrimaryContainer: { Image: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/serve:1' }, Tags: tagList }),
    );
    await sagemaker.send(
      new CreateEndpointConfigCommand({
        EndpointConfigName: name,
        ProductionVariants: [{ VariantName: 'AllTraffic', ModelName: name, InstanceType: 'ml.g4dn.xlarge', InitialInstanceCount: 1 }],
        Tags: tagList,
      }),
    );
  }

  /**
   * pokemon: runs 0-4; the endpoint lora-pokemon (created by run 1) now on run 3's config; run 4
   * deploying; lora-pokemon-old (a run's endpoint.name) on run 0. Beside them: another dataset,
   * another stack's pokemon, an untagged model, and the shared endpoint wrongly tagged pokemon.
   */
  beforeEach(async () => {
    await moto.reset();
    for (const day of ['00', '01', '02', '03', '04']) await modelAndConfig(run(day), tags('pokemon', run(day)));
    await sagemaker.send(new CreateEndpointCommand({ EndpointName: 'lora-pokemon', EndpointConfigName: run('03'), Tags: tags('pokemon', run('01')) }));
    await sagemaker.send(new CreateEndpointCommand({ EndpointName: 'lora-pokemon-old', EndpointConfigName: run('00'), Tags: tags('pokemon', run('00')) }));
    await modelAndConfig('lora-watercolor-20250101120000-aaa111', tags('watercolor', 'lora-watercolor-20250101120000-aaa111'));
    await modelAndConfig('lora-pokemon-20241101120000-other1', tags('pokemon', 'lora-pokemon-20241101120000-other1', 'OtherStack'));
    await sagemaker.send(new CreateModelCommand({ ModelName: 'lora-pokemon-handmade', ExecutionRoleArn: 'arn:aws:iam::123456789012:role/serving', PrimaryContainer: { Image: 'x' } }));
    await modelAndConfig('lora-shared-sd15', tags('pokemon', run('00')));
    await sagemaker.send(new CreateEndpointCommand({ EndpointName: 'lora-shared-sd15', EndpointConfigName: 'lora-shared-sd15', Tags: tags('pokemon', run('00')) }));
  });

  async function exists(kind: 'endpoint' | 'config' | 'model', name: string): Promise<boolean> {
    try {
      if (kind === 'endpoint') await sagemaker.send(new DescribeEndpointCommand({ EndpointName: name }));
      else if (kind === 'config') await sagemaker.send(new DescribeEndpointConfigCommand({ EndpointConfigName: name }));
      else await sagemaker.send(new DescribeModelCommand({ ModelName: name }));
      return true;
    } catch {
      return false;
    }
  }

  const SUPERSEDED: Array<['endpoint' | 'config' | 'model', string]> = [
    ['endpoint', 'lora-pokemon-old'],
    ...(['00', '01', '02'] as const).flatMap((day): Array<['config' | 'model', string]> => [['config', run(day)], ['model', run(day)]]),
  ];
  const KEPT: Array<['endpoint' | 'config' | 'model', string]> = [
    // The serving endpoint, its current config and model: the negative control of every deletion.
    ['endpoint', 'lora-pokemon'],
    ['config', run('03')],
    ['model', run('03')],
    // A newer run, maybe deploying.
    ['config', run('04')],
    ['model', run('04')],
    // Not this dataset's, not this stack's, not tagged, or the shared endpoint.
    ['config', 'lora-watercolor-20250101120000-aaa111'],
    ['model', 'lora-watercolor-20250101120000-aaa111'],
    ['config', 'lora-pokemon-20241101120000-other1'],
    ['model', 'lora-pokemon-20241101120000-other1'],
    ['model', 'lora-pokemon-handmade'],
    // The shared endpoint, tagged with the dataset by mistake, with its config and model.
    ['endpoint', 'lora-shared-sd15'],
    ['config', 'lora-shared-sd15'],
    ['model', 'lora-shared-sd15'],
  ];
  const state = async (list: typeof KEPT) => Promise.all(list.map(async ([kind, name]) => [kind, name, await exists(kind, name)]));

  test('lists what it deletes and keeps, asks, and on "y" deletes only the superseded resources', async () => {
    const io = capturedIo(undefined, ['y']);
    const { code } = await runCli(['cleanup', 'pokemon'], env, io);
    expect(code).toBe(0);
    expect(io.questions).toEqual(['Delete these 7 resources? [y/N] ']);
    const out = io.stdout();
    expect(out).toContain(`pokemon is served by the endpoint lora-pokemon (InService) on config ${run('03')}.`);
    expect(out).toMatch(/Will delete 7:\nKIND\s+NAME\s+RUN\s+WHY\nendpoint\s+lora-pokemon-old\s/);
    expect(out).toMatch(new RegExp(`endpoint config\\s+${run('04')}\\s+${run('04')}\\s+newer than the serving run`));
    expect(out).not.toContain('watercolor');
    expect(out).not.toContain('handmade');
    expect(out).not.toContain('other1');
    // Endpoints, then configs, then models.
    const deleted = io.stderr().split('\n').filter((line) => line.startsWith('Deleted '));
    expect(deleted).toEqual([
      'Deleted endpoint lora-pokemon-old',
      ...['00', '01', '02'].map((day) => `Deleted endpoint config ${run(day)}`),
      ...['00', '01', '02'].map((day) => `Deleted model ${run(day)}`),
    ]);
    expect(await state(SUPERSEDED)).toEqual(SUPERSEDED.map(([kind, name]) => [kind, name, false]));
    expect(await state(KEPT)).toEqual(KEPT.map(([kind, name]) => [kind, name, true]));
    // Run again: nothing left to do, no question.
    const again = capturedIo();
    expect((await runCli(['cleanup', 'pokemon'], env, again)).code).toBe(0);
    expect(again.stdout()).toContain('Nothing to clean up for pokemon.');
    expect(again.questions).toEqual([]);
  });

  test('"n" (or no answer) deletes nothing, exit 1; --dry-run lists without asking; --yes deletes without asking', async () => {
    for (const answer of ['n', '']) {
      const io = capturedIo(undefined, [answer]);
      expect((await runCli(['cleanup', 'pokemon'], env, io)).code).toBe(1);
      expect(io.stderr()).toContain('Nothing deleted.');
    }
    const dry = capturedIo();
    expect((await runCli(['cleanup', 'pokemon', '--dry-run'], env, dry)).code).toBe(0);
    expect(dry.questions).toEqual([]);
    expect(dry.stdout()).toContain('Will delete 7:');
    expect(await state([...SUPERSEDED, ...KEPT])).toEqual([...SUPERSEDED, ...KEPT].map(([kind, name]) => [kind, name, true]));
    const yes = capturedIo();
    expect((await runCli(['cleanup', 'pokemon', '--yes'], env, yes)).code).toBe(0);
    expect(yes.questions).toEqual([]);
    expect(await state(SUPERSEDED)).toEqual(SUPERSEDED.map(([kind, name]) => [kind, name, false]));
    expect(await state(KEPT)).toEqual(KEPT.map(([kind, name]) => [kind, name, true]));
  });

  test('a deletion that fails is reported, the others go on, exit 1', async () => {
    const send = SageMakerClient.prototype.send;
    const spy = jest.spyOn(SageMakerClient.prototype, 'send').mockImplementation(function (this: SageMakerClient, command: unknown, ...rest: unknown[]) {
      const input = (command as { input?: { EndpointConfigName?: string }; constructor: { name: string } }).input;
      if ((command as { constructor: { name: string } }).constructor.name === 'DeleteEndpointConfigCommand' && input?.EndpointConfigName === run('01')) {
        return Promise.reject(Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException', $metadata: {} }));
      }
      return (send as (...args: unknown[]) => Promise<unknown>).call(this, command, ...rest);
    });
    try {
      const io = capturedIo();
      expect((await runCli(['cleanup', 'pokemon', '--yes'], env, io)).code).toBe(1);
      expect(io.stderr()).toContain(`Could not delete endpoint config ${run('01')}: ThrottlingException: Rate exceeded`);
      expect(io.stderr()).toContain('1 of 7 deletions failed; run cleanup again once the cause is fixed.');
    } finally {
      spy.mockRestore();
    }
    expect(await exists('config', run('01'))).toBe(true);
    expect(await exists('model', run('02'))).toBe(false);
  });

  test("never deletes a config another dataset's endpoint of the pipeline is on, nor its model (another stack's endpoint does not count)", async () => {
    await sagemaker.send(new CreateEndpointCommand({ EndpointName: 'lora-pika', EndpointConfigName: run('01'), Tags: tags('pokemon-v2', 'lora-pika-20241201120000-aaa000') }));
    await sagemaker.send(new CreateEndpointCommand({ EndpointName: 'other-stack', EndpointConfigName: run('02'), Tags: tags('pokemon-v2', run('02'), 'OtherStack') }));
    const io = capturedIo();
    expect((await runCli(['cleanup', 'pokemon', '--yes'], env, io)).code).toBe(0);
    expect(io.stdout()).toMatch(new RegExp(`endpoint config\\s+${run('01')}\\s+${run('01')}\\s+the current config of lora-pika \\(another dataset's endpoint\\)`));
    expect([await exists('config', run('01')), await exists('model', run('01'))]).toEqual([true, true]);
    expect(await exists('endpoint', 'lora-pika')).toBe(true);
    expect([await exists('config', run('02')), await exists('model', run('02'))]).toEqual([false, false]);
  });

  test('a dataset with nothing tagged: nothing to clean up, exit 0', async () => {
    const io = capturedIo();
    expect((await runCli(['cleanup', 'unknown'], env, io)).code).toBe(0);
    expect(io.stdout()).toContain('unknown has no dedicated endpoint.');
    expect(io.stdout()).toContain('Nothing to clean up for unknown.');
  });
});

describe('lora-pipeline cleanup without AWS', () => {
  test('--help prints the usage (exit 0); no dataset, or two, is a usage error (exit 2)', async () => {
    const env = cliEnv({});
    const help = await runCli(['cleanup', '--help'], env);
    expect(help.code).toBe(0);
    expect(help.io.stdout()).toContain('lora-pipeline cleanup <dataset> [--dry-run] [--yes]');
    expect((await runCli(['cleanup'], env)).code).toBe(2);
    expect((await runCli(['cleanup', 'a', 'b'], env)).code).toBe(2);
  });
});
