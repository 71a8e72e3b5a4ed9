/**
 * The FLUX.1 base model's files and Hub repositories: what a flux1 base model may be, shared by the
 * deploy-time configuration, Prepare and the CLI. The training and inference containers hold the
 * same names (lora_trainer/flux_files.py, lora_server/flux_files.py).
 */

export type FluxVariant = 'dev' | 'schnell';

/**
 * The file names an S3 flux1 base model prefix holds: the BFL single-file transformer (its name
 * says the variant), the BFL autoencoder, and CLIP-L and T5-XXL with transformers key names.
 */
export const FLUX_FILES = {
  transformer: { dev: 'flux1-dev.safetensors', schnell: 'flux1-schnell.safetensors' },
  ae: 'ae.safetensors',
  clipL: 'clip_l.safetensors',
  t5xxl: 't5xxl_fp16.safetensors',
} as const;

/** The only Hub ids a flux1 base model may be: the containers pin revisions and file names of these two. */
export const FLUX_HUB_REPOS: Readonly<Record<FluxVariant, string>> = {
  dev: 'black-forest-labs/FLUX.1-dev',
  schnell: 'black-forest-labs/FLUX.1-schnell',
};

/** FLUX.1-dev is gated on the Hub (its non-commercial licence must be accepted): downloads need a token. */
export const FLUX_GATED: Readonly<Record<FluxVariant, boolean>> = { dev: true, schnell: false };

/** The variant a Hub id names, or undefined for any other id. */
export function fluxVariantOfHubId(id: string): FluxVariant | undefined {
  return (Object.keys(FLUX_HUB_REPOS) as FluxVariant[]).find((variant) => FLUX_HUB_REPOS[variant] === id);
}

/** Whether downloading `baseModel` needs a Hugging Face token (a gated FLUX.1 Hub id). */
export function isGatedHubModel(baseModel: string): boolean {
  const variant = fluxVariantOfHubId(baseModel);
  return variant !== undefined && FLUX_GATED[variant];
}

/** The four file names of an S3 prefix of the given variant. */
export function fluxFileNames(variant: FluxVariant): string[] {
  return [FLUX_FILES.transformer[variant], FLUX_FILES.ae, FLUX_FILES.clipL, FLUX_FILES.t5xxl];
}

/**
 * Why `baseModel` (already a valid Hub id or S3 URI) cannot be a flux1 base model, or undefined:
 * only the two FLUX.1 Hub ids, or an S3 folder (ending in `/`) holding the four files.
 */
export function fluxBaseModelProblem(baseModel: string): string | undefined {
  if (baseModel.startsWith('s3://')) {
    if (baseModel.endsWith('/')) return undefined;
    return (
      `a flux1 base model in S3 is a folder (ending in '/') holding ${FLUX_FILES.transformer.dev} or ${FLUX_FILES.transformer.schnell}, ` +
      `${FLUX_FILES.ae}, ${FLUX_FILES.clipL} and ${FLUX_FILES.t5xxl}, not a single file`
    );
  }
  if (fluxVariantOfHubId(baseModel) !== undefined) return undefined;
  return (
    `a flux1 base model from the Hub is ${FLUX_HUB_REPOS.schnell} (Apache-2.0) or ${FLUX_HUB_REPOS.dev} (non-commercial, gated), ` +
    'whose files and revisions the containers pin; give another FLUX.1 as an S3 folder of the four files'
  );
}
