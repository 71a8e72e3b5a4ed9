import type { RawImage } from './png';

/**
 * How far apart two images of the same request are, and whether that is the LoRA's doing.
 *
 * The threshold: the same prompt, seed and steps on the same GPU differ between two requests only by
 * floating-point nondeterminism (cuDNN and attention kernels), well under 1 level in 255 on average;
 * the LoRA at its trained scale moves the whole image, typically by 10 to 50 levels. A mean under
 * MIN_MEAN_ABSOLUTE_DIFFERENCE (2 levels, 0.8 % of the range) is "the same image": the LoRA had no effect.
 */
export const MIN_MEAN_ABSOLUTE_DIFFERENCE = 2;
/** A pixel counts as changed when one of its channels moved by more than this (reported, not judged). */
export const PIXEL_TOLERANCE = 8;

export interface ImageDifference {
  /** Mean of |a − b| over every RGB channel of every pixel, 0–255. */
  readonly meanAbsoluteDifference: number;
  /** Share (0–1) of pixels with a channel differing by more than PIXEL_TOLERANCE. */
  readonly changedPixelShare: number;
}

/** The difference of two images' RGB channels (alpha, if any, is ignored); they must be the same size. */
export function imageDifference(a: RawImage, b: RawImage): ImageDifference {
  if (a.width !== b.width || a.height !== b.height) {
    throw new RangeError(`the images are ${a.width} × ${a.height} and ${b.width} × ${b.height}; the same request must give the same size`);
  }
  const pixels = a.width * a.height;
  let total = 0;
  let changed = 0;
  for (let p = 0; p < pixels; p++) {
    let largest = 0;
    for (let c = 0; c < 3; c++) {
      const d = Math.abs(a.data[p * a.channels + c] - b.data[p * b.channels + c]);
      total += d;
      if (d > largest) largest = d;
    }
    if (largest > PIXEL_TOLERANCE) changed += 1;
  }
  return { meanAbsoluteDifference: total / (pixels * 3), changedPixelShare: changed / pixels };
}

/** Whether the difference shows the LoRA had an effect. */
export function loraHadEffect(difference: ImageDifference): boolean {
  return difference.meanAbsoluteDifference >= MIN_MEAN_ABSOLUTE_DIFFERENCE;
}

/** White columns between the two halves of the side-by-side image. */
export const SIDE_BY_SIDE_GAP = 16;

/** `left` and `right` next to each other on white, as RGB, `left` first (without the LoRA, then with it). */
export function sideBySide(left: RawImage, right: RawImage): RawImage {
  const width = left.width + SIDE_BY_SIDE_GAP + right.width;
  const height = Math.max(left.height, right.height);
  const data = new Uint8Array(width * height * 3).fill(255);
  const place = (image: RawImage, x0: number) => {
    for (let y = 0; y < image.height; y++) {
      for (let x = 0; x < image.width; x++) {
        const from = (y * image.width + x) * image.channels;
        data.set(image.data.subarray(from, from + 3), (y * width + x0 + x) * 3);
      }
    }
  };
  place(left, 0);
  place(right, left.width + SIDE_BY_SIDE_GAP);
  return { width, height, channels: 3, data };
}
