import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { CloudFormationClient, DescribeStacksCommand } from '@aws-sdk/client-cloudformation';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { InvokeEndpointCommand, ModelError, SageMakerRuntimeClient, ValidationError } from '@aws-sdk/client-sagemaker-runtime';
import { mockClient } from 'aws-sdk-client-mock';
import 'aws-sdk-client-mock-jest';
import { cliEnv, invokeAnswer, runCli, runFixture, sentPayload } from './read-side-support';

const runtimeMock = mockClient(SageMakerRuntimeClient);
const lambdaMock = mockClient(LambdaClient);
const cloudformationMock = mockClient(CloudFormationClient);
const sharedEnv = cliEnv({ 'shared-endpoint': 'lora-shared-sd15', 'shared-inference-component': 'lora-shared-sd15-ic' });
/** A PNG's first bytes: what the server's base64 image decodes to. */
const PNG = Buffer.from('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489', 'hex');

let dir: string;
beforeEach(() => {
  runtimeMock.reset();
  lambdaMock.reset();
  cloudformationMock.reset();
  dir = mkdtempSync(path.join(tmpdir(), 'lora-generate-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** The server's JSON answer (containers/inference/README.md, Response). */
function served(seed: number, loras?: unknown[]) {
  const body = { images: [PNG.toString('base64')], seed, parameters: {}, timings: { wait_ms: 0, generate_ms: 3120, encode_ms: 41 }, ...(loras !== undefined ? { loras } : {}) };
  return { Body: new TextEncoder().encode(JSON.stringify(body)), ContentType: 'application/json' } as never;
}

function sentBody(index = 0): Record<string, unknown> {
  return JSON.parse(Buffer.from(runtimeMock.commandCalls(InvokeEndpointCommand)[index].args[0].input.Body as Uint8Array).toString('utf8'));
}

describe('lora-pipeline generate', () => {
  test('shared mode: the inference component is named, the body names the LoRA; the PNG is written and the versions used printed', async () => {
    runtimeMock.on(InvokeEndpointCommand).resolves(served(42, [{ name: 'pokemon', version: 3, scale: 1, sha256: 'ab' }]));
    const out = path.join(dir, 'cat.png');
    const { code, io } = await runCli(['generate', '--lora', 'pokemon', '--prompt', 'a green pokemon', '--seed', '42', '--out', out], sharedEnv);
    expect(code).toBe(0);
    expect(runtimeMock).toHaveReceivedCommandWith(InvokeEndpointCommand, {
      EndpointName: 'lora-shared-sd15',
      InferenceComponentName: 'lora-shared-sd15-ic',
      ContentType: 'application/json',
      Accept: 'application/json',
    });
    expect(sentBody()).toEqual({ prompt: 'a green pokemon', num_images: 1, output_format: 'png', seed: 42, lora: 'pokemon' });
    expect(readFileSync(out)).toEqual(PNG);
    expect(io.stdout()).toBe(`Wrote ${out}, seed 42, LoRA pokemon@3 (scale 1), 3.1 s to generate\n`);
  });

  test('every option maps onto its server field; a pinned version is sent as name@version; a .jpg --out asks for JPEG', async () => {
    runtimeMock.on(InvokeEndpointCommand).resolves(served(7, [{ name: 'pokemon', version: 2, scale: 0.8 }]));
    const out = path.join(dir, 'cat.jpg');
    const argv = ['generate', '--lora', 'pokemon@2', '-p', 'x', '--out', out, '--seed', '7', '--steps', '30', '--width', '640', '--height', '512', '--negative', 'blurry', '--scale', '0.8', '--guidance', '6.5'];
    expect((await runCli(argv, sharedEnv)).code).toBe(0);
    expect(sentBody()).toEqual({
      prompt: 'x',
      num_images: 1,
      output_format: 'jpeg',
      negative_prompt: 'blurry',
      seed: 7,
      num_inference_steps: 30,
      width: 640,
      height: 512,
      guidance_scale: 6.5,
      lora_scale: 0.8,
      lora: 'pokemon@2',
    });
  });

  test('without --out the file is <lora>-<seed>.png, the seed being the one the server chose', async () => {
    runtimeMock.on(InvokeEndpointCommand).resolves(served(1234, [{ name: 'pokemon', version: 3 }]));
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      const { code, io } = await runCli(['generate', '--lora', 'pokemon', '--prompt', 'x'], sharedEnv);
      expect(code).toBe(0);
      expect(io.stdout()).toContain('Wrote pokemon-1234.png, seed 1234');
    } finally {
      process.chdir(cwd);
    }
    expect(readFileSync(path.join(dir, 'pokemon-1234.png'))).toEqual(PNG);
    expect(sentBody()).not.toHaveProperty('seed');
  });

  test("the server's refusal (4xx JSON error and field) is printed as it said it, exit 1, and no file is written", async () => {
    runtimeMock.on(InvokeEndpointCommand).rejects(
      new ModelError({
        message: 'Received client error (404) from primary with message "{...}"',
        $metadata: {},
        OriginalStatusCode: 404,
        OriginalMessage: JSON.stringify({ error: 'no LoRA named pokemon: train one first', field: 'lora' }),
      }),
    );
    const out = path.join(dir, 'x.png');
    const { code, io } = await runCli(['generate', '--lora', 'pokemon', '--prompt', 'x', '--out', out], sharedEnv);
    expect(code).toBe(1);
    expect(io.stderr()).toBe('The endpoint lora-shared-sd15 answered 404 (field lora): no LoRA named pokemon: train one first\n');
    expect(existsSync(out)).toBe(false);
    // A 5xx that is not the server's JSON: shown as it came.
    runtimeMock.on(InvokeEndpointCommand).rejects(new ModelError({ message: 'x', $metadata: {}, OriginalStatusCode: 500, OriginalMessage: '<html>bad gateway</html>' }));
    const crashed = await runCli(['generate', '--lora', 'pokemon', '--prompt', 'x', '--out', out], sharedEnv);
    expect(crashed.code).toBe(1);
    expect(crashed.io.stderr()).toContain('answered 500: <html>bad gateway</html>');
  });

  test('an endpoint that does not exist is an AWS error (exit 3) naming it', async () => {
    runtimeMock.on(InvokeEndpointCommand).rejects(new ValidationError({ message: 'Endpoint lora-nope of account 123456789012 not found.', $metadata: {} }));
    const { code, io } = await runCli(['generate', '--endpoint', 'lora-nope', '--prompt', 'x', '--out', path.join(dir, 'x.png')], sharedEnv);
    expect(code).toBe(3);
    expect(io.stderr()).toContain('Invoking the endpoint lora-nope failed: ValidationError: Endpoint lora-nope of account 123456789012 not found.');
  });

  test('--endpoint: a dedicated endpoint, no inference component, no lora field; a pinned version is refused there (exit 2)', async () => {
    runtimeMock.on(InvokeEndpointCommand).resolves(served(5));
    const out = path.join(dir, 'd.png');
    const { code, io } = await runCli(['generate', '--endpoint', 'lora-pokemon', '--prompt', 'x', '--out', out], sharedEnv);
    expect(code).toBe(0);
    const input = runtimeMock.commandCalls(InvokeEndpointCommand)[0].args[0].input;
    expect(input.EndpointName).toBe('lora-pokemon');
    expect(input.InferenceComponentName).toBeUndefined();
    expect(sentBody()).not.toHaveProperty('lora');
    // A dedicated server names no versions.
    expect(io.stdout()).toBe(`Wrote ${out}, seed 5, 3.1 s to generate\n`);
    const pinned = await runCli(['generate', '--endpoint', 'lora-pokemon', '--lora', 'pokemon@2', '--prompt', 'x'], sharedEnv);
    expect(pinned.code).toBe(2);
  });

  test("a dedicated deployment: --lora <dataset> uses the endpoint of the dataset's latest run (from the status function)", async () => {
    cloudformationMock.on(DescribeStacksCommand).resolves({
      Stacks: [{ StackName: 'SageMakerLoraPipeline', StackStatus: 'UPDATE_COMPLETE', CreationTime: new Date(), Outputs: [{ OutputKey: 'StatusFunctionName', OutputValue: 'StatusFn' }] }],
    });
    lambdaMock.on(InvokeCommand).resolves(invokeAnswer({ runs: [runFixture({ phase: 'IN_SERVICE', endpoint: { name: 'lora-pokemon-ep', status: 'InService' } })], searchedExecutions: 100 }) as never);
    runtimeMock.on(InvokeEndpointCommand).resolves(served(9));
    const { code } = await runCli(['generate', '--lora', 'pokemon', '--prompt', 'x', '--out', path.join(dir, 'p.png')], cliEnv({}));
    expect(code).toBe(0);
    expect(sentPayload(lambdaMock.commandCalls(InvokeCommand)[0].args[0].input)).toEqual({ dataset: 'pokemon' });
    expect(runtimeMock).toHaveReceivedCommandWith(InvokeEndpointCommand, { EndpointName: 'lora-pokemon-ep' });
    expect(sentBody()).not.toHaveProperty('lora');
    // No run with an endpoint: exit 1, saying to give --endpoint.
    lambdaMock.on(InvokeCommand).resolves(invokeAnswer({ runs: [], searchedExecutions: 100 }) as never);
    const none = await runCli(['generate', '--lora', 'other', '--prompt', 'x'], cliEnv({}));
    expect(none.code).toBe(1);
    expect(none.io.stderr()).toContain('No dedicated endpoint is known for other');
  });

  test('an existing file is not overwritten without --force (exit 1); with --force it is', async () => {
    runtimeMock.on(InvokeEndpointCommand).resolves(served(1, []));
    const out = path.join(dir, 'keep.png');
    writeFileSync(out, 'mine');
    const kept = await runCli(['generate', '--lora', 'pokemon', '--prompt', 'x', '--out', out], sharedEnv);
    expect(kept.code).toBe(1);
    expect(kept.io.stderr()).toContain(`${out} exists: give another --out, or --force to overwrite it`);
    expect(readFileSync(out, 'utf8')).toBe('mine');
    // Refused before the endpoint is invoked (and paid for); with --force it is invoked once.
    expect(runtimeMock.commandCalls(InvokeEndpointCommand)).toHaveLength(0);
    const forced = await runCli(['generate', '--lora', 'pokemon', '--prompt', 'x', '--out', out, '--force', '--json'], sharedEnv);
    expect(forced.code).toBe(0);
    expect(runtimeMock.commandCalls(InvokeEndpointCommand)).toHaveLength(1);
    expect(readFileSync(out)).toEqual(PNG);
    expect(JSON.parse(forced.io.stdout())).toEqual({ file: out, seed: 1, loras: [], timings: { wait_ms: 0, generate_ms: 3120, encode_ms: 41 }, endpoint: 'lora-shared-sd15' });
  });

  test('usage errors (exit 2) before any call: no prompt, a bad LoRA name, a scale out of range, no --lora nor --endpoint; --help (exit 0)', async () => {
    const cases: Array<[string[], string]> = [
      [['generate', '--lora', 'pokemon'], '--prompt "<text>" is required'],
      [['generate', '--lora', '../x', '--prompt', 'x'], '--lora ../x is not a LoRA'],
      [['generate', '--lora', 'pokemon@0', '--prompt', 'x'], '--lora pokemon@0 is not a LoRA'],
      [['generate', '--lora', 'pokemon', '--prompt', 'x', '--scale', '3'], '--scale 3 is not allowed: give a number from 0 to 2'],
      [['generate', '--lora', 'pokemon', '--prompt', 'x', '--seed', '-1'], '--seed -1 is not allowed'],
      [['generate', '--prompt', 'x'], '--lora <name>[@<version>] is required'],
    ];
    for (const [argv, message] of cases) {
      const { code, io } = await runCli(argv, sharedEnv);
      expect([argv.join(' '), code]).toEqual([argv.join(' '), 2]);
      expect(io.stderr()).toContain(message);
    }
    expect(runtimeMock).not.toHaveReceivedCommand(InvokeEndpointCommand);
    const help = await runCli(['generate', '--help'], sharedEnv);
    expect(help.code).toBe(0);
    expect(help.io.stdout()).toContain('lora-pipeline generate --lora <name>[@<version>] --prompt "<text>"');
  });
});
