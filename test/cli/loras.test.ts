import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import * as kms from 'aws-cdk-lib/aws-kms';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { RegistryTable, type VersionItem } from '../../lambda/registry/table';
import { LoraRegistry } from '../../lib/lora-registry';
import { createTestApp } from '../support/app';
import { motoAvailable, type MotoServer, startMoto } from '../support/moto';
import { createTableAsDeclared } from '../support/registry-table';
import { cliEnv, runCli } from './read-side-support';

const TABLE = 'lora-registry';
const describeWithMoto = motoAvailable() ? describe : describe.skip;

/** The registry table's properties as the stack declares them. */
function declaredTable() {
  const stack = new Stack(createTestApp(), 'RegistryStack', { env: { account: '123456789012', region: 'us-east-1' } });
  new LoraRegistry(stack, 'Registry', { key: new kms.Key(stack, 'Key', { enableKeyRotation: true }), removalPolicy: RemovalPolicy.DESTROY });
  const [table] = Object.values(Template.fromStack(stack).findResources('AWS::DynamoDB::Table')) as Array<{ Properties: Parameters<typeof createTableAsDeclared>[2] }>;
  return table.Properties;
}

function versionItem(name: string, version: number, createdAt: string): VersionItem {
  return {
    name,
    version,
    status: 'pending',
    modelType: 'sd15',
    baseModel: 'stable-diffusion-v1-5/stable-diffusion-v1-5',
    s3Uri: `s3://artifacts/loras/${name}/${version}.safetensors`,
    sha256: 'ab'.repeat(32),
    sizeBytes: 9_437_184,
    rank: 8,
    components: ['unet', 'text_encoder'],
    createdAt,
    run: `lora-${name}-2025010${version}120000-abc12${version}`,
    execution: `arn:aws:states:eu-west-1:123456789012:execution:LoraPipelineWorkflow:${name}-${version}`,
    trainingJob: `lora-${name}-2025010${version}120000-abc12${version}`,
    summary: {},
  };
}

describeWithMoto('lora-pipeline loras, on the registry table in moto', () => {
  let moto: MotoServer;
  let dynamodb: DynamoDBClient;
  let registry: RegistryTable;
  let env: NodeJS.ProcessEnv;
  const properties = declaredTable();

  beforeAll(async () => {
    moto = await startMoto();
    dynamodb = new DynamoDBClient(moto.clientConfig);
    registry = new RegistryTable(DynamoDBDocumentClient.from(dynamodb), TABLE);
    env = cliEnv({ 'registry-table': TABLE }, { LORA_PIPELINE_ENDPOINT_URL: moto.endpoint, AWS_REGION: moto.clientConfig.region });
  });
  afterAll(async () => {
    dynamodb?.destroy();
    await moto?.stop();
  });
  beforeEach(async () => {
    await moto.reset();
    await createTableAsDeclared(dynamodb, TABLE, properties);
  });

  /** Registers a version through the registry's own writes (allocate, put), then moves it as the workflow would. */
  async function register(name: string, createdAt: string, then?: 'promote' | 'fail' | 'retire'): Promise<number> {
    const version = await registry.allocateVersion(name, createdAt);
    await registry.putVersion(versionItem(name, version, createdAt));
    if (then === 'promote' || then === 'retire') expect(await registry.promote(name, version, createdAt)).toBe('made-current');
    if (then === 'fail') expect(await registry.changeStatus(name, version, 'pending', 'failed', { failure: 'the endpoint answered 400: not a LoRA of sd15' })).toBe(true);
    if (then === 'retire') {
      expect(await registry.changeStatus(name, version, 'ready', 'retired', { retiredAt: '2025-01-09T00:00:00.000Z' })).toBe(true);
      expect(await registry.moveCurrent(name, version, undefined, '2025-01-09T00:00:00.000Z')).toBe(true);
    }
    return version;
  }

  async function pokemonAndWatercolor(): Promise<void> {
    await register('pokemon', '2025-01-01T12:00:00.000Z', 'promote');
    await register('pokemon', '2025-01-02T12:00:00.000Z', 'fail');
    await register('pokemon', '2025-01-03T12:00:00.000Z', 'promote');
    await register('pokemon', '2025-01-04T12:00:00.000Z');
    await register('watercolor', '2025-01-05T12:00:00.000Z', 'retire');
  }

  test('every name: current and latest version, each version with its status, when the latest was created', async () => {
    await pokemonAndWatercolor();
    const { code, io } = await runCli(['loras'], env);
    expect(code).toBe(0);
    const lines = io.stdout().trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+CURRENT\s+LATEST\s+VERSIONS\s+LATEST CREATED$/);
    expect(lines[1]).toMatch(/^pokemon\s+3\s+4\s+4 pending, 3 ready, 2 failed, 1 ready\s+2025-01-04 12:00:00Z$/);
    // Retired, and nothing current any more.
    expect(lines[2]).toMatch(/^watercolor\s+-\s+1\s+1 retired\s+2025-01-05 12:00:00Z$/);
    expect(lines).toHaveLength(3);
  });

  test("loras <name>: its versions newest first, the current one marked, a failed one's reason", async () => {
    await pokemonAndWatercolor();
    const { code, io } = await runCli(['loras', 'pokemon'], env);
    expect(code).toBe(0);
    const lines = io.stdout().trimEnd().split('\n');
    expect(lines[0]).toMatch(/^VERSION\s+STATUS\s+CURRENT\s+CREATED\s+RANK\s+SIZE\s+RUN\s+NOTE$/);
    expect(lines.slice(1).map((line) => line.split(/\s{2,}/).slice(0, 3))).toEqual([
      ['pokemon@4', 'pending', '2025-01-04 12:00:00Z'],
      ['pokemon@3', 'ready', 'current'],
      ['pokemon@2', 'failed', '2025-01-02 12:00:00Z'],
      ['pokemon@1', 'ready', '2025-01-01 12:00:00Z'],
    ]);
    expect(lines[3]).toContain('the endpoint answered 400: not a LoRA of sd15');
    expect(lines[2]).toContain('9.0 MiB');
    const retired = await runCli(['loras', 'watercolor'], env);
    expect(retired.io.stdout()).toContain('No version of watercolor is current: a request must name one as watercolor@<version>.');
  });

  test('--json: each name with current, latest and its versions, whether each is current', async () => {
    await pokemonAndWatercolor();
    const { code, io } = await runCli(['loras', '--json'], env);
    expect(code).toBe(0);
    const answer = JSON.parse(io.stdout());
    expect(answer.loras.map((entry: { name: string; current: number | null; latest: number }) => [entry.name, entry.current, entry.latest])).toEqual([
      ['pokemon', 3, 4],
      ['watercolor', null, 1],
    ]);
    expect(answer.loras[0].versions.map((v: { ref: string; status: string; current: boolean }) => [v.ref, v.status, v.current])).toEqual([
      ['pokemon@4', 'pending', false],
      ['pokemon@3', 'ready', true],
      ['pokemon@2', 'failed', false],
      ['pokemon@1', 'ready', false],
    ]);
    // The registry's claim attributes and summaries stay out.
    expect(Object.keys(answer.loras[0])).toEqual(['name', 'current', 'latest', 'updatedAt', 'versions']);
    const one = JSON.parse((await runCli(['loras', 'watercolor', '--json'], env)).io.stdout());
    expect(one).toMatchObject({ name: 'watercolor', current: null, versions: [{ ref: 'watercolor@1', status: 'retired', retiredAt: '2025-01-09T00:00:00.000Z' }] });
  });

  test('more items than one Scan page are all listed', async () => {
    for (let index = 0; index < 30; index += 1) {
      await registry.allocateVersion(`lora-${String(index).padStart(2, '0')}`, '2025-01-01T00:00:00.000Z');
      await registry.putVersion({ ...versionItem(`lora-${String(index).padStart(2, '0')}`, 1, '2025-01-01T00:00:00.000Z'), summary: { padding: 'x'.repeat(40_000) } });
    }
    const { code, io } = await runCli(['loras', '--json'], env);
    expect(code).toBe(0);
    expect(JSON.parse(io.stdout()).loras).toHaveLength(30);
  });

  test('an unknown name: exit 1 saying how to list them; an empty registry says so (exit 0)', async () => {
    const empty = await runCli(['loras'], env);
    expect(empty.code).toBe(0);
    expect(empty.io.stderr()).toContain('The registry is empty');
    const missing = await runCli(['loras', 'nobody'], env);
    expect(missing.code).toBe(1);
    expect(missing.io.stderr()).toContain('No LoRA named nobody in the registry lora-registry. List the names with: lora-pipeline loras');
  });

  test('a missing table is an AWS error (exit 3) naming the table', async () => {
    const { code, io } = await runCli(['loras'], { ...env, LORA_PIPELINE_REGISTRY_TABLE: 'no-such-table' });
    expect(code).toBe(3);
    expect(io.stderr()).toContain('Reading the registry table no-such-table failed: ResourceNotFoundException');
  });
});

describe('lora-pipeline loras without AWS', () => {
  const env = cliEnv({ 'registry-table': TABLE });
  test('--help prints the usage (exit 0); a name the registry cannot hold is a usage error (exit 2) before any call', async () => {
    const help = await runCli(['loras', '--help'], env);
    expect(help.code).toBe(0);
    expect(help.io.stdout()).toContain('lora-pipeline loras [<name>] [--json]');
    const bad = await runCli(['loras', '../etc'], { ...env, LORA_PIPELINE_ENDPOINT_URL: 'http://127.0.0.1:9' });
    expect(bad.code).toBe(2);
    expect(bad.io.stderr()).toContain('"../etc" is not a LoRA name');
  });
});
