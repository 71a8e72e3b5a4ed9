import { MODEL_TYPE_DEFAULTS, type ModelType } from './models';

/**
 * Whether an instance type can train or serve a model type: pure rules used by the configuration at
 * synth and by Prepare for each run, so that a job or endpoint too small fails before it starts,
 * with a message saying what fits. Only the types below are known; any other passes.
 */

/** One instance type's memory, as the EC2 instance type specifications give it (the `ml.` type is the same machine). */
export interface InstanceMemory {
  /** Host memory, GiB. */
  readonly hostGiB: number;
  /** Memory of one GPU, GB as NVIDIA states it (a job, or an inference component, uses one). */
  readonly gpuGiB: number;
  readonly gpu: string;
  /** Whether the GPU computes in bfloat16 (Ampere and later), which sd-scripts trains FLUX.1 in. */
  readonly bf16: boolean;
}

type Gpu = Omit<InstanceMemory, 'hostGiB'>;

const T4: Gpu = { gpu: 'NVIDIA T4', gpuGiB: 16, bf16: false };
const A10G: Gpu = { gpu: 'NVIDIA A10G', gpuGiB: 24, bf16: true };
const L4: Gpu = { gpu: 'NVIDIA L4', gpuGiB: 24, bf16: true };
const L40S: Gpu = { gpu: 'NVIDIA L40S', gpuGiB: 48, bf16: true };
const V100: Gpu = { gpu: 'NVIDIA V100', gpuGiB: 16, bf16: false };
const A100: Gpu = { gpu: 'NVIDIA A100', gpuGiB: 40, bf16: true };

/** Host memory by size (type → GiB). */
function family(gpu: Gpu, sizes: Record<string, number>): Record<string, InstanceMemory> {
  return Object.fromEntries(Object.entries(sizes).map(([type, hostGiB]) => [type, { ...gpu, hostGiB }]));
}

/** The common GPU types SageMaker trains and hosts on. */
export const INSTANCE_MEMORY: Readonly<Record<string, InstanceMemory>> = {
  ...family(T4, { 'ml.g4dn.xlarge': 16, 'ml.g4dn.2xlarge': 32, 'ml.g4dn.4xlarge': 64, 'ml.g4dn.8xlarge': 128, 'ml.g4dn.12xlarge': 192, 'ml.g4dn.16xlarge': 256 }),
  ...family(A10G, {
    'ml.g5.xlarge': 16,
    'ml.g5.2xlarge': 32,
    'ml.g5.4xlarge': 64,
    'ml.g5.8xlarge': 128,
    'ml.g5.12xlarge': 192,
    'ml.g5.16xlarge': 256,
    'ml.g5.24xlarge': 384,
    'ml.g5.48xlarge': 768,
  }),
  ...family(L4, {
    'ml.g6.xlarge': 16,
    'ml.g6.2xlarge': 32,
    'ml.g6.4xlarge': 64,
    'ml.g6.8xlarge': 128,
    'ml.g6.12xlarge': 192,
    'ml.g6.16xlarge': 256,
    'ml.g6.24xlarge': 384,
    'ml.g6.48xlarge': 768,
  }),
  ...family(L40S, {
    'ml.g6e.xlarge': 32,
    'ml.g6e.2xlarge': 64,
    'ml.g6e.4xlarge': 128,
    'ml.g6e.8xlarge': 256,
    'ml.g6e.12xlarge': 384,
    'ml.g6e.16xlarge': 512,
    'ml.g6e.24xlarge': 768,
    'ml.g6e.48xlarge': 1536,
  }),
  ...family(V100, { 'ml.p3.2xlarge': 61, 'ml.p3.8xlarge': 244, 'ml.p3.16xlarge': 488 }),
  ...family(A100, { 'ml.p4d.24xlarge': 1152 }),
};

/** FLUX.1's needs (sd-scripts docs, "FLUX.1 LoRA training": 24 GB works with fp8_base; the bf16 pipeline is about 34 GB of weights). */
export const FLUX_NEEDS = {
  /** GPU GB to train with `fp8_base` (the transformer in fp8), or with `blocks_to_swap`. */
  trainingGpuGbFp8: 24,
  /** GPU GB to train the bf16 transformer whole, without block swap. */
  trainingGpuGbBf16: 46,
  /** Host GiB: the 23.8 GB transformer checkpoint is read into host memory before it reaches the GPU. */
  hostGiB: 32,
  /** GPU GB of one serving GPU for the bf16 pipeline (~34 GB of weights) and its activations. */
  servingGpuGb: 40,
  /** Training volume GB: ~34 GB of Hub files, the latent and text-encoder caches, and checkpoints. */
  minTrainingVolumeGb: 100,
} as const;

/** What trains FLUX.1, for the messages: the default (with fp8_base) and one with room to spare. */
const FLUX_TRAINING_FITS = 'use ml.g5.2xlarge (A10G 24 GB, with fp8_base) or ml.g6e.xlarge (L40S 48 GB)';
const FLUX_SERVING_FITS = 'use ml.g6e.xlarge (L40S 48 GB, 32 GiB) or a larger ml.g6e';

/** The FLUX.1 settings that decide how much GPU memory training needs (hyperparameters fp8_base and blocks_to_swap). */
export interface FluxTrainingSettings {
  readonly fp8Base: boolean;
  readonly blocksToSwap?: number | null;
}

/** The defaults of the shared hyperparameter schema: fp8_base true, no block swap. */
export const FLUX_TRAINING_DEFAULTS: FluxTrainingSettings = { fp8Base: true, blocksToSwap: null };

/**
 * Why `instanceType` cannot train a LoRA of `modelType` with these settings, or undefined (it can,
 * or its memory is unknown). SD 1.5 and SDXL train on every GPU type here.
 */
export function trainingFitProblem(modelType: ModelType, instanceType: string, settings: FluxTrainingSettings = FLUX_TRAINING_DEFAULTS): string | undefined {
  const instance = INSTANCE_MEMORY[instanceType];
  if (modelType !== 'flux1' || instance === undefined) return undefined;
  const gpu = `its ${instance.gpu} has ${instance.gpuGiB} GB`;
  if (!instance.bf16) return `${instanceType} cannot train FLUX.1: ${gpu} and no bf16, which sd-scripts trains FLUX.1 in; ${FLUX_TRAINING_FITS}`;
  const swaps = (settings.blocksToSwap ?? 0) >= 1;
  const needed = settings.fp8Base || swaps ? FLUX_NEEDS.trainingGpuGbFp8 : FLUX_NEEDS.trainingGpuGbBf16;
  if (instance.gpuGiB < needed) {
    const how = settings.fp8Base || swaps ? 'even with fp8_base' : `with fp8_base false and no blocks_to_swap (set fp8_base true, or blocks_to_swap of 1 or more, to need ${FLUX_NEEDS.trainingGpuGbFp8} GB)`;
    return `${instanceType} cannot train FLUX.1: ${gpu}, and FLUX.1 needs ${needed} GB ${how}; ${FLUX_TRAINING_FITS}`;
  }
  if (instance.hostGiB < FLUX_NEEDS.hostGiB) return hostProblem(instanceType, instance, 'train', FLUX_TRAINING_FITS);
  return undefined;
}

/** Why `instanceType` cannot serve `modelType` (one GPU of it, in either serving mode), or undefined. */
export function servingFitProblem(modelType: ModelType, instanceType: string): string | undefined {
  const instance = INSTANCE_MEMORY[instanceType];
  if (modelType !== 'flux1' || instance === undefined) return undefined;
  if (instance.gpuGiB < FLUX_NEEDS.servingGpuGb) {
    return (
      `${instanceType} cannot serve FLUX.1: its ${instance.gpu} has ${instance.gpuGiB} GB, and the bf16 FLUX.1 pipeline ` +
      `(about 34 GB of weights) needs one GPU of at least ${FLUX_NEEDS.servingGpuGb} GB; ${FLUX_SERVING_FITS}`
    );
  }
  if (instance.hostGiB < FLUX_NEEDS.hostGiB) return hostProblem(instanceType, instance, 'serve', FLUX_SERVING_FITS);
  return undefined;
}

/** Why a training volume of `volumeSizeGb` is too small for `modelType`, or undefined. */
export function trainingVolumeProblem(modelType: ModelType, volumeSizeGb: number): string | undefined {
  if (modelType !== 'flux1' || volumeSizeGb >= FLUX_NEEDS.minTrainingVolumeGb) return undefined;
  return (
    `a ${volumeSizeGb} GB training volume cannot hold FLUX.1: its Hub files alone are about 34 GB, beside the latent and ` +
    `text-encoder caches and the checkpoints; give at least ${FLUX_NEEDS.minTrainingVolumeGb} GB (the flux1 default is ${MODEL_TYPE_DEFAULTS.flux1.trainingVolumeSizeGb})`
  );
}

function hostProblem(instanceType: string, instance: InstanceMemory, what: 'train' | 'serve', fits: string): string {
  return (
    `${instanceType} cannot ${what} FLUX.1: it has ${instance.hostGiB} GiB of memory, and the 23.8 GB FLUX.1 transformer is read ` +
    `into host memory before the GPU, which needs ${FLUX_NEEDS.hostGiB} GiB; ${fits}`
  );
}
