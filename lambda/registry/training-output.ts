import { loraFileInvalid } from './errors';

/**
 * Where the registry function reads from and writes to, in the artifacts bucket: the training
 * jobs' output under `models/`, and the LoRA copies the shared endpoint reads under `loras/`
 * (the server's LORA_BUCKET and LORA_PREFIX).
 */
export interface LoraStorage {
  readonly bucket: string;
  /** e.g. `models/` */
  readonly modelsPrefix: string;
  /** e.g. `loras/` */
  readonly lorasPrefix: string;
}

export interface S3Object {
  readonly bucket: string;
  readonly key: string;
}

/**
 * The training job's model.tar.gz, checked to be one of the pipeline's training outputs before
 * anything is read: DescribeTrainingJob's ModelArtifacts.S3ModelArtifacts is
 * `<S3OutputPath><job>/output/model.tar.gz` for the default GZIP output (SageMaker API
 * reference, ModelArtifacts).
 */
export function trainingArchive(s3ModelArtifacts: string, storage: LoraStorage): S3Object {
  const match = /^s3:\/\/([^/]+)\/(.+)$/.exec(s3ModelArtifacts);
  if (!match) throw loraFileInvalid(`The training job's S3ModelArtifacts ${JSON.stringify(s3ModelArtifacts)} is not an s3://bucket/key URI.`);
  const [, bucket, key] = match;
  if (!key.endsWith('.tar.gz')) {
    throw loraFileInvalid(
      `The training output ${s3ModelArtifacts} is not a model.tar.gz: the Train LoRA state must keep SageMaker's default (GZIP) output, from which the LoRA is copied.`,
    );
  }
  const segments = key.split('/');
  if (bucket !== storage.bucket || !key.startsWith(storage.modelsPrefix) || segments.some((part) => part === '..' || part === '.' || part === '')) {
    throw loraFileInvalid(`The training output ${s3ModelArtifacts} is not under s3://${storage.bucket}/${storage.modelsPrefix}, where the pipeline's training jobs write; it is not read.`);
  }
  return { bucket, key };
}

/** Where version `version` of LoRA `name` is copied to: `loras/<name>/<version>.safetensors`, never overwritten. */
export function loraCopyKey(storage: LoraStorage, name: string, version: number): S3Object {
  return { bucket: storage.bucket, key: `${storage.lorasPrefix}${name}/${version}.safetensors` };
}
