import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { SAGEMAKER_NAME } from '../shared/names';
import type { SmokeFile, SmokeStore } from './smoke';

export interface SmokeStorage {
  readonly bucket: string;
  /** The training output prefix, `models/`: the images go to `<prefix><job>/smoke/`. */
  readonly modelsPrefix: string;
  /** The pipeline key: the images are encrypted with it, as everything else in the bucket. */
  readonly keyArn: string;
}

/** The smoke images' folder of a run: `models/<job>/smoke/`. */
export function smokePrefix(storage: SmokeStorage, trainingJobName: string): string {
  // The job names Prepare gives (SageMaker's rule): the key prefix can hold nothing else.
  if (!SAGEMAKER_NAME.test(trainingJobName)) throw new Error(`trainingJobName ${JSON.stringify(trainingJobName)} is not a SageMaker training job name`);
  return `${storage.modelsPrefix}${trainingJobName}/smoke/`;
}

/** Writes the images under the run's smoke folder, SSE-KMS with the pipeline key; a rerun overwrites them. */
export function s3SmokeStore(s3: S3Client, storage: SmokeStorage, trainingJobName: string): SmokeStore {
  const prefix = smokePrefix(storage, trainingJobName);
  return {
    bucket: storage.bucket,
    async put(file: SmokeFile, png: Uint8Array): Promise<string> {
      const key = `${prefix}${file}`;
      await s3.send(
        new PutObjectCommand({
          Bucket: storage.bucket,
          Key: key,
          Body: png,
          ContentType: 'image/png',
          ServerSideEncryption: 'aws:kms',
          SSEKMSKeyId: storage.keyArn,
          BucketKeyEnabled: true,
        }),
      );
      return key;
    },
  };
}
