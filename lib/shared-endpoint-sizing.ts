import { INSTANCE_MEMORY } from '../lambda/shared/instance-fit';
import type { EndpointConfig, ModelType } from './config';

export { INSTANCE_MEMORY } from '../lambda/shared/instance-fit';

/**
 * Whether the shared endpoint's memory reservation and GPU LoRA cache fit its instance type, so
 * that a deployment too big for its instance fails at synth, not after minutes of a failing
 * inference component. Only the types below are known; any other passes with a note.
 */

/**
 * Host memory of the server process besides its LoRA host cache (torch, diffusers, the pipeline's CPU parts);
 * FLUX.1's more (its T5 tokenizer and the component-by-component load's buffers), as its server's author sizes it.
 */
export const SERVER_PROCESS_MB: Readonly<Record<ModelType, number>> = { sd15: 2048, sdxl: 2048, flux1: 4096 };
/**
 * Host memory of the pristine copies of the layers LoRAs touch (made once, exact-size pageable memory): with kohya's
 * default targets about 0.7 GB in fp16 for SD 1.5 and 5 to 6 GB for SDXL (containers/inference lora_switch.py). For
 * FLUX.1, networks.lora_flux targets every Linear of the 19 double and 38 single blocks (modulation included):
 * 11.84 billion parameters, 22,583 MiB in bf16 (the text encoders are not trained: network_train_unet_only).
 */
export const PRISTINE_WEIGHTS_MB: Readonly<Record<ModelType, number>> = { sd15: 1024, sdxl: 6144, flux1: 22600 };

/** The inference component's host memory reservation: the LoRA host cache, the pristine weights and the process. */
export function reservedHostMb(modelType: ModelType, hostCacheMb: number): number {
  return hostCacheMb + PRISTINE_WEIGHTS_MB[modelType] + SERVER_PROCESS_MB[modelType];
}

/**
 * GPU memory the base pipeline needs besides the LoRA cache, in fp16: SD 1.5's weights are about
 * 2.1 GB (U-Net 1.7, text encoder 0.25, VAE 0.16) and its largest request's activations and VAE
 * decode about 1.5 GB; SDXL's weights about 6.9 GB (U-Net 5.1, two text encoders 1.6, VAE 0.16) and
 * activations and the VAE decode at 1024x1024 about 3 GB; FLUX.1's in bf16 about 34 GB (transformer 23.8, T5-XXL 9.8,
 * CLIP-L 0.25, VAE 0.17) and about 3 GB at 1024x1024. Rounded up to whole GiB.
 */
export const GPU_PIPELINE_MB: Readonly<Record<ModelType, number>> = { sd15: 4096, sdxl: 10240, flux1: 36864 };
/** The CUDA context (about 0.3 to 0.5 GB) and the caching allocator's fragmentation. */
export const GPU_MARGIN_MB = 1024;

/** What the host keeps for itself: the OS, SageMaker's agents, the container runtime and page cache; 10 %, at least 2 GiB. */
export function hostMarginMb(hostMb: number): number {
  return Math.max(2048, Math.round(hostMb * 0.1));
}

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
        `it plus ${PRISTINE_WEIGHTS_MB[modelType]} MB of pristine ${modelType} weights and ${SERVER_PROCESS_MB[modelType]} MB for the server (${reserved} MB), ` +
        `more than the ${hostLimit} MB the instance's ${instance.hostGiB} GiB leave after ${hostMarginMb(hostMb)} MB for the system; ` +
        `set endpoint.loraCacheHostMb to at most ${Math.max(0, hostLimit - reserved + endpoint.loraCache.hostMb)}, or choose a larger endpoint.instanceType` +
        largerThatFits(instance.gpu, reserved),
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

/** `, such as <type> (<n> GiB)`: the smallest known type of the same GPU whose host memory holds `reservedMb`; '' if none. */
function largerThatFits(gpu: string, reservedMb: number): string {
  const fits = Object.entries(INSTANCE_MEMORY)
    .filter(([, m]) => m.gpu === gpu && reservedMb <= m.hostGiB * 1024 - hostMarginMb(m.hostGiB * 1024))
    .sort(([, a], [, b]) => a.hostGiB - b.hostGiB);
  return fits.length > 0 ? `, such as ${fits[0][0]} (${fits[0][1].hostGiB} GiB)` : '';
}

/** A note for an instance type this check does not know, else undefined. */
export function sizingNote(instanceType: string): string | undefined {
  if (INSTANCE_MEMORY[instanceType] !== undefined) return undefined;
  return (
    `The shared endpoint's memory reservation (endpoint.loraCacheHostMb plus the pristine weights and the server) and endpoint.loraCacheGpuMb ` +
    `were not checked against ${instanceType}, whose memory this app does not know: make sure they fit, or the inference component will not start.`
  );
}
