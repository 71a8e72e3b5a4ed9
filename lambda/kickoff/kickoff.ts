import type { S3Event, S3EventRecord } from 'aws-lambda';
import type { ExecutionInput, TriggerInfo } from '../shared/contract';
import { log, type LogLevel } from '../shared/log';
import { executionName } from '../shared/names';

/**
 * The kickoff function: an upload of `<datasetPrefix><folder>/<triggerFileName>` into the datasets
 * bucket starts one execution of the workflow. The execution name depends only on the upload, so a
 * duplicate delivery of its S3 event cannot start a second run, while a re-upload does start one.
 */

export interface KickoffSettings {
  readonly stateMachineArn: string;
  readonly datasetsBucket: string;
  /** e.g. `datasets/` */
  readonly datasetPrefix: string;
  /** e.g. `dataset.toml` */
  readonly triggerFileName: string;
}

export interface Start {
  readonly action: 'start';
  /** The decoded object key. */
  readonly key: string;
  readonly name: string;
  readonly input: ExecutionInput;
}

export interface Ignore {
  readonly action: 'ignore';
  /** The key as decoded, or as received when it could not be decoded. */
  readonly key: string;
  readonly reason: string;
  /** WARN when the upload looks like a mistake the uploader should hear about, else INFO. */
  readonly level: LogLevel;
}

export type Decision = Start | Ignore;

/** The environment variables the stack sets on the function, and the setting each one holds. */
export const ENVIRONMENT = {
  STATE_MACHINE_ARN: 'stateMachineArn',
  DATASETS_BUCKET: 'datasetsBucket',
  DATASET_PREFIX: 'datasetPrefix',
  TRIGGER_FILE_NAME: 'triggerFileName',
} as const satisfies Record<string, keyof KickoffSettings>;

/**
 * The settings from the function's environment. Throws, naming every missing or malformed variable,
 * so that a misconfigured function fails at its first invocation rather than ignoring every upload.
 */
export function settingsFromEnvironment(env: Readonly<Record<string, string | undefined>>): KickoffSettings {
  const missing = Object.keys(ENVIRONMENT).filter((name) => !env[name]);
  if (missing.length > 0) throw new Error(`kickoff: missing environment variable(s) ${missing.join(', ')}`);
  const settings = Object.fromEntries(
    Object.entries(ENVIRONMENT).map(([name, setting]) => [setting, env[name] as string]),
  ) as unknown as KickoffSettings;
  // A prefix without its trailing '/' would make every trigger key look nested or outside it.
  if (!settings.datasetPrefix.endsWith('/')) {
    throw new Error(`kickoff: DATASET_PREFIX must end with '/', not ${JSON.stringify(settings.datasetPrefix)}`);
  }
  if (settings.triggerFileName.includes('/')) {
    throw new Error(`kickoff: TRIGGER_FILE_NAME must be a file name, not ${JSON.stringify(settings.triggerFileName)}`);
  }
  return settings;
}

/**
 * S3 event keys are form-encoded: a space arrives as `+`, a literal `+` as `%2B`. Undefined for an
 * encoding that does not decode (a malformed or truncated escape), which only that record ignores.
 */
export function decodeS3Key(key: string): string | undefined {
  try {
    return decodeURIComponent(key.replace(/\+/g, ' '));
  } catch {
    return undefined;
  }
}

/**
 * What identifies one upload of the object. S3 gives every event of a key its own sequencer, and
 * repeats it when it delivers the same event again; the version id does the same in a versioned
 * bucket. Both missing should not happen; the ETag and event time then still tell apart uploads of
 * other content or at other times.
 */
function uploadId(record: S3EventRecord): string {
  const { sequencer, versionId, eTag } = record.s3.object;
  return sequencer || versionId || `${eTag}@${record.eventTime}`;
}

/** The folder name of a trigger key, or why the key is not one. */
function triggerFolder(key: string, settings: KickoffSettings): { folder: string } | { reason: string; level: LogLevel } {
  if (!key.startsWith(settings.datasetPrefix)) return { reason: `not under ${settings.datasetPrefix}`, level: 'INFO' };
  const parts = key.slice(settings.datasetPrefix.length).split('/');
  if (parts[parts.length - 1] !== settings.triggerFileName) {
    return { reason: `not a ${settings.triggerFileName}`, level: 'INFO' };
  }
  if (parts.length === 1) return { reason: `not in a dataset folder under ${settings.datasetPrefix}`, level: 'WARN' };
  // A dataset is one folder directly under the prefix; a deeper trigger is most likely a folder
  // uploaded one level too deep, which the uploader should hear about rather than train on.
  if (parts.length > 2) return { reason: 'nested more than one folder below the dataset prefix', level: 'WARN' };
  const [folder] = parts;
  if (folder === '' || folder === '.' || folder === '..') {
    return { reason: `not a usable dataset folder name: ${JSON.stringify(folder)}`, level: 'WARN' };
  }
  return { folder };
}

/** What to do with one record of an S3 event. */
export function decide(record: S3EventRecord, settings: KickoffSettings): Decision {
  const decoded = decodeS3Key(record.s3.object.key);
  if (decoded === undefined) {
    return { action: 'ignore', key: record.s3.object.key, reason: 'the key is not valid URL encoding', level: 'WARN' };
  }
  const ignore = (reason: string, level: LogLevel): Ignore => ({ action: 'ignore', key: decoded, reason, level });
  if (!record.eventName.startsWith('ObjectCreated:')) return ignore(`not an object creation (${record.eventName})`, 'INFO');
  const bucket = record.s3.bucket.name;
  // The notification is configured on the datasets bucket only: another bucket means a wiring mistake.
  if (bucket !== settings.datasetsBucket) return ignore(`not the datasets bucket (${bucket})`, 'WARN');
  const found = triggerFolder(decoded, settings);
  if ('reason' in found) return ignore(found.reason, found.level);

  const { versionId, sequencer } = record.s3.object;
  // Everything here comes from the record, never from the invocation: Step Functions treats a
  // repeated StartExecution as the same one only when its name and its input are both the same.
  const trigger: TriggerInfo = {
    bucket,
    key: decoded,
    ...(versionId ? { versionId } : {}),
    ...(sequencer ? { sequencer } : {}),
    ...(record.eventTime ? { eventTime: record.eventTime } : {}),
  };
  return {
    action: 'start',
    key: decoded,
    name: executionName(found.folder, uploadId(record)),
    input: { dataset: `s3://${bucket}/${settings.datasetPrefix}${found.folder}/`, trigger },
  };
}

/** A run Step Functions reports as started longer ago than this was started by an earlier delivery. */
const ALREADY_RUNNING_MS = 60_000;

/** The StartExecution request of a start. */
export function startRequest(start: Start, settings: KickoffSettings): { stateMachineArn: string; name: string; input: string } {
  return { stateMachineArn: settings.stateMachineArn, name: start.name, input: JSON.stringify(start.input) };
}

export interface Summary {
  readonly started: string[];
  /** Executions Step Functions already had (running or ended): a repeated delivery of an upload already started. */
  readonly duplicates: string[];
  readonly ignored: Array<{ readonly key: string; readonly reason: string }>;
}

/**
 * Decides every record of the event and starts the runs it calls for. Every start is attempted
 * even when one fails; then the failures are thrown together, so Lambda's retry delivers the event
 * again, and the runs already started come back as duplicates.
 */
export async function kickoff(
  event: S3Event,
  settings: KickoffSettings,
  startExecution: (request: ReturnType<typeof startRequest>) => Promise<unknown>,
  now: () => Date = () => new Date(),
): Promise<Summary> {
  const summary: Summary = { started: [], duplicates: [], ignored: [] };
  const starts: Start[] = [];
  for (const decision of event.Records.map((record) => decide(record, settings))) {
    if (decision.action === 'start') {
      starts.push(decision);
    } else {
      log(decision.level, 'Upload ignored', { key: decision.key, reason: decision.reason });
      summary.ignored.push({ key: decision.key, reason: decision.reason });
    }
  }

  const results = await Promise.allSettled(starts.map((start) => startExecution(startRequest(start, settings))));
  const failed: string[] = [];
  results.forEach((result, i) => {
    const { name, key, input } = starts[i];
    // While the first run of an upload is still open, Step Functions answers a repeated start with
    // that run (same name, same input) rather than ExecutionAlreadyExists: its start date tells.
    const startDate = result.status === 'fulfilled' ? (result.value as { startDate?: unknown } | undefined)?.startDate : undefined;
    const earlier = startDate instanceof Date && now().getTime() - startDate.getTime() > ALREADY_RUNNING_MS;
    if (result.status === 'fulfilled' && earlier) {
      log('INFO', 'Duplicate delivery: run already running', { execution: name, key, startDate });
      summary.duplicates.push(name);
    } else if (result.status === 'fulfilled') {
      log('INFO', 'Run started', { execution: name, key, dataset: input.dataset });
      summary.started.push(name);
    } else if ((result.reason as { name?: unknown } | null)?.name === 'ExecutionAlreadyExists') {
      log('INFO', 'Duplicate delivery: run already started', { execution: name, key });
      summary.duplicates.push(name);
    } else {
      const error = result.reason instanceof Error ? `${result.reason.name}: ${result.reason.message}` : String(result.reason);
      log('ERROR', 'Run could not be started', { execution: name, key, error });
      failed.push(`${name} (${key}): ${error}`);
    }
  });
  if (failed.length > 0) {
    throw new Error(`Could not start ${failed.length} of ${starts.length} run(s): ${failed.join('; ')}`);
  }
  return summary;
}
