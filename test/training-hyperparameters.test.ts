import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HYPERPARAMETER_SCHEMA, toSageMakerHyperparameters, validateHyperparameters } from '../lambda/shared/hyperparameters';
import { PYTHON } from './support/tools';

const TRAINING = path.resolve(__dirname, '..', 'containers', 'training');
interface Case {
  readonly name: string;
  readonly input: Record<string, unknown>;
  readonly expect?: Record<string, unknown>;
  readonly problems?: [string, string][];
}
const { cases } = JSON.parse(fs.readFileSync(path.join(TRAINING, 'tests', 'hyperparameter_cases.json'), 'utf8')) as { cases: Case[] };

describe('training hyperparameters, validated from the container’s own schema file', () => {
  test.each(cases.map((c) => [c.name, c] as const))('%s', (_, testCase) => {
    const result = validateHyperparameters(testCase.input);
    if (testCase.problems) {
      expect(result.ok ? [] : result.problems.map((p) => [p.key, p.code])).toEqual(testCase.problems);
    } else {
      expect(result.ok ? Object.fromEntries(Object.keys(testCase.expect ?? {}).map((k) => [k, result.values[k]])) : result.message).toEqual(testCase.expect);
    }
  });

  test('the schema file is the one the container ships', () => {
    const file = JSON.parse(fs.readFileSync(path.join(TRAINING, 'lora_trainer', 'hyperparameters.schema.json'), 'utf8')) as {
      hyperparameters: Record<string, unknown>;
    };
    expect(Object.keys(HYPERPARAMETER_SCHEMA.hyperparameters)).toEqual(Object.keys(file.hyperparameters));
  });

  test('one message lists every problem', () => {
    const result = validateHyperparameters({ network_dim: '0', max_train_step: '5', xformers: 'true' });
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.message).toMatch(/^Invalid hyperparameters \(3 problems\): /);
      expect(result.message).toContain('"network_dim": must be at least 1, not "0"');
      expect(result.message).toContain('did you mean "max_train_steps"?');
    }
  });

  test.each([
    ['sdxl', { learning_rate: 0.00005, network_alpha: 8, cache_latents: false, model_type: 'sdxl', seed: 0 }],
    // FLUX.1's per-type defaults include nulls (sample_sampler, sample_steps): left out, the container fills the same.
    ['flux1', { model_type: 'flux1', base_model: 'black-forest-labs/FLUX.1-dev', fp8_base: false, blocks_to_swap: 18, guidance_scale: 1, seed: 0 }],
  ])('what the workflow sends is what the container accepts, value for value (%s)', (_, input) => {
    // Execution input as a user writes it (JSON numbers and booleans), through the workflow's
    // conversion to SageMaker strings, into the real Python parser.
    const result = validateHyperparameters(input);
    if (!result.ok) throw new Error(result.message);
    const strings = toSageMakerHyperparameters(result.values);
    expect(Object.values(strings).every((v) => typeof v === 'string')).toBe(true);
    expect(strings).not.toHaveProperty('unet_lr'); // unset stays unset
    const python = spawnSync(
      PYTHON,
      ['-c', 'import json, sys; from lora_trainer.hyperparameters import parse_hyperparameters; print(json.dumps(parse_hyperparameters(json.load(sys.stdin))))'],
      { cwd: TRAINING, input: JSON.stringify(strings), encoding: 'utf8' },
    );
    expect(python.stderr).toBe('');
    expect(JSON.parse(python.stdout)).toEqual(result.values);
  });
});
