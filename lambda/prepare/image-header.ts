/**
 * Reads an image's size from its first bytes, refusing what Pillow (which the training container and
 * kohya-ss open every image with) refuses while it opens the file: Pillow identifies an image by its
 * content, not its name, so a JPEG named .png is fine and a text file named .png is not. Decoding
 * the pixel data is left to the container; only the header is read here.
 */

export type ImageFormat = 'png' | 'jpeg' | 'webp' | 'bmp' | 'gif';

export type ImageHeader =
  | { readonly kind: 'sized'; readonly format: ImageFormat; readonly width: number; readonly height: number }
  /** A JPEG whose frame header (SOF) lies beyond the bytes read: its start is valid, its size unknown. */
  | { readonly kind: 'unsized'; readonly format: 'jpeg' }
  | { readonly kind: 'invalid'; readonly reason: string };

/** Pillow refuses an image of more pixels than this (Image.MAX_IMAGE_PIXELS x 2, a DecompressionBombError). */
export const MAX_PIXELS = 2 * Math.floor((1024 * 1024 * 1024) / 4 / 3);

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/**
 * The header of the image whose first bytes are `bytes`; `complete` says they are the whole file
 * (so running out of bytes means the file is truncated, not that more must be read). With the
 * file's size, a BMP whose pixel data would end past it is refused too.
 */
export function readImageHeader(bytes: Uint8Array, complete: boolean, fileSize?: number): ImageHeader {
  const header = parse(bytes, complete, fileSize);
  if (header.kind !== 'sized') return header;
  if (header.width < 1 || header.height < 1) return invalid(`it is ${header.width}x${header.height} pixels, an empty image`);
  if (header.width * header.height > MAX_PIXELS) return invalid(`it has ${header.width}x${header.height} pixels, more than Pillow opens (${MAX_PIXELS})`);
  return header;
}

function parse(bytes: Uint8Array, complete: boolean, fileSize: number | undefined): ImageHeader {
  if (startsWith(bytes, PNG_SIGNATURE)) return png(bytes);
  if (startsWith(bytes, [0xff, 0xd8, 0xff])) return jpeg(bytes, complete);
  if (ascii(bytes, 0, 4) === 'RIFF' && ascii(bytes, 8, 4) === 'WEBP') return webp(bytes);
  if (ascii(bytes, 0, 2) === 'BM') return bmp(bytes, fileSize);
  if (ascii(bytes, 0, 6) === 'GIF87a' || ascii(bytes, 0, 6) === 'GIF89a') return gif(bytes);
  if (bytes.length === 0) return invalid('the file is empty');
  return invalid('its content is not a PNG, JPEG, WEBP, BMP or GIF image');
}

function invalid(reason: string): ImageHeader {
  return { kind: 'invalid', reason };
}

function startsWith(bytes: Uint8Array, prefix: readonly number[]): boolean {
  return bytes.length >= prefix.length && prefix.every((byte, index) => bytes[index] === byte);
}

function ascii(bytes: Uint8Array, offset: number, length: number): string {
  return bytes.length >= offset + length ? String.fromCharCode(...bytes.subarray(offset, offset + length)) : '';
}

const u16be = (b: Uint8Array, at: number) => (b[at] << 8) | b[at + 1];
const u16le = (b: Uint8Array, at: number) => b[at] | (b[at + 1] << 8);
const u24le = (b: Uint8Array, at: number) => b[at] | (b[at + 1] << 8) | (b[at + 2] << 16);
const u32be = (b: Uint8Array, at: number) => ((b[at] << 24) >>> 0) + ((b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]);
const u32le = (b: Uint8Array, at: number) => ((b[at + 3] << 24) >>> 0) + ((b[at + 2] << 16) | (b[at + 1] << 8) | b[at]);

/** Bit depths PNG allows for each colour type; Pillow refuses the others. */
const PNG_DEPTHS: Readonly<Record<number, readonly number[]>> = { 0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16] };

/** Signature, then the IHDR chunk (whose checksum Pillow verifies) with the size, depth and colour type. */
function png(bytes: Uint8Array): ImageHeader {
  if (bytes.length < 33) return invalid('the PNG ends inside its IHDR header');
  if (ascii(bytes, 12, 4) !== 'IHDR' || u32be(bytes, 8) < 13) return invalid('the PNG does not start with an IHDR header');
  if (crc32(bytes.subarray(12, 29)) !== u32be(bytes, 29)) return invalid('the PNG IHDR header fails its checksum');
  const depth = bytes[24];
  const colourType = bytes[25];
  if (!(PNG_DEPTHS[colourType] ?? []).includes(depth)) return invalid(`the PNG has an unknown mode (bit depth ${depth}, colour type ${colourType})`);
  return { kind: 'sized', format: 'png', width: u32be(bytes, 16), height: u32be(bytes, 20) };
}

/** Frame headers (SOFn and DHP): Pillow reads the size from each. */
const JPEG_FRAMES = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf, 0xde]);
/** Markers Pillow knows; of these, SOI, EOI, RSTn and JPGn carry no length. */
const isKnownMarker = (low: number) => low >= 0xc0 && low <= 0xfe;
const hasNoLength = (low: number) => low === 0xc8 || (low >= 0xd0 && low <= 0xd9) || (low >= 0xf0 && low <= 0xfd);

/**
 * Walks the markers from SOI to the start of scan as Pillow's JpegImageFile._open does: bytes
 * between markers are skipped, an unknown marker is refused, the frame header must be 8-bit with
 * 1, 3 or 4 components, and a quantization table must be whole.
 */
function jpeg(bytes: Uint8Array, complete: boolean): ImageHeader {
  let size: { width: number; height: number } | undefined;
  const end = (): ImageHeader => {
    if (!complete) return size ? { kind: 'sized', format: 'jpeg', ...size } : { kind: 'unsized', format: 'jpeg' };
    return invalid('the JPEG ends before its image data starts');
  };
  let current = 0xff;
  let at = 3;
  for (;;) {
    if (at >= bytes.length) return end();
    if (current !== 0xff) {
      current = bytes[at++];
      continue;
    }
    const low = bytes[at++];
    if (low === 0xff) continue; // padding: the second 0xFF starts the marker
    if (low === 0x00) {
      if (at >= bytes.length) return end();
      current = bytes[at++];
      continue;
    }
    if (!isKnownMarker(low)) return invalid(`the JPEG has no valid marker at byte ${at - 2}`);
    if (!hasNoLength(low)) {
      if (at + 2 > bytes.length) return end();
      const length = Math.max(0, u16be(bytes, at) - 2);
      at += 2;
      if (at + length > bytes.length) return end();
      const segment = bytes.subarray(at, at + length);
      at += length;
      const problem = JPEG_FRAMES.has(low) ? frameProblem(segment) : low === 0xdb ? quantizationProblem(segment) : undefined;
      if (problem) return invalid(problem);
      if (JPEG_FRAMES.has(low)) size = { width: u16be(segment, 3), height: u16be(segment, 1) };
      if (low === 0xda) return size ? { kind: 'sized', format: 'jpeg', ...size } : invalid('the JPEG has no frame header before its image data');
    }
    if (at >= bytes.length) return end();
    current = bytes[at++];
  }
}

function frameProblem(segment: Uint8Array): string | undefined {
  if (segment.length < 6) return 'the JPEG frame header is too short';
  if (segment[0] !== 8) return `the JPEG has ${segment[0]}-bit samples, which Pillow cannot handle`;
  if (![1, 3, 4].includes(segment[5])) return `the JPEG has ${segment[5]} components, which Pillow cannot handle`;
  return undefined;
}

function quantizationProblem(segment: Uint8Array): string | undefined {
  for (let at = 0; at < segment.length; ) {
    const tableLength = 1 + (segment[at] >> 4 === 0 ? 1 : 2) * 64;
    if (segment.length - at < tableLength) return 'the JPEG has a bad quantization table';
    at += tableLength;
  }
  return undefined;
}

/** RIFF/WEBP, then the first chunk: VP8X (canvas size), VP8L (lossless) or VP8 (lossy key frame). */
function webp(bytes: Uint8Array): ImageHeader {
  const chunk = ascii(bytes, 12, 4);
  if (chunk === 'VP8X' && bytes.length >= 30) return { kind: 'sized', format: 'webp', width: u24le(bytes, 24) + 1, height: u24le(bytes, 27) + 1 };
  if (chunk === 'VP8L' && bytes.length >= 25) {
    if (bytes[20] !== 0x2f) return invalid('the lossless WEBP has no valid signature');
    const bits = u32le(bytes, 21);
    return { kind: 'sized', format: 'webp', width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 };
  }
  if (chunk === 'VP8 ' && bytes.length >= 30) {
    if (bytes[23] !== 0x9d || bytes[24] !== 0x01 || bytes[25] !== 0x2a) return invalid('the lossy WEBP has no valid key frame');
    return { kind: 'sized', format: 'webp', width: u16le(bytes, 26) & 0x3fff, height: u16le(bytes, 28) & 0x3fff };
  }
  if (chunk === 'VP8X' || chunk === 'VP8L' || chunk === 'VP8 ') return invalid('the WEBP ends inside its header');
  return invalid('the WEBP has no VP8, VP8L or VP8X image chunk');
}

/** Bits per pixel Pillow's BMP reader handles. */
const BMP_DEPTHS = [1, 4, 8, 16, 24, 32];

/** Compressions Pillow's BMP reader handles: none, RLE8, RLE4, bit fields. */
const BMP_COMPRESSIONS = [0, 1, 2, 3];

/**
 * BM, then the DIB header: 12 bytes (OS/2, 16-bit sizes) or 40 to 124 bytes (Windows, 32-bit sizes,
 * a flipped height). Uncompressed pixel data must fit in the file where Pillow looks for it: after
 * the palette when the header's data offset points at the palette's start (BmpImageFile._bitmap).
 */
function bmp(bytes: Uint8Array, fileSize: number | undefined): ImageHeader {
  if (bytes.length < 18) return invalid('the BMP ends inside its header');
  const headerSize = u32le(bytes, 14);
  const os2 = headerSize === 12;
  if (!os2 && ![40, 52, 56, 64, 108, 124].includes(headerSize)) return invalid(`the BMP has an unsupported header type (${headerSize})`);
  if (bytes.length < (os2 ? 26 : 50)) return invalid('the BMP ends inside its header');
  const width = os2 ? u16le(bytes, 18) : u32le(bytes, 18);
  const height = os2 ? u16le(bytes, 20) : bytes[25] === 0xff ? 2 ** 32 - u32le(bytes, 22) : u32le(bytes, 22);
  const depth = u16le(bytes, os2 ? 24 : 28);
  const compression = os2 ? 0 : u32le(bytes, 30);
  if (!BMP_DEPTHS.includes(depth)) return invalid(`the BMP has an unsupported pixel depth (${depth})`);
  if (!BMP_COMPRESSIONS.includes(compression)) return invalid(`the BMP has an unsupported compression (${compression})`);
  if (fileSize !== undefined && (compression === 0 || compression === 3)) {
    const colors = (os2 ? 0 : u32le(bytes, 46)) || 2 ** depth;
    let offset = u32le(bytes, 10);
    if (offset === 14 + headerSize && depth <= 8) offset += (os2 ? 3 : 4) * colors;
    const end = offset + Math.floor((width * depth + 31) / 32) * 4 * height;
    if (end > fileSize) return invalid(`the BMP's pixel data is cut short: it would end at byte ${end} of a ${fileSize}-byte file`);
  }
  return { kind: 'sized', format: 'bmp', width, height };
}

function gif(bytes: Uint8Array): ImageHeader {
  if (bytes.length < 10) return invalid('the GIF ends inside its header');
  return { kind: 'sized', format: 'gif', width: u16le(bytes, 6), height: u16le(bytes, 8) };
}

let crcTable: Uint32Array | undefined;

/** The CRC-32 PNG chunks carry (ISO 3309, as zlib computes it). */
export function crc32(bytes: Uint8Array): number {
  crcTable ??= Uint32Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  let crc = 0xffffffff;
  for (const byte of bytes) crc = crcTable[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
