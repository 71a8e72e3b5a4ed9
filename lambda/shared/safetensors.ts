/**
 * The header of a `.safetensors` file: an 8-byte little-endian length N, then N bytes of JSON with
 * one entry per tensor (`dtype`, `shape`, `data_offsets` into the data after the header) and an
 * optional `__metadata__` object of strings (https://github.com/huggingface/safetensors, "Format").
 * Reading it needs only the first 8 + N bytes of the file, never the weights.
 */

/** A LoRA's header is a few hundred KB; anything far larger is not one (the server uses the same bound). */
export const MAX_HEADER_BYTES = 16 * 1024 * 1024;

export interface TensorEntry {
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly dataOffsets: readonly [number, number];
}

export interface SafetensorsHeader {
  readonly tensors: ReadonlyMap<string, TensorEntry>;
  readonly metadata: Readonly<Record<string, string>>;
}

/** The file is not a readable safetensors file; the message says why. */
export class SafetensorsError extends Error {
  override readonly name = 'SafetensorsError';
}

/** N, from the first 8 bytes; throws when it cannot be a header of a file of `fileSize` bytes. */
export function headerLength(prefix: Uint8Array, fileSize: number): number {
  if (prefix.length < 8 || fileSize < 8) throw new SafetensorsError(`it is ${fileSize} bytes, shorter than the 8-byte header length of a safetensors file`);
  const length = Buffer.from(prefix.buffer, prefix.byteOffset, 8).readBigUInt64LE(0);
  if (length < 2n || length > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(`its header length ${length} is outside 2..${MAX_HEADER_BYTES} bytes: it is not a safetensors file`);
  }
  if (Number(length) > fileSize - 8) throw new SafetensorsError(`it is truncated: its header announces ${length} bytes, the file has ${fileSize - 8} after the length`);
  return Number(length);
}

function isOffsets(value: unknown): value is [number, number] {
  return Array.isArray(value) && value.length === 2 && value.every((o) => Number.isSafeInteger(o) && o >= 0) && value[0] <= value[1];
}

function tensorEntry(name: string, value: unknown, dataBytes: number): TensorEntry {
  const entry = typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {};
  const { dtype, shape, data_offsets: offsets } = entry;
  if (typeof dtype !== 'string' || !Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new SafetensorsError(`its header is corrupt: tensor ${name} has no dtype or shape`);
  }
  if (!isOffsets(offsets)) throw new SafetensorsError(`its header is corrupt: tensor ${name} has no valid data_offsets`);
  if (offsets[1] > dataBytes) throw new SafetensorsError(`it is truncated: tensor ${name} ends at byte ${offsets[1]} of the data, which holds ${dataBytes}`);
  return { dtype, shape: shape as number[], dataOffsets: offsets };
}

/** Parses the N header bytes of a file of `fileSize` bytes; throws SafetensorsError naming the problem. */
export function parseHeader(bytes: Uint8Array, fileSize: number): SafetensorsHeader {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (error) {
    throw new SafetensorsError(`its header is not JSON (${(error as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new SafetensorsError('its header is not a JSON object');
  const { __metadata__: rawMetadata, ...entries } = json as Record<string, unknown>;
  const metadata = rawMetadata ?? {};
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata) || !Object.values(metadata).every((v) => typeof v === 'string')) {
    throw new SafetensorsError('its header is corrupt: __metadata__ must map names to strings');
  }
  const dataBytes = fileSize - 8 - bytes.length;
  const tensors = new Map(Object.entries(entries).map(([name, value]) => [name, tensorEntry(name, value, dataBytes)] as const));
  return { tensors, metadata: metadata as Record<string, string> };
}
