import { type Readable, pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { type TarEntry, tarEntries } from './tar';

/** An archive's entries, as tarEntries yields them. */
export type TarEntries = AsyncGenerator<{ entry: TarEntry; data: AsyncIterable<Buffer> }>;

/** Whether an error means the archive itself is unreadable (a tar or gunzip fault), not S3 or the network. */
export function isArchiveFault(error: unknown): boolean {
  const { name, code } = error as { name?: string; code?: string };
  return name === 'TarError' || (typeof code === 'string' && code.startsWith('Z_'));
}

/**
 * Streams s3://bucket/key (a tar.gz: SageMaker's model.tar.gz or output.tar.gz) through gunzip into
 * the tar reader and hands its entries to `read`. An archive fault thrown meanwhile becomes
 * `invalid(its message)`; S3 and network errors keep their own names, for the state to retry.
 */
export async function readTarGz<T>(s3: S3Client, bucket: string, key: string, read: (entries: TarEntries) => Promise<T>, invalid: (reason: string | undefined) => Error): Promise<T> {
  const response = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  if (response.Body === undefined) throw new Error(`S3 returned no body for s3://${bucket}/${key}`);
  const body = response.Body as Readable;
  try {
    // pipeline() passes an S3 read error on to the gunzip stream, which the tar reader iterates.
    return await read(tarEntries(pipeline(body, createGunzip(), () => undefined)));
  } catch (error) {
    throw isArchiveFault(error) ? invalid((error as { message?: string }).message) : error;
  } finally {
    body.destroy();
  }
}
