import type { EndpointConfig, ModelType } from './config';

/**
 * Whether the shared endpoint's memory reservation and GPU LoRA cache fit its instance type, so
 * that a deployment too big for its instance fails at synth, not after minutes of a failing
 * inference component. Only the types below are known; any other passes with a note.
 */

/** Host memory of the server process besides its LoRA host cache (torch, diffusers, the pipeline's CPU parts). */
export const SERVER_PROCESS_MB = 2048;
/**
 * Host memory of the pristine copies of the layers LoRAs touch (made once, exact-size pageable memory): with kohya's
 * default targets about 0.7 GB in fp16 for SD 1.5 and 5 to 6 GB for SDXL (containers/inference lora_switch.py).
 */
export const PRISTINE_WEIGHTS_MB: Readonly<Record<ModelType, number>> = { sd15: 1024, sdxl: 6144 };

/** The inference component's host memory reservation: the LoRA host cache, the pristine weights and the process. */
export function reservedHostMb(modelType: ModelType, hostCacheMb: number): number {
  return hostCacheMb + PRISTINE_WEIGHTS_MB[modelType] + SERVER_PROCESS_MB;
}

/**
 * GPU memory the base pipeline needs besides the LoRA cache, in fp16: SD 1.5's weights are about
 * 2.1 GB (U-Net 1.7, text encoder 0.25, VAE 0.16) and its largest request's activations and VAE
 * decode about 1.5 GB; SDXL's weights about 6.9 GB (U-Net 5.1, two text encoders 1.6, VAE 0.16) and
 * activations and the VAE decode at 1024x1024 about 3 GB. Rounded up to whole GiB.
 */
export const GPU_PIPELINE_MB: Readonly<Record<ModelType, number>> = { sd15: 4096, sdxl: 10240 };
/** The CUDA context (about 0.3 to 0.5 GB) and the caching allocator's fragmentation. */
export const GPU_MARGIN_MB = 1024;

/** What the host keeps for itself: the OS, SageMaker's agents, the container runtime and page cache; 10 %, at least 2 GiB. */
export function hostMarginMb(hostMb: number): number {
  return Math.max(2048, Math.round(hostMb * 0.1));
}

interface InstanceMemory {
  /** Host memory, GiB. */
  readonly hostGiB: number;
  /** Memory of one GPU, GiB (the inference component reserves one). */
  readonly gpuGiB: number;
  readonly gpu: string;
}

const T4 = { gpu: 'NVIDIA T4', gpuGiB: 16 };
const A10G = { gpu: 'NVIDIA A10G', gpuGiB: 24 };
const L4 = { gpu: 'NVIDIA L4', gpuGiB: 24 };
const L40S = { gpu: 'NVIDIA L40S', gpuGiB: 48 };
const V100 = { gpu: 'NVIDIA V100', gpuGiB: 16 };
const A100 = { gpu: 'NVIDIA A100', gpuGiB: 40 };

/** Host memory by size (xlarge → GiB), as the EC2 instance type specifications give it. */
function family(gpu: { gpu: string; gpuGiB: number }, sizes: Record<string, number>): Record<string, InstanceMemory> {
  return Object.fromEntries(Object.entries(sizes).map(([type, hostGiB]) => [type, { ...gpu, hostGiB }]));
}

/** The EC2 specifications of the common GPU types SageMaker hosts on (the `ml.` type is the same machine). */
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

type SizedEndpoint = Pick<EndpointConfig, 'instanceType' | 'loraCache'>;

/** Problems of the shared endpoint's sizes on a known instance type, each naming the keys to change. */
export function sharedEndpointSizingProblems(modelType: ModelType, endpoint: SizedEndpoint): string[] {
  const instance = INSTANCE_MEMORY[endpoint.instanceType];
  if (instance === undefined) return [];
  const problems: string[] = [];
  const hostMb = instance.hostGiB * 1024;
  const hostLimit = hostMb - hostMarginMb(hostMb);
  const reserved = reservedHostMb(modelType, endpoint.loraCache.hostMb);
  if (reserved > hostLimit) {
    problems.push(
      `"endpoint.loraCacheHostMb" = ${endpoint.loraCache.hostMb} is not allowed on "endpoint.instanceType" ${endpoint.instanceType}: the shared endpoint reserves ` +
        `it plus ${PRISTINE_WEIGHTS_MB[modelType]} MB of pristine ${modelType} weights and ${SERVER_PROCESS_MB} MB for the server (${reserved} MB), ` +
        `more than the ${hostLimit} MB the instance's ${instance.hostGiB} GiB leave after ${hostMarginMb(hostMb)} MB for the system; ` +
        `set endpoint.loraCacheHostMb to at most ${Math.max(0, hostLimit - reserved + endpoint.loraCache.hostMb)}, or choose a larger endpoint.instanceType`,
    );
  }
  const gpuLimit = instance.gpuGiB * 1024 - GPU_PIPELINE_MB[modelType] - GPU_MARGIN_MB;
  if (endpoint.loraCache.gpuMb > gpuLimit) {
    problems.push(
      `"endpoint.loraCacheGpuMb" = ${endpoint.loraCache.gpuMb} is not allowed on "endpoint.instanceType" ${endpoint.instanceType}: its ${instance.gpu} has ` +
        `${instance.gpuGiB} GiB, of which the ${modelType} pipeline needs about ${GPU_PIPELINE_MB[modelType]} MB and CUDA ${GPU_MARGIN_MB} MB; ` +
        `set endpoint.loraCacheGpuMb to at most ${Math.max(0, gpuLimit)}, or choose an instance type with a larger GPU`,
    );
  }
  return problems;
}

/** A note for an instance type this check does not know, else undefined. */
export function sizingNote(instanceType: string): string | undefined {
  if (INSTANCE_MEMORY[instanceType] !== undefined) return undefined;
  return (
    `The shared endpoint's memory reservation (endpoint.loraCacheHostMb plus the pristine weights and the server) and endpoint.loraCacheGpuMb ` +
    `were not checked against ${instanceType}, whose memory this app does not know: make sure they fit, or the inference component will not start.`
  );
}
