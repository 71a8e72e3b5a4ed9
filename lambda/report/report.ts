import type { PreparedRun, ReportEvent, ReportResult, RunSummary } from '../shared/contract';
import { type ArtifactLink, LINK_SECONDS } from '../shared/artifact-links';
import { samplesSummary, smokeSummary } from '../shared/artifact-summaries';
import { captionsLines, captionsSummary, datasetCheck, datasetCheckLines } from '../shared/dataset-check';
import { isRecord, preparedRun } from '../shared/run-info';
import { summarizeTraining } from '../shared/training-summary';
import { artifactLines, linkLines, MAX_MESSAGE_BYTES } from './artifacts';
import { type FailureOptions, reportFailure } from './failure';
import { executionOf, snsSubject, withBlank } from './notification';
import { type ServingReport, servingOf } from './serving-summary';

/**
 * The last step of every run: its end as a notification, and as the execution's output (success,
 * here) or the Fail state's Error and Cause (failure.ts). It runs on the failure path too, so it
 * must never throw: whatever the caught error looks like, it answers with the best reason it can find.
 */

export interface ReportOptions extends FailureOptions {
  /** Presigned links to the run's samples and smoke images, for the success notification. */
  readonly links?: readonly ArtifactLink[];
  /** How long the links are valid. */
  readonly linkSeconds?: number;
}

export function report(event: ReportEvent, options: ReportOptions): ReportResult {
  const received: unknown = event;
  const record = isRecord(received) ? received : {};
  return record.outcome === 'succeeded' ? reportSuccess(record, options) : reportFailure(record, options);
}

/** The smoke test's answer: a dedicated run's `smoke`, or the one in a shared run's `check`. */
export function smokeOf(event: { readonly smoke?: unknown; readonly check?: unknown }): unknown {
  return isRecord(event.smoke) ? event.smoke : isRecord(event.check) ? event.check.smoke : undefined;
}

/** The message, with the links section when it fits under SNS's limit; else without it, saying where to get them. */
function withLinks(head: string[], tail: string[], options: ReportOptions): string {
  const links = linkLines(options.links ?? [], options.linkSeconds ?? LINK_SECONDS);
  const full = [...head, ...(links.length > 0 ? ['', ...links] : []), ...tail].join('\n');
  if (links.length === 0 || Buffer.byteLength(full, 'utf8') <= MAX_MESSAGE_BYTES) return full;
  return [...head, '', 'Links to the samples and smoke images: ask the status function (they did not fit in this message).', ...tail].join('\n');
}

/** The execution's output: the run, its training and how it is served, with its samples and smoke test. */
function successSummary(event: Record<string, unknown>, run: PreparedRun | undefined, serving: ServingReport): RunSummary {
  const execution = executionOf(event);
  const training = summarizeTraining(event.training);
  const runName = run?.run ?? training.jobName ?? execution.name;
  const summary: RunSummary = {
    run: runName,
    dataset: run?.dataset.name ?? 'unknown',
    trainingJobName: training.jobName ?? run?.training.jobName ?? runName,
    modelArtifact: training.modelArtifact ?? 'unknown',
    endpointName: serving.endpointName,
    trainingSeconds: training.trainingSeconds,
    billableSeconds: training.billableSeconds,
    spotSavingsPercent: training.spotSavingsPercent,
    ...serving.summary,
  };
  // SageMaker puts output.tar.gz (/opt/ml/output/data, where the samples are) beside model.tar.gz.
  const outputArchive = /^s3:\/\/[^/]+\/.*\/model\.tar\.gz$/.test(summary.modelArtifact) ? summary.modelArtifact.replace(/model\.tar\.gz$/, 'output.tar.gz') : undefined;
  const samples = samplesSummary(event.samples, outputArchive);
  const smoke = smokeSummary(smokeOf(event));
  const captions = captionsSummary(event.samples, run);
  return { ...summary, ...(samples !== undefined ? { samples } : {}), ...(smoke !== undefined ? { smoke } : {}), ...(captions !== undefined ? { captions } : {}) };
}

function reportSuccess(event: Record<string, unknown>, options: ReportOptions): ReportResult {
  const execution = executionOf(event);
  const run = preparedRun(event.run);
  const serving = servingOf(event, run);
  const summary = successSummary(event, run, serving);
  const savings = summary.spotSavingsPercent > 0 ? `, ${summary.spotSavingsPercent}% saved by managed spot` : '';
  const artifacts = artifactLines(summary.samples, summary.smoke);
  const head = [
    ...serving.lines,
    '',
    `Dataset: ${summary.dataset}`,
    `Execution: ${execution.name} (started ${execution.startTime})`,
    `Training job: ${summary.trainingJobName} (${summary.trainingSeconds} s of training, ${summary.billableSeconds} s billed${savings})`,
    `Model artifact: ${summary.modelArtifact}`,
    ...(artifacts.length > 0 ? ['', ...artifacts] : []),
    ...captionsLines(summary.captions),
    ...withBlank(datasetCheckLines(datasetCheck(run))),
  ];
  const tail = ['', 'Generate an image:', `  ${summary.invokeCommand}`, '', JSON.stringify(summary, null, 2)];
  return { subject: snsSubject(serving.subject), message: withLinks(head, tail, options), summary };
}
