import { createHash } from 'node:crypto';

/**
 * Names of executions and SageMaker resources. Every name is made of `[a-z0-9-]`, starts and ends
 * with a letter or digit, and fits its service's limit; a name that had to be shortened ends with
 * a hash of the full text, so two long names that share a beginning stay distinct.
 */

/** Step Functions' limit on an execution name. */
export const MAX_EXECUTION_NAME = 80;
/** SageMaker's limit on job, model, endpoint config and endpoint names. */
export const MAX_SAGEMAKER_NAME = 63;
/** SageMaker's pattern for those names (a job's also keys its S3 folders): what a function accepts from an event. */
export const SAGEMAKER_NAME = /^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$/;
/** Characters of the run's start time in a run name: `yyyymmddhhmmss`. */
const STAMP_LENGTH = 14;
/** Hex characters of the hash that tells apart runs started in the same second. */
const RUN_HASH_LENGTH = 6;
/** Hex characters of the hash ending a shortened name. */
const SHORTENED_HASH_LENGTH = 8;

/** Hex SHA-256 of the text, cut to `length` characters. */
export function shortHash(text: string, length: number): string {
  return createHash('sha256').update(text, 'utf8').digest('hex').slice(0, length);
}

/**
 * `text` as lowercase letters, digits and single hyphens: accents are dropped (`pokémon` →
 * `pokemon`), every other run of characters becomes one hyphen. Empty when nothing is left
 * (a name in another script); callers then use a fallback.
 */
export function slug(text: string): string {
  return text
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
}

/**
 * `text` itself when it is already a slug of at most `max` characters. Otherwise its slug, cut to
 * fit, ending with a hash of `text`: `Pokemon`, `pokémon`, `poke_mon` and `データa` are different
 * folders and must not share an endpoint, though their slugs alone could be the same.
 */
export function fittedSlug(text: string, max: number, fallback = 'dataset'): string {
  const plain = slug(text);
  if (plain === text && plain.length <= max) return plain;
  const hash = shortHash(text, SHORTENED_HASH_LENGTH);
  const head = (plain || fallback).slice(0, Math.max(0, max - hash.length - 1)).replace(/-+$/, '');
  return head ? `${head}-${hash}` : hash;
}

/**
 * The execution name for one upload of a dataset's trigger file: the same upload (S3 may deliver
 * its event twice) gives the same name, so Step Functions refuses the duplicate; another upload
 * (another `sequencer` or version) gives another name.
 */
export function executionName(folder: string, uploadId: string): string {
  const hash = shortHash(`${folder}\n${uploadId}`, 16);
  return `${cutSlug(folder, MAX_EXECUTION_NAME - hash.length - 1)}-${hash}`;
}

/** The slug of `text` cut to `max` characters, for names that end with a hash of their own. */
function cutSlug(text: string, max: number, fallback = 'dataset'): string {
  return (slug(text) || fallback).slice(0, max).replace(/-+$/, '');
}

/**
 * The run name shared by the training job, the model and the endpoint config:
 * `<prefix>-<name>-<yyyymmddhhmmss>-<hash of the execution name>`. It depends only on its
 * arguments, so Prepare gives the same name each time it runs for one execution.
 */
export function runName(prefix: string, name: string, startTime: string, execution: string): string {
  const started = new Date(startTime);
  if (Number.isNaN(started.getTime())) throw new Error(`Not a timestamp: ${JSON.stringify(startTime)}`);
  const stamp = started.toISOString().replace(/[^0-9]/g, '').slice(0, STAMP_LENGTH);
  const room = MAX_SAGEMAKER_NAME - prefix.length - STAMP_LENGTH - RUN_HASH_LENGTH - 3;
  return `${prefix}-${cutSlug(name, room)}-${stamp}-${shortHash(execution, RUN_HASH_LENGTH)}`;
}

/** The endpoint name of a dataset (or of a run's `name`): `<prefix>-<name>`, the same for every run. */
export function endpointName(prefix: string, name: string): string {
  return `${prefix}-${fittedSlug(name, MAX_SAGEMAKER_NAME - prefix.length - 1)}`;
}
