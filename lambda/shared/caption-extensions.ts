/**
 * The caption files a job's BLIP captions are written as (the container's caption_targets.py), the
 * only names the samples function may write back into a dataset folder (its IAM grant), and so the
 * names a trigger file may not have.
 */
export const CAPTION_EXTENSIONS = ['.txt', '.caption'] as const;
