import { InvokeEndpointCommand, SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { mockClient } from 'aws-sdk-client-mock';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { checkLora, sharedSmokeRequests } from '../../lambda/lora-check/check';
import { dedicatedSmokeRequests, smokeTestEndpoint } from '../../lambda/lora-check/dedicated';
import { encodePng } from '../../lambda/lora-check/png';
import { DEFAULT_SMOKE_PROMPT, type SmokeStore, smokeRequest } from '../../lambda/lora-check/smoke';
import { IN_CI } from '../support/tools';

/**
 * The smoke test of a FLUX.1 LoRA asks for what each variant is made for: schnell 4 steps and no
 * guidance (the server refuses guidance for it), dev 28 steps at its distilled guidance 3.5, and
 * never a negative prompt (the server refuses one for FLUX.1).
 */

const runtimeMock = mockClient(SageMakerRuntimeClient);
const runtime = new SageMakerRuntimeClient({ region: 'eu-west-1' });
const JOB = 'lora-flux-20250101120000-abc123';
const store: SmokeStore = { bucket: 'artifacts', put: async (file) => `models/${JOB}/smoke/${file}` };

function image(level: number): Buffer {
  return encodePng({ width: 8, height: 8, channels: 3, data: new Uint8Array(8 * 8 * 3).map((_, i) => Math.min(255, level + (i % 24))) });
}

/** Requests as the endpoint received them: their JSON bodies. */
const bodies = () => runtimeMock.commandCalls(InvokeEndpointCommand).map((call) => JSON.parse(Buffer.from(call.args[0].input.Body as Uint8Array).toString()) as Record<string, unknown>);

/** A server whose image changes with the LoRA: shared, named by `lora`; dedicated, fused unless lora_scale is 0. */
function server(mode: 'shared' | 'dedicated'): void {
  runtimeMock.on(InvokeEndpointCommand).callsFake((input: { Body: Uint8Array }) => {
    const request = JSON.parse(Buffer.from(input.Body).toString()) as Record<string, unknown>;
    const withLora = mode === 'shared' ? request.lora !== undefined : request.lora_scale !== 0;
    const loras = request.lora ? [{ name: 'flux', version: 1, scale: 1 }] : [];
    return { Body: Buffer.from(JSON.stringify({ images: [image(withLora ? 150 : 100).toString('base64')], seed: request.seed, ...(mode === 'shared' ? { loras } : {}) })) };
  });
}

beforeEach(() => runtimeMock.reset());

describe('FLUX.1 smoke requests', () => {
  test.each([
    ['schnell', 'black-forest-labs/FLUX.1-schnell', { num_inference_steps: 4, width: 1024, height: 1024 }],
    ['dev', 'black-forest-labs/FLUX.1-dev', { num_inference_steps: 28, guidance_scale: 3.5, width: 768, height: 768 }],
    ['an S3 folder (variant unknown here)', 's3://models/flux/', { num_inference_steps: 28, width: 768, height: 768 }],
  ])('%s', (_, baseModel, expected) => {
    expect(smokeRequest('flux1', 'a fox', baseModel)).toEqual({ prompt: 'a fox', ...expected, seed: 1234, output_format: 'png' });
  });

  test('SD 1.5 and SDXL keep their requests whatever the base model (the negative control)', () => {
    expect(smokeRequest('sdxl', 'a fox', 'black-forest-labs/FLUX.1-dev')).toEqual({ prompt: 'a fox', num_inference_steps: 20, width: 1024, height: 1024, seed: 1234, output_format: 'png' });
    expect(smokeRequest('sd15', 'a fox')).toMatchObject({ num_inference_steps: 20, width: 512 });
  });

  test("a dedicated FLUX.1-dev endpoint: both requests with dev's settings, the result says its steps", async () => {
    server('dedicated');
    const event = { mode: 'dedicated', endpointName: 'lora-flux', modelType: 'flux1', baseModel: 'black-forest-labs/FLUX.1-dev', trainingJobName: JOB, samples: null };
    const result = await smokeTestEndpoint(event, runtime, () => store);
    const [withIt, without] = bodies();
    expect(withIt).toEqual({ prompt: DEFAULT_SMOKE_PROMPT, num_inference_steps: 28, guidance_scale: 3.5, width: 768, height: 768, seed: 1234, output_format: 'png' });
    expect(without).toEqual({ ...withIt, lora_scale: 0 });
    expect(withIt).not.toHaveProperty('negative_prompt');
    expect(result.steps).toBe(28);
  });

  test('the shared FLUX.1-schnell endpoint: 4 steps, no guidance', async () => {
    server('shared');
    const event = {
      mode: 'shared',
      endpointName: 'lora-shared-flux1',
      inferenceComponentName: 'lora-shared-flux1',
      lora: { name: 'flux', version: 1 },
      modelType: 'flux1',
      baseModel: 'black-forest-labs/FLUX.1-schnell',
      trainingJobName: JOB,
      samples: null,
    };
    const result = await checkLora(event, runtime, () => store);
    for (const body of bodies()) {
      expect(body).toMatchObject({ num_inference_steps: 4, width: 1024, height: 1024 });
      expect(body).not.toHaveProperty('guidance_scale');
    }
    expect(result.smoke.steps).toBe(4);
  });

  test('an event without baseModel (an older definition) still runs, with the settings that suit either variant', async () => {
    server('dedicated');
    const event = { mode: 'dedicated', endpointName: 'lora-flux', modelType: 'flux1', trainingJobName: JOB, samples: null };
    await smokeTestEndpoint(event, runtime, () => store);
    expect(bodies()[0]).toMatchObject({ num_inference_steps: 28, width: 768 });
    expect(bodies()[0]).not.toHaveProperty('guidance_scale');
  });
});

/**
 * The server's own request checks (containers/inference/lora_server/validation.py and imaging.py, as
 * app.py runs them, on the inference environment `npm test` makes): a smoke request the server refused
 * would fail every FLUX.1 run at its last step. The S3 request must suit both variants: its variant is unknown here.
 */
const ROOT = path.resolve(__dirname, '..', '..');
const INFERENCE_PYTHON = path.join(ROOT, '.venv', 'inference', 'bin', 'python');
const SERVER_CHECKS = `
import json, sys
from lora_server import imaging, validation
answers = []
for case in json.load(sys.stdin):
    try:
        body, refs = validation.split_loras(case["request"], case["shared"], 1.0)
        params = validation.validate(body, "flux1", 1.0, 0, case["variant"])
        imaging.check_can_fit(params.width, params.height, params.num_images, params.output_format, all_images_as_json=True)
        validation.check_output_pixels(params, "flux1")
        answers.append({"steps": params.num_inference_steps, "guidance": params.guidance_scale, "side": params.width, "loras": len(refs)})
    except validation.RequestError as error:
        answers.append({"refused": str(error)})
print(json.dumps(answers))
`;
const serverAvailable = existsSync(INFERENCE_PYTHON);
if (!serverAvailable) {
  const reason = `the inference environment (${INFERENCE_PYTHON}) is missing: run node test/support/python-envs.mjs`;
  if (IN_CI) throw new Error(`${reason}. CI never skips these tests.`);
  console.warn(`Skipping the server-validation tests of the FLUX.1 smoke requests: ${reason}`);
}

type ServerAnswer = { steps: number; guidance: number; side: number; loras: number } | { refused: string };

function serverChecks(cases: ReadonlyArray<{ request: Record<string, unknown>; variant: 'schnell' | 'dev'; shared: boolean }>): ServerAnswer[] {
  const run = spawnSync(INFERENCE_PYTHON, ['-c', SERVER_CHECKS], { cwd: path.join(ROOT, 'containers', 'inference'), input: JSON.stringify(cases), encoding: 'utf8', timeout: 60_000 });
  if (run.status !== 0) throw new Error(`the server's checks failed to run: ${run.stderr.slice(-2000)}`);
  return JSON.parse(run.stdout) as ServerAnswer[];
}

(serverAvailable ? describe : describe.skip)("the FLUX.1 smoke requests pass the server's own checks", () => {
  const LONGEST_PROMPT = 'x'.repeat(2000);
  const requests = (baseModel: string) => {
    const event = { endpointName: 'e', modelType: 'flux1', baseModel, trainingJobName: JOB, samples: { prompt: LONGEST_PROMPT } } as const;
    const shared = sharedSmokeRequests({ ...event, mode: 'shared', inferenceComponentName: 'c', lora: { name: 'flux', version: 1 } });
    const dedicated = dedicatedSmokeRequests({ ...event, mode: 'dedicated' });
    return [
      { request: shared.withLora, shared: true },
      { request: shared.withoutLora, shared: true },
      { request: dedicated.withLora, shared: false },
      { request: dedicated.withoutLora, shared: false },
    ];
  };

  test.each([
    ['schnell', 'black-forest-labs/FLUX.1-schnell', ['schnell'], { steps: 4, guidance: 0, side: 1024 }],
    ['dev', 'black-forest-labs/FLUX.1-dev', ['dev'], { steps: 28, guidance: 3.5, side: 768 }],
    ['an S3 folder of either variant', 's3://models/flux/', ['schnell', 'dev'], { steps: 28, side: 768 }],
  ] as const)('%s: shared and dedicated, with and without the LoRA', (_, baseModel, variants, expected) => {
    const cases = variants.flatMap((variant) => requests(baseModel).map((c) => ({ ...c, variant })));
    const answers = serverChecks(cases);
    answers.forEach((answer, index) => expect([index, answer]).toEqual([index, expect.objectContaining({ ...expected, loras: index % 4 === 0 ? 1 : 0 })]));
  });

  test('the negative controls: what the server refuses for FLUX.1 is refused by the same checks', () => {
    const schnell = smokeRequest('flux1', 'a fox', 'black-forest-labs/FLUX.1-schnell');
    const answers = serverChecks([
      { request: { ...schnell, guidance_scale: 3.5 }, variant: 'schnell', shared: false },
      { request: { ...schnell, negative_prompt: 'blurry' }, variant: 'schnell', shared: false },
      { request: { ...schnell, width: 1000 }, variant: 'schnell', shared: false },
      { request: smokeRequest('sdxl', 'a fox'), variant: 'dev', shared: false },
    ]);
    expect(answers.map((answer) => ('refused' in answer ? answer.refused.split(' ')[0] : answer))).toEqual([
      'guidance_scale',
      'negative_prompt',
      'width',
      expect.objectContaining({ steps: 20, side: 1024 }),
    ]);
  });
});
