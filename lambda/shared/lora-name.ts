import { fittedSlug } from './names';

/**
 * LoRA names in the registry and in requests to the shared endpoint. The server accepts
 * `^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$` for a name and `name@<version>` with a positive integer
 * version; nothing else reaches a registry key or an S3 path.
 */
export const LORA_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;
const MAX_LORA_NAME = 63;

/**
 * The registry name of a run's LoRA: its stable name (execution input `name`, else the dataset
 * folder) as it is when the server accepts it, else a slug of it ending in a hash of the original,
 * so that two folders never share a name.
 */
export function loraNameOf(stableName: string): string {
  return LORA_NAME.test(stableName) ? stableName : fittedSlug(stableName, MAX_LORA_NAME, 'lora');
}

/** `name@version`, as a request names one version. */
export function loraRef(name: string, version: number): string {
  return `${name}@${version}`;
}
