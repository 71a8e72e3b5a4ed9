import { GetObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, NoSuchKey, type S3Client } from '@aws-sdk/client-s3';
import type { ListedObject } from './dataset';
import type { DatasetFolder } from './preflight';
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
    async head(bucket, key, bytes) {
      try {
        // A ranged read: the pre-flight needs an image's header, not the image.
        const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=0-${bytes - 1}` }));
        return (await object.Body?.transformToByteArray()) ?? new Uint8Array();
      } catch (error) {
        if (error instanceof NoSuchKey || (error as Error).name === 'NoSuchKey') return undefined;
        if ((error as Error).name === 'InvalidRange') return new Uint8Array();
        throw error;
      }
    },
    async uploadsInProgress(bucket, prefix) {
      const page = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix, MaxUploads: 10 }));
      return (page?.Uploads ?? []).flatMap((upload) => (upload.Key === undefined ? [] : [upload.Key]));
    },
  };
}

/**
 * One dataset folder of the bucket as the pre-flight reads it: the listing Prepare already made (so
 * the checks see the folder that settled), and ranged reads of its objects. An empty object is not
 * read, since S3 refuses any byte range of it.
 */
export function s3DatasetFolder(store: DatasetStore, bucket: string, prefix: string, files: ReadonlyMap<string, ListedObject>): DatasetFolder {
  const sizeOf = (path: string) => files.get(path)?.size ?? 0;
  return {
    list: async () => [...files].map(([path, object]) => ({ path, size: object.size })),
    head: async (path, bytes) => (sizeOf(path) === 0 ? new Uint8Array() : store.head(bucket, prefix + path, bytes)),
  };
}
