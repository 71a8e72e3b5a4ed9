import { GetObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, NoSuchKey, type S3Client } from '@aws-sdk/client-s3';
import type { ListedObject } from './dataset';
import type { DatasetStore } from './prepare';

/** The datasets bucket through an S3 client. Errors other than a missing object propagate, for the workflow to retry. */
export function s3DatasetStore(client: S3Client): DatasetStore {
  return {
    async list(bucket, prefix) {
      const objects: ListedObject[] = [];
      let token: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
        for (const object of page.Contents ?? []) {
          if (object.Key !== undefined && object.LastModified !== undefined) {
            objects.push({ key: object.Key, size: object.Size ?? 0, lastModified: object.LastModified });
          }
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return objects;
    },
    async read(bucket, key, maxBytes) {
      try {
        // One byte more than allowed is enough to tell an object that is too large.
        const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=0-${maxBytes}` }));
        return (await object.Body?.transformToString('utf-8')) ?? '';
      } catch (error) {
        if (error instanceof NoSuchKey || (error as Error).name === 'NoSuchKey') return undefined;
        // A range of an empty object is not satisfiable; it was emptied since it was listed.
        if ((error as Error).name === 'InvalidRange') return '';
        throw error;
      }
    },
    async uploadsInProgress(bucket, prefix) {
      const page = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix, MaxUploads: 10 }));
      return (page?.Uploads ?? []).flatMap((upload) => (upload.Key === undefined ? [] : [upload.Key]));
    },
  };
}
