import { deflateSync, inflateSync } from 'node:zlib';

/**
 * A PNG reader and writer for what the inference server emits (PIL's `image.save(format="PNG")` of an
 * RGB image): 8-bit RGB or RGBA, not interlaced, any of the five row filters, IDAT in any number of
 * chunks. Every chunk's CRC is checked. Anything else is refused with a PngError saying what it is.
 */

/** Raw pixels, row by row, `channels` bytes a pixel. */
export interface RawImage {
  readonly width: number;
  readonly height: number;
  readonly channels: 3 | 4;
  readonly data: Uint8Array;
}

export class PngError extends Error {
  override readonly name = 'PngError';
}

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
/** 64 megapixels: far above the server's largest image (1536 × 1536 × 4 images), and a bound on what inflate may allocate. */
export const MAX_PIXELS = 64 * 1024 * 1024;
const CHANNELS_OF_COLOR_TYPE: Readonly<Record<number, 3 | 4>> = { 2: 3, 6: 4 };
const COLOR_TYPE_OF_CHANNELS = { 3: 2, 4: 6 } as const;

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 as PNG computes it (ISO 3309), over the chunk type and data. (zlib.crc32 needs Node 22.2.) */
export function crc32(...parts: Uint8Array[]): number {
  let c = 0xffffffff;
  for (const part of parts) for (const byte of part) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

interface Header {
  readonly width: number;
  readonly height: number;
  readonly channels: 3 | 4;
}

function readHeader(data: Buffer): Header {
  if (data.length !== 13) throw new PngError(`IHDR is ${data.length} bytes, not 13`);
  const width = data.readUInt32BE(0);
  const height = data.readUInt32BE(4);
  const [bitDepth, colorType, compression, filter, interlace] = data.subarray(8);
  const channels = CHANNELS_OF_COLOR_TYPE[colorType];
  if (bitDepth !== 8 || channels === undefined) {
    throw new PngError(`only 8-bit RGB or RGBA PNGs are read (what the server writes); this one has bit depth ${bitDepth} and color type ${colorType}`);
  }
  if (compression !== 0 || filter !== 0) throw new PngError(`unknown compression (${compression}) or filter method (${filter})`);
  if (interlace !== 0) throw new PngError('interlaced PNGs are not read (the server never writes them)');
  if (width === 0 || height === 0 || width * height > MAX_PIXELS) throw new PngError(`${width} × ${height} pixels is empty or over ${MAX_PIXELS}`);
  return { width, height, channels };
}

/** The chunks of a PNG, each CRC-checked, up to IEND. */
function* chunks(png: Buffer): Generator<{ type: string; data: Buffer }> {
  if (png.length < SIGNATURE.length || !png.subarray(0, SIGNATURE.length).equals(SIGNATURE)) throw new PngError('not a PNG (its signature is missing)');
  let offset = SIGNATURE.length;
  while (offset + 12 <= png.length) {
    const length = png.readUInt32BE(offset);
    const typeBytes = png.subarray(offset + 4, offset + 8);
    const end = offset + 12 + length;
    if (end > png.length) throw new PngError(`chunk ${typeBytes.toString('latin1')} runs past the end of the file (truncated?)`);
    const data = png.subarray(offset + 8, offset + 8 + length);
    if (png.readUInt32BE(offset + 8 + length) !== crc32(typeBytes, data)) throw new PngError(`chunk ${typeBytes.toString('latin1')} fails its CRC (corrupted)`);
    const type = typeBytes.toString('latin1');
    yield { type, data };
    if (type === 'IEND') return;
    offset = end;
  }
  throw new PngError('no IEND chunk (truncated?)');
}

function paeth(left: number, up: number, upLeft: number): number {
  const p = left + up - upLeft;
  const pa = Math.abs(p - left);
  const pb = Math.abs(p - up);
  const pc = Math.abs(p - upLeft);
  return pa <= pb && pa <= pc ? left : pb <= pc ? up : upLeft;
}

/** The byte a filter predicts for position i of a row, from the row so far (`row`) and the one above (`prior`). */
function predict(filter: number, row: Uint8Array, prior: Uint8Array, i: number, bpp: number): number {
  const left = i >= bpp ? row[i - bpp] : 0;
  const up = prior[i];
  switch (filter) {
    case 0:
      return 0;
    case 1:
      return left;
    case 2:
      return up;
    case 3:
      return (left + up) >> 1;
    case 4:
      return paeth(left, up, i >= bpp ? prior[i - bpp] : 0);
    default:
      throw new PngError(`unknown row filter ${filter}`);
  }
}

export function decodePng(bytes: Uint8Array): RawImage {
  const png = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let header: Header | undefined;
  const idat: Buffer[] = [];
  for (const { type, data } of chunks(png)) {
    if (type === 'IHDR') header = readHeader(data);
    else if (type === 'IDAT') idat.push(data);
  }
  if (header === undefined) throw new PngError('no IHDR chunk');
  const { width, height, channels } = header;
  const stride = width * channels;
  const expected = height * (stride + 1);
  let filtered: Buffer;
  try {
    filtered = inflateSync(Buffer.concat(idat), { maxOutputLength: expected });
  } catch (error) {
    throw new PngError(`its image data does not inflate to ${expected} bytes (${(error as Error).message})`);
  }
  if (filtered.length !== expected) throw new PngError(`its image data is ${filtered.length} bytes, not the ${expected} a ${width} × ${height} image takes`);
  const data = new Uint8Array(height * stride);
  let prior: Uint8Array = new Uint8Array(stride);
  for (let y = 0; y < height; y++) {
    const filter = filtered[y * (stride + 1)];
    const source = filtered.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const row = data.subarray(y * stride, (y + 1) * stride);
    for (let i = 0; i < stride; i++) row[i] = (source[i] + predict(filter, row, prior, i, channels)) & 0xff;
    prior = row;
  }
  return { width, height, channels, data };
}

function chunk(type: string, data: Uint8Array): Buffer {
  const typeBytes = Buffer.from(type, 'latin1');
  const frame = Buffer.alloc(12 + data.length);
  frame.writeUInt32BE(data.length, 0);
  typeBytes.copy(frame, 4);
  frame.set(data, 8);
  frame.writeUInt32BE(crc32(typeBytes, data), 8 + data.length);
  return frame;
}

/** A PNG of `image`, every row with `filter` (0–4; Sub by default, which suits photographs). */
export function encodePng(image: RawImage, filter: 0 | 1 | 2 | 3 | 4 = 1): Buffer {
  const { width, height, channels, data } = image;
  const stride = width * channels;
  if (data.length !== height * stride) throw new PngError(`${data.length} bytes of pixels for ${width} × ${height} × ${channels}`);
  const filtered = Buffer.alloc(height * (stride + 1));
  let prior: Uint8Array = new Uint8Array(stride);
  for (let y = 0; y < height; y++) {
    const row = data.subarray(y * stride, (y + 1) * stride);
    filtered[y * (stride + 1)] = filter;
    for (let i = 0; i < stride; i++) filtered[y * (stride + 1) + 1 + i] = (row[i] - predict(filter, row, prior, i, channels)) & 0xff;
    prior = row;
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, COLOR_TYPE_OF_CHANNELS[channels], 0, 0, 0], 8);
  return Buffer.concat([SIGNATURE, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(filtered)), chunk('IEND', new Uint8Array(0))]);
}
