import { FLUX_FILES, type FluxVariant } from '../shared/flux-files';
import type { ModelType } from '../shared/models';
import type { ListedObject } from './dataset';

/**
 * An S3 FLUX.1 base model is a folder of four files the containers find by name. Listing it before
 * the run starts turns a missing or doubled file into a message naming the files, not a training
 * job that fails once its instance has started.
 */

/** Lists the objects under a prefix (Prepare's DatasetStore.list). */
export type ListObjects = (bucket: string, prefix: string) => Promise<ListedObject[]>;

/** The variant the folder's transformer names, or what is wrong with the folder. */
export type FluxFolderCheck = { readonly variant: FluxVariant } | { readonly problem: string };

/** Checks the names listed directly in a FLUX.1 folder. */
export function checkFluxFolder(uri: string, names: readonly string[]): FluxFolderCheck {
  const present = new Set(names);
  const variants = (Object.keys(FLUX_FILES.transformer) as FluxVariant[]).filter((variant) => present.has(FLUX_FILES.transformer[variant]));
  const transformers = `${FLUX_FILES.transformer.dev} or ${FLUX_FILES.transformer.schnell}`;
  if (variants.length > 1) {
    return { problem: `${uri} holds both ${FLUX_FILES.transformer.dev} and ${FLUX_FILES.transformer.schnell}: keep the one transformer to train on (its name says the variant)` };
  }
  const missing: string[] = [FLUX_FILES.ae, FLUX_FILES.clipL, FLUX_FILES.t5xxl].filter((name) => !present.has(name));
  if (variants.length === 0) missing.unshift(transformers);
  if (missing.length > 0) {
    const all = `${transformers}, ${FLUX_FILES.ae}, ${FLUX_FILES.clipL} and ${FLUX_FILES.t5xxl}`;
    return { problem: `${uri} has no ${missing.join(', no ')}: a flux1 base model folder holds ${all} (README, "A FLUX.1 base model in S3")` };
  }
  return { variant: variants[0] };
}

/** Why the run's S3 FLUX.1 base model folder is unusable, or undefined (also for any other base model). */
export async function baseModelFilesProblem(modelType: ModelType, baseModel: string, list: ListObjects): Promise<string | undefined> {
  const match = /^s3:\/\/([^/]+)\/(.*\/)$/.exec(baseModel);
  if (modelType !== 'flux1' || !match) return undefined;
  const [, bucket, prefix] = match;
  const listed = await list(bucket, prefix);
  // SageMaker mounts the prefix as it is; the containers read the files at its top.
  const names = listed.filter((object) => object.size > 0).map((object) => object.key.slice(prefix.length));
  const check = checkFluxFolder(baseModel, names);
  return 'problem' in check ? `"baseModel" = "${baseModel}": ${check.problem}` : undefined;
}
