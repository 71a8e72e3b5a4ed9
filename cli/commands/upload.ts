import { createReadStream } from 'node:fs';
import { DeleteObjectsCommand, HeadObjectCommand, paginateListObjectsV2, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { PrepareSettings } from '../../lambda/shared/contract';
import type { ParsedArgs } from '../args';
import { awsCall, isAwsError } from '../aws-errors';
import { type CliContext, type Command, ConfigurationError, EXIT, type Io } from '../command';
import { followRun, INTERRUPTED } from '../follow';
import type { LocalFile } from '../local-folder';
import { formatBytes, progressBar } from '../progress';
import type { StackOutputs } from '../stack-outputs';
import { checkFolder, datasetName, DEPLOYMENT_FLAGS, deploymentSettings, describeCheck, folderArgument } from './validate';

/**
 * `upload <folder>`: checks the folder as `validate` does, uploads every file into the dataset's S3
 * folder, and writes the trigger file last, only once every other file is in place: a run starts
 * on a complete folder or not at all. Then it follows the run the trigger started.
 */

/** Files uploaded at once; each may itself upload up to 4 parts of a large file at once. */
const FILE_CONCURRENCY = 4;

interface Destination {
  readonly s3: S3Client;
  readonly bucket: string;
  /** `<DatasetPrefix><name>/` */
  readonly prefix: string;
}

/** A file to send: a local one, or the empty trigger file a folder without its own gets. */
type Item = LocalFile | { readonly path: string; readonly size: 0; readonly absolute?: undefined };

class Interrupted extends Error {
  override readonly name = 'Interrupted';
}

/** The settings of the deployed stack: its outputs where it has them, else the flags and defaults. */
function stackSettings(outputs: StackOutputs): PrepareSettings {
  const datasetPrefix = outputs.get('DatasetPrefix');
  const triggerFileName = outputs.get('TriggerFileName');
  // The same rules as Prepare's settings: a wrong flag would otherwise upload where no run looks.
  if (!/^([^/]+\/)*$/.test(datasetPrefix)) throw new ConfigurationError(`DatasetPrefix ${JSON.stringify(datasetPrefix)} must be empty or end with '/', e.g. datasets/`);
  if (triggerFileName === '' || triggerFileName.includes('/')) throw new ConfigurationError(`TriggerFileName ${JSON.stringify(triggerFileName)} must be a file name, e.g. dataset.toml`);
  return deploymentSettings({
    datasetsBucket: outputs.get('DatasetsBucketName'),
    datasetPrefix,
    triggerFileName,
    modelType: outputs.find('ModelType'),
    endpointMode: outputs.find('EndpointMode'),
    namePrefix: outputs.find('NamePrefix'),
    sharedEndpointName: outputs.find('SharedEndpointName'),
    sharedInferenceComponentName: outputs.find('SharedInferenceComponentName'),
    baseModel: outputs.find('BaseModel'),
    captionMissing: outputs.find('CaptionMissing'),
  });
}

/** Objects already in the dataset's S3 folder that the local folder does not have: a run would train on them too. */
async function extraObjects(to: Destination, keep: ReadonlySet<string>): Promise<string[]> {
  const extra: string[] = [];
  for await (const page of paginateListObjectsV2({ client: to.s3 }, { Bucket: to.bucket, Prefix: to.prefix })) {
    for (const object of page.Contents ?? []) if (object.Key && !keep.has(object.Key) && !object.Key.endsWith('/')) extra.push(object.Key);
  }
  return extra;
}

async function deleteObjects(to: Destination, keys: readonly string[]): Promise<void> {
  for (let start = 0; start < keys.length; start += 1000) {
    const batch = keys.slice(start, start + 1000);
    const answer = await to.s3.send(new DeleteObjectsCommand({ Bucket: to.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }));
    const failed = answer.Errors ?? [];
    if (failed.length > 0) throw new Error(`could not delete ${failed.length} object(s), e.g. ${failed[0].Key}: ${failed[0].Code} ${failed[0].Message}`);
  }
}

/** Uploads one file; `progress` gets its bytes sent so far. The upload is aborted when `signal` is. */
async function sendFile(to: Destination, item: Item, signal: AbortSignal, progress: (loaded: number) => void): Promise<void> {
  if (signal.aborted) throw new Interrupted('interrupted');
  const upload = new Upload({
    client: to.s3,
    params: { Bucket: to.bucket, Key: `${to.prefix}${item.path}`, Body: item.absolute !== undefined ? createReadStream(item.absolute) : new Uint8Array(0) },
    queueSize: 4,
  });
  upload.on('httpUploadProgress', (p) => progress(p.loaded ?? 0));
  const abort = () => void upload.abort().catch(() => undefined);
  signal.addEventListener('abort', abort, { once: true });
  try {
    await upload.done();
    progress(item.size);
  } finally {
    signal.removeEventListener('abort', abort);
  }
}

/** Uploads the files, FILE_CONCURRENCY at a time; the first failure aborts the rest and is thrown. */
async function sendAll(to: Destination, items: readonly Item[], signal: AbortSignal, progress: (loaded: number) => void): Promise<void> {
  const failure = new AbortController();
  const either = AbortSignal.any([signal, failure.signal]);
  const loaded = new Map<string, number>();
  let sum = 0;
  let next = 0;
  let firstError: unknown;
  const worker = async () => {
    while (next < items.length && !either.aborted) {
      const item = items[next++];
      try {
        await sendFile(to, item, either, (bytes) => {
          sum += bytes - (loaded.get(item.path) ?? 0);
          loaded.set(item.path, bytes);
          progress(sum);
        });
      } catch (error) {
        firstError ??= signal.aborted ? new Interrupted('interrupted') : Object.assign(error as Error, { file: item.path });
        failure.abort();
      }
    }
  };
  // Every upload has ended, done or aborted, before this returns: the trigger can never overtake one.
  await Promise.all(Array.from({ length: Math.min(FILE_CONCURRENCY, items.length) }, worker));
  if (firstError === undefined && signal.aborted) firstError = new Interrupted('interrupted');
  if (firstError !== undefined) throw firstError;
}

/** The trigger's time on S3's clock, so an older run is never taken for this one; else the local start. */
async function triggerTime(to: Destination, key: string, fallback: number): Promise<number> {
  try {
    const head = await to.s3.send(new HeadObjectCommand({ Bucket: to.bucket, Key: key }));
    // S3's time of the trigger precedes the execution's start on AWS's clocks, whatever the local clock says.
    return head.LastModified ? head.LastModified.getTime() : fallback;
  } catch {
    // Uploaders may lack s3:GetObject; the upload's start is then the bound.
    return fallback;
  }
}

function failureExit(io: Io, error: unknown, uploaded: string): number {
  if (error instanceof Interrupted) {
    io.err(`\nInterrupted: ${uploaded}; the trigger file was not written, so no run started.\n`);
    return INTERRUPTED;
  }
  const file = (error as { file?: string }).file;
  const { name, message } = error as Error;
  io.err(`\nUpload failed${file ? ` at ${file}` : ''}: ${name}: ${message}\n${uploaded}; the trigger file was not written, so no run started. Fix the cause and run upload again.\n`);
  return isAwsError(error) && /AccessDenied|Credentials|ExpiredToken|InvalidAccessKeyId|SignatureDoesNotMatch|NoSuchBucket|KMS/.test(`${name} ${message}`) ? EXIT.aws : EXIT.failed;
}

export const command: Command = {
  name: 'upload',
  summary: 'check a dataset folder, upload it with the trigger file last, and follow the run it starts',
  usage: [
    'lora-pipeline upload <folder> [--name <name>] [--force] [--sync | --keep-extra] [--no-follow]',
    '',
    'Checks the folder as validate does (refusing one validate refuses, unless --force), uploads every file to',
    's3://<DatasetsBucketName>/<DatasetPrefix><name>/ with a progress bar, then writes the trigger file (the',
    "stack's TriggerFileName, dataset.toml by default; an empty one when the folder has none) last, once every",
    'other file is in place. Ctrl-C or a failed file stops the upload without writing the trigger: no run starts.',
    'Then it follows the run the trigger started until it is in service or fails (exit 0 / 1); Ctrl-C stops',
    'following, not the run. Objects already in the S3 folder that the local folder lacks would be trained too:',
    'upload refuses until you choose --sync (delete them) or --keep-extra (train on them).',
  ].join('\n'),
  flags: {
    ...DEPLOYMENT_FLAGS,
    force: { type: 'boolean', description: 'upload even a folder validate refuses (the run will then fail in Prepare)' },
    sync: { type: 'boolean', description: 'delete objects in the S3 folder that the local folder does not have' },
    'keep-extra': { type: 'boolean', description: 'keep objects in the S3 folder that the local folder does not have' },
    follow: { type: 'boolean', negatable: true, description: 'follow the run after the upload (default; --no-follow stops after it)' },
  },
  async run(args: ParsedArgs, ctx: CliContext): Promise<number> {
    const { io } = ctx;
    const root = folderArgument(args, 'upload');
    const outputs = await ctx.outputs('DatasetsBucketName', 'DatasetPrefix', 'TriggerFileName');
    const settings = stackSettings(outputs);
    const name = datasetName(root, args.string('name'), settings);
    const check = await checkFolder(io, root, name, settings);
    if (!check) return EXIT.failed;
    io.err(describeCheck(check, settings));
    if (check.problems.length > 0) {
      if (!args.boolean('force')) {
        io.err('Nothing was uploaded. Fix the folder, or pass --force to upload it anyway.\n');
        return EXIT.failed;
      }
      io.err('--force: uploading it anyway; the run will fail in Prepare with these problems.\n');
    }

    const to: Destination = { s3: ctx.clients.s3, bucket: settings.datasetsBucket, prefix: `${settings.datasetPrefix}${name}/` };
    const uri = `s3://${to.bucket}/${to.prefix}`;
    const trigger: Item = check.files.find((f) => f.path === settings.triggerFileName) ?? { path: settings.triggerFileName, size: 0 };
    const files = check.files.filter((f) => f !== trigger);
    const extra = await extraObjects(to, new Set([...check.files, trigger].map((f) => `${to.prefix}${f.path}`)));
    if (extra.length > 0 && !args.boolean('sync') && !args.boolean('keep-extra')) {
      const shown = extra.slice(0, 5).map((key) => `  ${key}`).join('\n');
      io.err(`${uri} already has ${extra.length} object(s) the folder does not have, which a run would train on too:\n${shown}${extra.length > 5 ? '\n  …' : ''}\n` +
        'Nothing was uploaded. Pass --sync to delete them, or --keep-extra to keep them.\n');
      return EXIT.failed;
    }

    const total = [...files, trigger].reduce((sum, f) => sum + f.size, 0);
    io.err(`Uploading ${files.length + 1} files (${formatBytes(total)}) to ${uri}, ${settings.triggerFileName} last\n`);
    const bar = progressBar(io, { label: 'Uploading', total });
    const started = io.now();
    let done = 0;
    try {
      await sendAll(to, files, ctx.signal, (bytes) => bar.update((done = bytes)));
      if (extra.length > 0 && args.boolean('sync')) await deleteObjects(to, extra);
      await sendAll(to, [trigger], ctx.signal, (bytes) => bar.update(done + bytes));
    } catch (error) {
      return failureExit(io, error, `${formatBytes(done)} of ${formatBytes(total)} were uploaded`);
    }
    bar.finish();
    io.err(`Wrote ${uri}${settings.triggerFileName} last: the run trains once nothing in the folder has changed for the stack's settleSeconds.\n`);
    if (!args.boolean('follow', true)) {
      io.err(`Follow it with: lora-pipeline status ${name} --watch\n`);
      return EXIT.ok;
    }
    const since = await triggerTime(to, `${to.prefix}${settings.triggerFileName}`, started);
    return awsCall('Following the run', () => followRun(ctx, { dataset: name }, { startedAfterMs: since }));
  },
};
