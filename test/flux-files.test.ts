import { FLUX_FILES, fluxBaseModelProblem, fluxFileNames, fluxVariantOfHubId, isGatedHubModel } from '../lambda/shared/flux-files';

describe('FLUX.1 base models', () => {
  test('the variant of a Hub id is known only for the two pinned repos', () => {
    expect(fluxVariantOfHubId('black-forest-labs/FLUX.1-dev')).toBe('dev');
    expect(fluxVariantOfHubId('black-forest-labs/FLUX.1-schnell')).toBe('schnell');
    for (const id of ['black-forest-labs/FLUX.1-Dev', 'black-forest-labs/FLUX.1-dev-onnx', 'someone/FLUX.1-dev', 's3://m/flux/']) expect([id, fluxVariantOfHubId(id)]).toEqual([id, undefined]);
  });

  test('only FLUX.1-dev needs a token', () => {
    expect(isGatedHubModel('black-forest-labs/FLUX.1-dev')).toBe(true);
    expect(isGatedHubModel('black-forest-labs/FLUX.1-schnell')).toBe(false);
    expect(isGatedHubModel('stabilityai/stable-diffusion-xl-base-1.0')).toBe(false);
    expect(isGatedHubModel('s3://models/flux1-dev/')).toBe(false);
  });

  test('an S3 folder holds the transformer named for its variant and the three shared files', () => {
    expect(fluxFileNames('dev')).toEqual(['flux1-dev.safetensors', 'ae.safetensors', 'clip_l.safetensors', 't5xxl_fp16.safetensors']);
    expect(fluxFileNames('schnell')[0]).toBe(FLUX_FILES.transformer.schnell);
  });

  test('a flux1 base model is a pinned Hub id or an S3 folder, never a single file or another repo', () => {
    expect(fluxBaseModelProblem('black-forest-labs/FLUX.1-schnell')).toBeUndefined();
    expect(fluxBaseModelProblem('s3://models/flux/')).toBeUndefined();
    expect(fluxBaseModelProblem('s3://models/flux/flux1-dev.safetensors')).toMatch(/folder \(ending in '\/'\) holding flux1-dev\.safetensors or flux1-schnell\.safetensors, ae\.safetensors, clip_l\.safetensors and t5xxl_fp16\.safetensors, not a single file$/);
    expect(fluxBaseModelProblem('city96/FLUX.1-dev-gguf')).toMatch(/^a flux1 base model from the Hub is black-forest-labs\/FLUX\.1-schnell/);
  });
});
