import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { ModelType } from '../shared/models';
import { headerLength, parseHeader } from '../shared/safetensors';
import { ByteReader } from '../shared/byte-reader';
import { loraFileInvalid, registryConflict } from './errors';
import { inspectLora, type LoraFacts } from './lora-header';
import { readTarGz, type TarEntries as Entries } from '../shared/s3-tar-gz';
import type { TarEntry } from '../shared/tar';
import type { S3Object } from './training-output';

/**
 * Copies the trained LoRA out of the training job's model.tar.gz into a file of its own, streamed
 * end to end (S3 → gunzip → tar → hash → multipart upload), so that memory stays bounded whatever
 * the file's size. The training container writes `<output_name>.safetensors` and
 * `training-metadata.json` to /opt/ml/model (containers/training/README.md), which SageMaker tars
 * at the archive's top level: exactly one top-level `.safetensors` is the LoRA.
 */

export interface CopiedLora {
  readonly s3Uri: string;
  readonly sha256: string;
  readonly sizeBytes: number;
  readonly facts: LoraFacts;
}

const SUFFIX = '.safetensors';

/** True for the LoRA's entry; refuses an entry whose path leaves the archive, or a LoRA that is not a regular file. */
function isLoraEntry(entry: TarEntry, where: string): boolean {
  const segments = entry.path.split('/').filter((part) => part !== '' && part !== '.');
  if (entry.path.startsWith('/') || segments.includes('..')) {
    throw loraFileInvalid(`${where} holds ${JSON.stringify(entry.path)}, a path outside the archive's folder: it is not a training output of this pipeline.`);
  }
  // Only the top level (`name` or `./name`): that is /opt/ml/model itself.
  if (segments.length !== 1 || !entry.path.endsWith(SUFFIX)) return false;
  if (entry.type !== 'file') throw loraFileInvalid(`${where} holds ${entry.path} as a ${entry.type}, not a regular file; the LoRA must be the file the training saved.`);
  return true;
}

/** The first LoRA entry; the names seen before it say what the archive held when there is none. */
async function findLora(entries: Entries, where: string): Promise<{ entry: TarEntry; data: AsyncIterable<Buffer> }> {
  const others: string[] = [];
  for (let next = await entries.next(); !next.done; next = await entries.next()) {
    if (isLoraEntry(next.value.entry, where)) return next.value;
    if (next.value.entry.type === 'file') others.push(next.value.entry.path);
  }
  const held = others.length > 0 ? `it holds ${others.slice(0, 5).join(', ')}${others.length > 5 ? ` and ${others.length - 5} more` : ''}` : 'it holds no files';
  throw loraFileInvalid(`The training job saved no .safetensors file at the top of ${where} (${held}); check the training logs for the save step.`);
}

/** The rest of the archive, read to its end: a second LoRA, or an unsafe path, refuses the copy before it completes. */
async function checkRest(entries: Entries, first: TarEntry, where: string): Promise<void> {
  for (let next = await entries.next(); !next.done; next = await entries.next()) {
    if (isLoraEntry(next.value.entry, where)) {
      throw loraFileInvalid(
        `The training job saved several .safetensors files at the top of ${where} (${first.path}, ${next.value.entry.path}, ...); a run registers exactly one LoRA. ` +
          'Keep only the final LoRA in /opt/ml/model (intermediate saves belong in the checkpoint folder).',
      );
    }
  }
}

/**
 * Streams the archive, checks the LoRA's safetensors header is of `modelType` before anything is
 * written, asks `destination` where to put it (the caller allocates the version there), and
 * uploads it with `If-None-Match: *`: the copy never replaces an object. Any refusal aborts the
 * upload, so the destination exists only for a complete, valid file.
 */
export async function copyLora(s3: S3Client, archive: S3Object, modelType: ModelType, destination: (facts: LoraFacts) => Promise<S3Object>): Promise<CopiedLora> {
  const where = `s3://${archive.bucket}/${archive.key}`;
  // An unreadable archive (not S3 or the network) is LoraFileInvalid, naming it.
  const invalid = (reason: string | undefined) => loraFileInvalid(`${where} is not a readable model.tar.gz: ${reason}.`);
  return readTarGz(s3, archive.bucket, archive.key, async (entries) => {
    const { entry, data } = await findLora(entries, where);
    const file = new ByteReader(data);
    const { head, facts } = await readHead(file, entry, `${where} (${entry.path})`, modelType);
    const target = await destination(facts);

    const hash = createHash('sha256');
    let sizeBytes = 0;
    async function* copied(): AsyncGenerator<Buffer> {
      for await (const part of concat(head, file.stream({ count: Number.MAX_SAFE_INTEGER }))) {
        hash.update(part);
        sizeBytes += part.length;
        yield part;
      }
      // Before the last part is sent, so a bad archive leaves no object behind.
      await checkRest(entries, entry, where);
    }
    await upload(s3, target, Readable.from(copied()));
    return { s3Uri: `s3://${target.bucket}/${target.key}`, sha256: hash.digest('hex'), sizeBytes, facts };
  }, invalid);
}

async function* concat(first: Buffer, rest: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  yield first;
  yield* rest;
}

/** The safetensors length and header, read off the entry's stream (at most 16 MB, see MAX_HEADER_BYTES), and the LoRA's facts. */
async function readHead(file: ByteReader, entry: TarEntry, where: string, modelType: ModelType): Promise<{ head: Buffer; facts: LoraFacts }> {
  try {
    const prefix = (await file.read(8)) ?? Buffer.alloc(0);
    const length = headerLength(prefix, entry.size);
    const json = (await file.read(length)) ?? Buffer.alloc(0);
    const facts = inspectLora(parseHeader(json, entry.size), modelType);
    return { head: Buffer.concat([prefix, json]), facts };
  } catch (error) {
    if ((error as Error).name === 'TarError' || (error as { code?: unknown }).code !== undefined) throw error;
    throw loraFileInvalid(`${where} cannot be served by the shared endpoint: ${(error as Error).message}.`);
  }
}

async function upload(s3: S3Client, target: S3Object, body: Readable): Promise<void> {
  // No encryption parameters: the bucket's default (SSE-KMS with the pipeline key) applies.
  const transfer = new Upload({ client: s3, params: { Bucket: target.bucket, Key: target.key, Body: body, IfNoneMatch: '*', ContentType: 'application/octet-stream' } });
  try {
    await transfer.done();
  } catch (error) {
    if ((error as Error).name === 'PreconditionFailed') {
      throw registryConflict(
        `s3://${target.bucket}/${target.key} already exists, although its version was just allocated: the registry's head item is behind the copies. ` +
          "Set the head item's \"latest\" to the highest version under that prefix, then run again.",
      );
    }
    throw error;
  }
}
