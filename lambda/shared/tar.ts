import { ByteReader } from './byte-reader';

/**
 * A small streaming reader of tar archives (POSIX ustar and GNU; POSIX.1-2001 pax headers for a
 * long path or a large size), enough to read files out of SageMaker's model.tar.gz and
 * output.tar.gz (the registry's LoRA, the samples) without unpacking them to disk. The format: 512-byte header blocks, each entry's data padded to a
 * multiple of 512, and the archive ending with two zero blocks (GNU tar manual, "Basic Tar Format").
 */

export const BLOCK = 512;

export type TarEntryType = 'file' | 'directory' | 'symlink' | 'hardlink' | 'other';

export interface TarEntry {
  /** The path as stored (a GNU long name or pax `path` applied). */
  readonly path: string;
  readonly type: TarEntryType;
  /** Bytes of data the entry holds. */
  readonly size: number;
}

/** The stream is not a tar archive this reader can read, or it is cut short; the message says where. */
export class TarError extends Error {
  override readonly name = 'TarError';
}

/** Type flags (ustar's, GNU's and pax's) and what each is. */
const TYPES: Record<string, TarEntryType> = { '0': 'file', '\0': 'file', '7': 'file', '1': 'hardlink', '2': 'symlink', '5': 'directory' };
const GNU_LONG_NAME = 'L';
const GNU_LONG_LINK = 'K';
const PAX_HEADER = 'x';
const PAX_GLOBAL = 'g';
/** Metadata entries (a long name, pax records) are small; anything larger is not one. */
const MAX_METADATA_BYTES = 1024 * 1024;

function text(block: Buffer, start: number, length: number): string {
  const field = block.subarray(start, start + length);
  const end = field.indexOf(0);
  return field.subarray(0, end === -1 ? field.length : end).toString('utf8');
}

/** A numeric field: octal digits (NUL- or space-terminated), or GNU's base-256 when the high bit is set. */
function numeric(block: Buffer, start: number, length: number, what: string, offset: number): number {
  const field = block.subarray(start, start + length);
  if (field[0] & 0x80) {
    let value = BigInt(field[0] & 0x7f);
    for (const byte of field.subarray(1)) value = (value << 8n) | BigInt(byte);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new TarError(`the header at byte ${offset} has a ${what} too large to read`);
    return Number(value);
  }
  const digits = text(block, start, length).trim();
  if (digits === '') return 0;
  if (!/^[0-7]+$/.test(digits)) throw new TarError(`the header at byte ${offset} has a ${what} that is not octal (${JSON.stringify(digits)})`);
  return parseInt(digits, 8);
}

/** The header's checksum: the sum of its bytes with the checksum field read as eight spaces. */
function checksumOf(block: Buffer): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i];
  return sum;
}

interface RawHeader {
  readonly name: string;
  readonly typeflag: string;
  readonly size: number;
}

function parseHeader(block: Buffer, offset: number): RawHeader {
  const magic = block.subarray(257, 263).toString('latin1');
  const ustar = magic === 'ustar\0';
  if (!ustar && magic !== 'ustar ') throw new TarError(`the block at byte ${offset} is not a ustar or GNU tar header`);
  if (numeric(block, 148, 8, 'checksum', offset) !== checksumOf(block)) throw new TarError(`the header at byte ${offset} fails its checksum: the archive is corrupt`);
  const name = text(block, 0, 100);
  // ustar splits a long path into prefix/name; GNU keeps other fields where ustar has the prefix.
  const prefix = ustar ? text(block, 345, 155) : '';
  return { name: prefix ? `${prefix}/${name}` : name, typeflag: String.fromCharCode(block[156]), size: numeric(block, 124, 12, 'size', offset) };
}

/** pax records: `<length> <key>=<value>\n`, each length counting the whole record. */
function paxRecords(data: Buffer, offset: number): Record<string, string> {
  const records: Record<string, string> = {};
  let at = 0;
  while (at < data.length) {
    const space = data.indexOf(0x20, at);
    const length = space === -1 ? NaN : Number(data.subarray(at, space).toString('latin1'));
    if (!Number.isSafeInteger(length) || length <= 0 || at + length > data.length) throw new TarError(`the pax header at byte ${offset} is malformed`);
    const record = data.subarray(space + 1, at + length - 1).toString('utf8');
    const equals = record.indexOf('=');
    if (equals > 0) records[record.slice(0, equals)] = record.slice(equals + 1);
    at += length;
  }
  return records;
}

async function readMetadata(reader: ByteReader, header: RawHeader, offset: number): Promise<Buffer> {
  if (header.size > MAX_METADATA_BYTES) throw new TarError(`the metadata entry at byte ${offset} is ${header.size} bytes: not a tar header extension`);
  const data = await reader.read(padded(header.size));
  if (data === undefined || data.length < padded(header.size)) throw new TarError(`the archive ends inside the metadata entry at byte ${offset}: it is truncated`);
  return data.subarray(0, header.size);
}

const padded = (size: number) => Math.ceil(size / BLOCK) * BLOCK;

/**
 * The archive's entries in order, each with its data as a stream. A consumer may read an entry's
 * data or not: whatever it leaves is skipped before the next entry. After the end-of-archive block
 * the rest of the source is drained, so that a decompressor in front checks its trailer.
 */
export async function* tarEntries(source: AsyncIterable<Uint8Array>): AsyncGenerator<{ entry: TarEntry; data: AsyncIterable<Buffer> }> {
  const reader = new ByteReader(source);
  // Set by a GNU long name or a pax header, for the entry that follows.
  let next: { path?: string; size?: number } = {};
  for (;;) {
    const offset = reader.offset;
    const block = await reader.read(BLOCK);
    if (block === undefined) throw new TarError(`the archive ends at byte ${offset} without its end-of-archive block: it is truncated`);
    if (block.length < BLOCK) throw new TarError(`the archive ends inside the header at byte ${offset}: it is truncated`);
    if (block.every((byte) => byte === 0)) break;
    const header = parseHeader(block, offset);

    if (header.typeflag === GNU_LONG_NAME) {
      next = { ...next, path: text(await readMetadata(reader, header, offset), 0, header.size) };
      continue;
    }
    if (header.typeflag === PAX_HEADER) {
      const records = paxRecords(await readMetadata(reader, header, offset), offset);
      const size = records.size === undefined ? undefined : Number(records.size);
      if (size !== undefined && !(Number.isSafeInteger(size) && size >= 0)) throw new TarError(`the pax header at byte ${offset} has an invalid size ${JSON.stringify(records.size)}`);
      next = { path: records.path ?? next.path, size: size ?? next.size };
      continue;
    }
    if (header.typeflag === GNU_LONG_LINK || header.typeflag === PAX_GLOBAL) {
      await readMetadata(reader, header, offset);
      continue;
    }

    const type = TYPES[header.typeflag] ?? 'other';
    // Links and directories carry no data whatever their size field says (pax and GNU agree).
    const size = type === 'file' || type === 'other' ? (next.size ?? header.size) : 0;
    const entry: TarEntry = { path: next.path ?? header.name, type, size };
    next = {};
    const left = { count: size };
    yield { entry, data: reader.stream(left) };
    if (!(await reader.skip(left.count)) || !(await reader.skip(padded(size) - size))) {
      throw new TarError(`the archive ends inside the data of ${entry.path}: it is truncated`);
    }
  }
  await reader.skip(Number.MAX_SAFE_INTEGER);
}
