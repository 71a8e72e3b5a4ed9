import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { resolveIntrinsics } from './support/asl';

const ROOT = path.resolve(__dirname, '..');
const CDK = path.join(ROOT, 'node_modules', '.bin', 'cdk');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'cdk-cli-test-'));

afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

/** Runs the real CDK CLI as the README does, offline, with no AWS credentials and no Docker. */
function cdkSynth(args: string[]) {
  const outdir = fs.mkdtempSync(path.join(scratch, 'out-'));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(AWS_|CDK_)/.test(k)));
  const run = spawnSync(CDK, ['synth', '--quiet', '--output', outdir, ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: {
      ...env,
      AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/credentials',
      AWS_CONFIG_FILE: '/nonexistent/config',
      AWS_EC2_METADATA_DISABLED: 'true',
      DOCKER_HOST: 'unix:///nonexistent/docker.sock',
    },
    timeout: 120_000,
  });
  return { status: run.status, output: `${run.stdout}${run.stderr}`, outdir };
}

/**
 * Each function esbuild bundled loads in a fresh Node.js with the environment its template gives
 * it (tokens resolved to fake values) and exports its handler: a bundling mistake, or a cold start
 * that refuses the stack's own settings, fails here rather than at the first run in AWS.
 */
function expectBundledFunctionsLoad(outdir: string, template: { Resources: Record<string, any> }) {
  const functions = Object.entries(template.Resources).filter(([, r]) => r.Type === 'AWS::Lambda::Function' && r.Properties.Runtime === 'nodejs24.x');
  expect(functions.map(([id]) => id.replace(/[0-9A-F]{8}$/, '')).sort()).toEqual([
    'StatusFunction',
    'TriggerKickoffFunction',
    'WorkflowLoraCheckFunction',
    'WorkflowPrepareFunction',
    'WorkflowRegistryFunction',
    'WorkflowReportFunction',
    'WorkflowSamplesFunction',
  ]);
  for (const [id, resource] of functions) {
    const bundle = path.join(outdir, resource.Metadata['aws:asset:path'], 'index.js');
    const variables = resolveIntrinsics(resource.Properties.Environment?.Variables ?? {}, template.Resources as never) as Record<string, string>;
    const load = spawnSync(process.execPath, ['-e', `const m = require(${JSON.stringify(bundle)}); process.exit(typeof m.handler === 'function' ? 0 : 3)`], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH, AWS_REGION: 'us-east-1', ...variables },
    });
    expect([id, load.status, load.stderr.replace(/\(node:\d+\) Warning: NodeVersionSupportWarning[\s\S]*?--trace-warnings[^\n]*\n/g, '')]).toEqual([id, 0, '']);
  }
}

describe('cdk synth through the CLI (README quick start)', () => {
  test('writes a template, offline, without Docker or credentials', () => {
    const { status, output, outdir } = cdkSynth([]);
    expect([status, output]).toEqual([0, expect.anything()]);
    const template = JSON.parse(fs.readFileSync(path.join(outdir, 'SageMakerLoraPipeline.template.json'), 'utf8'));
    const types = Object.values(template.Resources as Record<string, { Type: string }>).map((r) => r.Type);
    expect(types.filter((t) => t === 'AWS::S3::Bucket')).toHaveLength(3);
    expect(types).toContain('AWS::KMS::Key');
    expectBundledFunctionsLoad(outdir, template);
  });

  test('a bad configuration value fails synth with a message naming the key, without a stack trace', () => {
    const { status, output } = cdkSynth(['-c', 'training.maxWaitSeconds=10']);
    expect(status).not.toBe(0);
    expect(output).toContain('"training.maxWaitSeconds" = 10 is not allowed');
    expect(output).not.toMatch(/^\s+at /m);
  });

  test('an unacknowledged cdk-nag finding fails synth: bin/app.ts registers the AwsSolutions checks', () => {
    const probe = path.join(ROOT, 'test', 'fixtures', 'nag-probe.cjs');
    const { status, output } = cdkSynth(['--app', `node_modules/.bin/tsx --require ${probe} bin/app.ts`]);
    expect(status).not.toBe(0);
    expect(output).toMatch(/AwsSolutions-S1/);
    expect(output).toContain('NonCompliantProbe');
  });
});
