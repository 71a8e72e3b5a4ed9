import { FLUX_NEEDS, INSTANCE_MEMORY, servingFitProblem, trainingFitProblem, trainingVolumeProblem } from '../lambda/shared/instance-fit';
import { MODEL_TYPE_DEFAULTS, MODEL_TYPES } from '../lambda/shared/models';

describe('training fit', () => {
  test('SD 1.5 and SDXL train on every known type, FLUX.1 on none without bf16', () => {
    for (const instanceType of Object.keys(INSTANCE_MEMORY)) {
      expect(trainingFitProblem('sd15', instanceType)).toBeUndefined();
      expect(trainingFitProblem('sdxl', instanceType)).toBeUndefined();
      if (!INSTANCE_MEMORY[instanceType].bf16) expect(trainingFitProblem('flux1', instanceType)).toMatch(/and no bf16/);
    }
  });

  test('a T4 cannot train FLUX.1, and the message says what fits', () => {
    expect(trainingFitProblem('flux1', 'ml.g4dn.xlarge')).toBe(
      'ml.g4dn.xlarge cannot train FLUX.1: its NVIDIA T4 has 16 GB and no bf16, which sd-scripts trains FLUX.1 in; ' +
        'use ml.g5.2xlarge (A10G 24 GB, with fp8_base) or ml.g6e.xlarge (L40S 48 GB)',
    );
    expect(trainingFitProblem('flux1', 'ml.p3.16xlarge')).toMatch(/^ml\.p3\.16xlarge cannot train FLUX\.1: its NVIDIA V100 has 16 GB and no bf16/);
  });

  test('24 GB trains with fp8_base or block swap; without either it takes 46 GB', () => {
    expect(trainingFitProblem('flux1', 'ml.g5.2xlarge', { fp8Base: true })).toBeUndefined();
    expect(trainingFitProblem('flux1', 'ml.g5.2xlarge', { fp8Base: false, blocksToSwap: 8 })).toBeUndefined();
    expect(trainingFitProblem('flux1', 'ml.g5.2xlarge', { fp8Base: false, blocksToSwap: null })).toMatch(
      /^ml\.g5\.2xlarge cannot train FLUX\.1: its NVIDIA A10G has 24 GB, and FLUX\.1 needs 46 GB with fp8_base false and no blocks_to_swap \(set fp8_base true, or blocks_to_swap of 1 or more/,
    );
    expect(trainingFitProblem('flux1', 'ml.g5.2xlarge', { fp8Base: false, blocksToSwap: 0 })).toMatch(/needs 46 GB/);
    expect(trainingFitProblem('flux1', 'ml.g6e.xlarge', { fp8Base: false })).toBeUndefined();
    expect(trainingFitProblem('flux1', 'ml.p4d.24xlarge', { fp8Base: false })).toMatch(/NVIDIA A100 has 40 GB, and FLUX\.1 needs 46 GB/);
  });

  test('a GPU that fits on a host too small for the checkpoint is refused for the host', () => {
    expect(trainingFitProblem('flux1', 'ml.g5.xlarge')).toMatch(/^ml\.g5\.xlarge cannot train FLUX\.1: it has 16 GiB of memory, .* needs 32 GiB; use ml\.g5\.2xlarge/);
    expect(trainingFitProblem('flux1', 'ml.g6.xlarge')).toMatch(/it has 16 GiB of memory/);
    expect(trainingFitProblem('flux1', 'ml.g6.2xlarge')).toBeUndefined();
  });

  test('an unknown instance type passes', () => {
    expect(trainingFitProblem('flux1', 'ml.g7e.2xlarge', { fp8Base: false })).toBeUndefined();
  });
});

describe('serving fit', () => {
  test('FLUX.1 needs one GPU of 40 GB and 32 GiB of host memory', () => {
    expect(servingFitProblem('flux1', 'ml.g6e.xlarge')).toBeUndefined();
    expect(servingFitProblem('flux1', 'ml.p4d.24xlarge')).toBeUndefined();
    expect(servingFitProblem('flux1', 'ml.g5.48xlarge')).toBe(
      'ml.g5.48xlarge cannot serve FLUX.1: its NVIDIA A10G has 24 GB, and the bf16 FLUX.1 pipeline (about 34 GB of weights) needs one GPU ' +
        'of at least 40 GB; use ml.g6e.xlarge (L40S 48 GB, 32 GiB) or a larger ml.g6e',
    );
    expect(servingFitProblem('flux1', 'ml.g4dn.xlarge')).toMatch(/NVIDIA T4 has 16 GB/);
    expect(servingFitProblem('sdxl', 'ml.g4dn.xlarge')).toBeUndefined();
    expect(servingFitProblem('flux1', 'ml.g7e.2xlarge')).toBeUndefined();
  });

  test('every known type either serves FLUX.1 or says why, by the GPU or the host', () => {
    for (const [instanceType, memory] of Object.entries(INSTANCE_MEMORY)) {
      const fits = memory.gpuGiB >= FLUX_NEEDS.servingGpuGb && memory.hostGiB >= FLUX_NEEDS.hostGiB;
      expect([instanceType, servingFitProblem('flux1', instanceType) === undefined]).toEqual([instanceType, fits]);
    }
  });
});

describe('training volume', () => {
  test('FLUX.1 needs 100 GB; the others any size', () => {
    expect(trainingVolumeProblem('flux1', 99)).toMatch(/^a 99 GB training volume cannot hold FLUX\.1: .* give at least 100 GB \(the flux1 default is 150\)$/);
    expect(trainingVolumeProblem('flux1', 100)).toBeUndefined();
    expect(trainingVolumeProblem('sdxl', 1)).toBeUndefined();
  });
});

test("each model type's default instance types and volume fit it", () => {
  for (const modelType of MODEL_TYPES) {
    const defaults = MODEL_TYPE_DEFAULTS[modelType];
    expect(trainingFitProblem(modelType, defaults.trainingInstanceType)).toBeUndefined();
    expect(servingFitProblem(modelType, defaults.endpointInstanceType)).toBeUndefined();
    expect(servingFitProblem(modelType, defaults.sharedEndpointInstanceType)).toBeUndefined();
    expect(trainingVolumeProblem(modelType, defaults.trainingVolumeSizeGb)).toBeUndefined();
    expect(INSTANCE_MEMORY[defaults.trainingInstanceType]).toBeDefined();
  }
});
