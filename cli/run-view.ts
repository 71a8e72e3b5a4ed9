import { ARTIFACT_LABELS } from '../lambda/shared/artifact-links';
import { loraRef } from '../lambda/shared/lora-name';
import type { RunStatus } from '../lambda/status/status';
import { duration, elapsedSeconds, shortTime } from './format';
import { progressLine, type TrainingProgress } from './training-progress';

/**
 * A run's status (the status function's RunStatus) as the terminal shows it: one labelled line per
 * part, and every link the answer carries, whatever its field is called (the status function adds
 * presigned links to samples and smoke images; a new one shows up here without a change).
 */

/** The phases a run ends in, and the exit code each gives a follower. */
export const FINAL_PHASES: Readonly<Record<string, number>> = { IN_SERVICE: 0, FAILED: 1, ABORTED: 1 };

export interface Link {
  /** Where it is in the answer, e.g. `links.contactSheet` or `training.logsUrl`. */
  readonly label: string;
  readonly url: string;
}

/** Readable names of the links the status function is known to give; any other is shown by its path. */
const LINK_LABELS: Readonly<Record<string, string>> = {
  ...Object.fromEntries(Object.entries(ARTIFACT_LABELS).map(([name, label]) => [`links.${name}`, label])),
  'training.logsUrl': 'training logs',
};

/** Every https URL in the answer, with its label (else its path; arrays are numbered). */
export function linksOf(value: unknown, path = ''): Link[] {
  if (typeof value === 'string') return /^https:\/\//.test(value) ? [{ label: LINK_LABELS[path] ?? path, url: value }] : [];
  if (Array.isArray(value)) return value.flatMap((item, index) => linksOf(item, `${path}[${index}]`));
  if (typeof value !== 'object' || value === null) return [];
  return Object.entries(value).flatMap(([key, item]) => linksOf(item, path === '' ? key : `${path}.${key}`));
}

/** "pokemon@3: ready, current" or "pokemon@4: pending, not current (current is 3)". */
export function loraLine(lora: NonNullable<RunStatus['lora']>): string {
  if (lora.version === undefined) return `${lora.name}: no version registered yet`;
  const parts = [lora.status ?? 'status unknown'];
  if (lora.isCurrent === true) parts.push('current');
  else if (lora.isCurrent === false) parts.push(lora.currentVersion !== undefined ? `not current (current is ${lora.currentVersion})` : 'not current (none is)');
  if (lora.failure !== undefined) parts.push(`failed because: ${lora.failure}`);
  if (lora.registryError !== undefined) parts.push(`registry: ${lora.registryError}`);
  return `${lora.ref ?? loraRef(lora.name, lora.version)}: ${parts.join(', ')}`;
}

function trainingLine(run: RunStatus, progress: TrainingProgress | undefined, progressError: string | undefined): string | undefined {
  const training = run.training;
  if (training === undefined) return undefined;
  const secondary = training.secondaryStatus !== undefined && training.secondaryStatus !== training.status ? ` / ${training.secondaryStatus}` : '';
  const parts = [`${training.jobName}: ${training.status}${secondary}`];
  const measured = progress !== undefined ? progressLine(progress) : undefined;
  if (measured !== undefined) parts.push(measured);
  else if (progressError !== undefined) parts.push(`progress not readable (${progressError})`);
  if (training.billableSeconds !== undefined) parts.push(`billable ${duration(training.billableSeconds)}`);
  if (training.spotSavingsPercent !== undefined && training.spotSavingsPercent > 0) parts.push(`spot savings ${training.spotSavingsPercent}%`);
  if (training.failureReason !== undefined) parts.push(`failure: ${training.failureReason}`);
  if (training.error !== undefined) parts.push(training.error);
  return parts.join(', ');
}

function endpointLine(run: RunStatus): string | undefined {
  const endpoint = run.endpoint;
  if (endpoint === undefined) return undefined;
  const parts = [`${endpoint.name}: ${endpoint.status}`];
  if (endpoint.inferenceComponentName !== undefined) parts.push(`inference component ${endpoint.inferenceComponentName}`);
  if (endpoint.servesThisRun === true) parts.push('serves this run');
  else if (endpoint.servesThisRun === false) parts.push(`serves another run's config (${endpoint.endpointConfigName ?? 'unknown'})`);
  if (endpoint.failureReason !== undefined) parts.push(`failure: ${endpoint.failureReason}`);
  if (endpoint.error !== undefined) parts.push(endpoint.error);
  return parts.join(', ');
}

/** The captions the job generated (caption_missing), as written back next to their images. */
function captionsLine(run: RunStatus): string | undefined {
  const captions = run.captions;
  if (captions === undefined) return undefined;
  const kept = captions.kept > 0 ? `; ${captions.kept} not written, as the folder already had that caption file (yours is kept)` : '';
  return `${captions.written} written by BLIP next to their images in ${captions.folder}, for review${kept}`;
}

function samplesLine(run: RunStatus): string | undefined {
  const samples = run.samples;
  if (samples === undefined) return undefined;
  const where = samples.location !== undefined ? ` in ${samples.location}` : '';
  return `${samples.count} image${samples.count === 1 ? '' : 's'}${where}${samples.note !== undefined ? ` (${samples.note})` : ''}`;
}

function smokeLine(run: RunStatus): string | undefined {
  const smoke = run.smoke;
  if (smoke === undefined) return undefined;
  const changed = `${(smoke.changedPixelShare * 100).toFixed(1)}% of pixels changed`;
  return `passed: mean absolute difference ${smoke.meanAbsoluteDifference.toFixed(2)} (at least ${smoke.minMeanAbsoluteDifference} needed), ${changed}; images in ${smoke.location}`;
}

/** The phase, with the state a running execution is in. */
export function phaseText(run: RunStatus): string {
  return run.currentState !== undefined && run.currentState !== '' ? `${run.phase} (${run.currentState})` : run.phase;
}

/** The run as labelled lines. */
export function runView(run: RunStatus, nowMs: number, progress?: TrainingProgress, progressError?: string): string {
  const elapsed = elapsedSeconds(run.startedAt, run.stoppedAt, nowMs);
  const rows: Array<[string, string | undefined]> = [
    ['Run', `${run.run ?? '(not prepared yet)'}  execution ${run.executionName}`],
    ['Dataset', run.dataset],
    ['Phase', phaseText(run)],
    ['Status', `${run.status}${elapsed !== undefined ? `, ${duration(elapsed)}${run.stoppedAt === undefined ? ' so far' : ''}` : ''}, started ${shortTime(run.startedAt)}`],
    ['Waiting', run.waitingFor],
    ['Training', trainingLine(run, progress, progressError)],
    ['Serving', run.servingMode !== undefined ? `${run.servingMode}${run.dedicatedBecause !== undefined ? ` (${run.dedicatedBecause})` : ''}` : undefined],
    ['LoRA', run.lora !== undefined ? loraLine(run.lora) : undefined],
    ['Endpoint', endpointLine(run)],
    ['Samples', samplesLine(run)],
    ['Captions', captionsLine(run)],
    ['Smoke', smokeLine(run)],
    ['Error', run.error !== undefined ? `${run.error}${run.cause !== undefined ? `: ${run.cause}` : ''}` : undefined],
  ];
  const lines = rows.filter((row): row is [string, string] => row[1] !== undefined).map(([label, text]) => `${label.padEnd(9)} ${text}`);
  const links = linksOf(run);
  const expiry = run.linksExpireAt !== undefined ? ` (presigned ones valid until ${shortTime(run.linksExpireAt)})` : '';
  if (links.length > 0) lines.push(`Links${expiry}`, ...links.map((link) => `  ${link.label}: ${link.url}`));
  lines.push(...datasetCheckLines(run.datasetCheck));
  return lines.join('\n');
}

/** The files Prepare found kohya will not train, listed in full (the status function keeps 20), and its notes. */
function datasetCheckLines(check: RunStatus['datasetCheck']): string[] {
  if (check === undefined) return [];
  const more = check.skippedCount - check.skipped.length;
  const skipped = check.skippedCount > 0 ? [`Not trained (${check.skippedCount} file${check.skippedCount === 1 ? '' : 's'})`, ...check.skipped.map((entry) => `  ${entry}`)] : [];
  if (more > 0) skipped.push(`  and ${more} more`);
  const toCaption = check.captionsToWrite ?? 0;
  const captioning = toCaption > 0 ? [`Note      ${toCaption} image${toCaption === 1 ? '' : 's'} without a caption will be captioned by BLIP (caption_missing); the captions are written next to them in S3 for review`] : [];
  return [...captioning, ...skipped, ...check.notes.map((note) => `Note      ${note}`)];
}

/** One line for following a run: what changed since the last one is what a watcher needs. */
export function followLine(run: RunStatus, nowMs: number, progress?: TrainingProgress): string {
  const elapsed = elapsedSeconds(run.startedAt, run.stoppedAt, nowMs);
  const measured = run.phase === 'TRAINING' && progress !== undefined ? progressLine(progress) : undefined;
  return [elapsed !== undefined ? `[${duration(elapsed)}]` : undefined, phaseText(run), measured, run.waitingFor].filter((part) => part !== undefined).join('  ');
}
