import { deflateSync } from 'node:zlib';
import { imageDifference, loraHadEffect, MIN_MEAN_ABSOLUTE_DIFFERENCE, PIXEL_TOLERANCE, SIDE_BY_SIDE_GAP, sideBySide } from '../../lambda/lora-check/image-difference';
import { crc32, decodePng, encodePng, type RawImage } from '../../lambda/lora-check/png';

/** A deterministic image with structure in every direction, so each row filter has work to do. */
function pattern(width: number, height: number, channels: 3 | 4, seed = 1): RawImage {
  const data = new Uint8Array(width * height * channels);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37 + seed * 101 + ((i / channels / width) | 0) * 13) & 0xff;
  return { width, height, channels, data };
}

/** The same image, every RGB channel moved by `delta` (clamped). */
function shifted(image: RawImage, delta: number): RawImage {
  const data = image.data.map((v, i) => (i % image.channels < 3 ? Math.max(0, Math.min(255, v + delta)) : v));
  return { ...image, data };
}

describe('the PNG codec', () => {
  test('crc32 is the PNG one (the IEND chunk\'s well-known CRC)', () => {
    expect(crc32(Buffer.from('IEND'))).toBe(0xae426082);
  });

  test.each([0, 1, 2, 3, 4] as const)('round-trips RGB and RGBA through row filter %i', (filter) => {
    for (const channels of [3, 4] as const) {
      const image = pattern(13, 7, channels);
      expect(decodePng(encodePng(image, filter))).toEqual(image);
    }
  });

  test('reads image data split over several IDAT chunks, as PIL writes large images', () => {
    const image = pattern(40, 30, 3);
    const png = encodePng(image);
    // Split the one IDAT into three chunks.
    const idatAt = png.indexOf(Buffer.from('IDAT')) - 4;
    const length = png.readUInt32BE(idatAt);
    const data = png.subarray(idatAt + 8, idatAt + 8 + length);
    const chunk = (bytes: Buffer) => {
      const frame = Buffer.alloc(12 + bytes.length);
      frame.writeUInt32BE(bytes.length, 0);
      frame.write('IDAT', 4, 'latin1');
      bytes.copy(frame, 8);
      frame.writeUInt32BE(crc32(Buffer.from('IDAT'), bytes), 8 + bytes.length);
      return frame;
    };
    const thirds = [data.subarray(0, 10), data.subarray(10, 20), data.subarray(20)];
    const split = Buffer.concat([png.subarray(0, idatAt), ...thirds.map(chunk), png.subarray(idatAt + 12 + length)]);
    expect(decodePng(split)).toEqual(image);
  });

  test('refuses what it cannot read, saying why, and reads the same file intact (control)', () => {
    const good = encodePng(pattern(8, 8, 3));
    expect(decodePng(good).width).toBe(8);
    const corrupt = Buffer.from(good);
    corrupt[corrupt.length - 20] ^= 0xff;
    expect(() => decodePng(corrupt)).toThrow(/fails its CRC/);
    expect(() => decodePng(good.subarray(0, good.length - 12))).toThrow(/no IEND|runs past/);
    expect(() => decodePng(Buffer.from('GIF89a....'))).toThrow(/not a PNG/);
    // A 16-bit and an interlaced header: PIL writes neither for the server's RGB images.
    const withHeader = (patch: (ihdr: Buffer) => void) => {
      const png = Buffer.from(good);
      const ihdr = png.subarray(16, 29);
      patch(ihdr);
      png.writeUInt32BE(crc32(Buffer.from('IHDR'), ihdr), 29);
      return png;
    };
    expect(() => decodePng(withHeader((h) => (h[8] = 16)))).toThrow(/only 8-bit RGB or RGBA/);
    expect(() => decodePng(withHeader((h) => (h[9] = 3)))).toThrow(/color type 3/);
    expect(() => decodePng(withHeader((h) => (h[12] = 1)))).toThrow(/interlaced/);
    expect(decodePng(withHeader(() => undefined)).width).toBe(8);
  });

  test('refuses image data of the wrong length, and an unknown row filter', () => {
    const png = encodePng(pattern(4, 4, 3));
    const replaceIdat = (data: Buffer) => {
      const at = png.indexOf(Buffer.from('IDAT')) - 4;
      const length = png.readUInt32BE(at);
      const frame = Buffer.alloc(12 + data.length);
      frame.writeUInt32BE(data.length, 0);
      frame.write('IDAT', 4, 'latin1');
      data.copy(frame, 8);
      frame.writeUInt32BE(crc32(Buffer.from('IDAT'), data), 8 + data.length);
      return Buffer.concat([png.subarray(0, at), frame, png.subarray(at + 12 + length)]);
    };
    expect(() => decodePng(replaceIdat(deflateSync(Buffer.alloc(10))))).toThrow(/not the 52/);
    const badFilter = Buffer.alloc(4 * 13);
    badFilter[0] = 7;
    expect(() => decodePng(replaceIdat(deflateSync(badFilter)))).toThrow(/unknown row filter 7/);
  });
});

describe('the difference of two images, and the threshold', () => {
  const base = pattern(16, 16, 3);

  test('identical images: 0, no pixel changed, no effect', () => {
    const difference = imageDifference(base, base);
    expect(difference).toEqual({ meanAbsoluteDifference: 0, changedPixelShare: 0 });
    expect(loraHadEffect(difference)).toBe(false);
  });

  test('both sides of the threshold: just under it is "the same image", at it the LoRA had an effect', () => {
    // A uniform shift of 2 levels (clamping aside) against one of 1: the threshold is 2.
    expect(MIN_MEAN_ABSOLUTE_DIFFERENCE).toBe(2);
    const one = { ...base, data: base.data.map((v) => (v < 255 ? v + 1 : v - 1)) };
    const two = { ...base, data: base.data.map((v) => (v < 254 ? v + 2 : v - 2)) };
    expect(imageDifference(base, one).meanAbsoluteDifference).toBe(1);
    expect(loraHadEffect(imageDifference(base, one))).toBe(false);
    expect(imageDifference(base, two).meanAbsoluteDifference).toBe(2);
    expect(loraHadEffect(imageDifference(base, two))).toBe(true);
  });

  test('GPU-like noise (a few pixels off by a level or two) is the same image; a LoRA-like change is not', () => {
    const noisy = { ...base, data: base.data.map((v, i) => (i % 97 === 0 ? Math.min(255, v + 2) : v)) };
    expect(loraHadEffect(imageDifference(base, noisy))).toBe(false);
    const changed = shifted(base, 40);
    const difference = imageDifference(base, changed);
    expect(difference.meanAbsoluteDifference).toBeGreaterThan(20);
    expect(difference.changedPixelShare).toBeGreaterThan(0.5);
    expect(loraHadEffect(difference)).toBe(true);
  });

  test('a pixel counts as changed only above the pixel tolerance; alpha is ignored', () => {
    const rgba = pattern(4, 1, 4);
    const alphaOnly = { ...rgba, data: rgba.data.map((v, i) => (i % 4 === 3 ? 255 - v : v)) };
    expect(imageDifference(rgba, alphaOnly)).toEqual({ meanAbsoluteDifference: 0, changedPixelShare: 0 });
    const at = { ...rgba, data: rgba.data.map((v, i) => (i === 0 ? (v + PIXEL_TOLERANCE) & 0xff : v)) };
    const over = { ...rgba, data: rgba.data.map((v, i) => (i === 0 ? (v + PIXEL_TOLERANCE + 1) & 0xff : v)) };
    expect(imageDifference(rgba, at).changedPixelShare).toBe(rgba.data[0] + PIXEL_TOLERANCE <= 255 ? 0 : 0.25);
    expect(imageDifference(rgba, over).changedPixelShare).toBe(0.25);
  });

  test('images of different sizes are refused', () => {
    expect(() => imageDifference(base, pattern(8, 16, 3))).toThrow(/16 × 16 and 8 × 16/);
  });

  test('the side-by-side puts the first left, the second right, white between, as RGB', () => {
    const left = pattern(3, 2, 4, 1);
    const right = pattern(2, 3, 3, 2);
    const both = sideBySide(left, right);
    expect([both.width, both.height, both.channels]).toEqual([3 + SIDE_BY_SIDE_GAP + 2, 3, 3]);
    const pixel = (image: RawImage, x: number, y: number) => Array.from(image.data.subarray((y * image.width + x) * image.channels, (y * image.width + x) * image.channels + 3));
    expect(pixel(both, 2, 1)).toEqual(pixel(left, 2, 1));
    expect(pixel(both, 3 + SIDE_BY_SIDE_GAP + 1, 2)).toEqual(pixel(right, 1, 2));
    expect(pixel(both, 3, 0)).toEqual([255, 255, 255]);
    // Below the shorter image: white.
    expect(pixel(both, 0, 2)).toEqual([255, 255, 255]);
    expect(decodePng(encodePng(both))).toEqual(both);
  });
});
