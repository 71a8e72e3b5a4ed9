import { suffix } from './folder-index';
import { listing } from './listing';
import type { PreflightProblem } from './preflight';
import { CAPTION_EXTENSIONS } from '../shared/caption-extensions';

/**
 * The images the training job captions with BLIP when caption_missing is set, as
 * containers/training/lora_trainer/caption_targets.py `targets` finds them: each image of an image_dir
 * subset without class tokens that has no caption file. Its caption is written as
 * `<image without extension><caption extension>`, which the samples function writes back to S3.
 */


export interface CaptionableImage {
  readonly path: string;
  /** The subset's caption extension when the job would caption this image; undefined when not. */
  readonly captionExtension?: string;
}

export interface CaptionTargets {
  /** The images that will be captioned. */
  readonly paths: ReadonlySet<string>;
  /** Why the job would refuse to caption them (the container's first refusal is the first here). */
  readonly problems: readonly PreflightProblem[];
}

export function captionTargets(images: readonly CaptionableImage[]): CaptionTargets {
  const byCaption = new Map<string, string>();
  const unwritable = new Map<string, string>();
  const paths = new Set<string>();
  for (const { path, captionExtension } of images) {
    if (captionExtension === undefined || paths.has(path) || unwritable.has(path)) continue;
    if (!(CAPTION_EXTENSIONS as readonly string[]).includes(captionExtension)) {
      unwritable.set(path, captionExtension);
      continue;
    }
    const caption = path.slice(0, path.length - suffix(path).length) + captionExtension;
    const earlier = byCaption.get(caption);
    if (earlier !== undefined) {
      const message = `${earlier} and ${path} have no caption and would share the caption file ${caption} (kohya reads one caption per name); rename one of them, or caption them yourself`;
      return { paths: new Set(), problems: [{ kind: 'missing-captions', files: [earlier, path], message }] };
    }
    byCaption.set(caption, path);
    paths.add(path);
  }
  if (unwritable.size === 0) return { paths, problems: [] };
  const files = [...unwritable.keys()];
  const extensions = [...new Set(unwritable.values())].sort().join(' or ');
  const message = `${files.length} image(s) have no caption, and caption_missing writes only ${CAPTION_EXTENSIONS.join(' or ')} caption files, not ${extensions}: ${listing(files)}. Use caption_extension '.txt', caption these images yourself, or set caption_missing=false`;
  return { paths: new Set(), problems: [{ kind: 'missing-captions', files, message }] };
}
