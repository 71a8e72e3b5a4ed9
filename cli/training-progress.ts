import { type CloudWatchClient, GetMetricDataCommand, type MetricDataQuery } from '@aws-sdk/client-cloudwatch';
import metricFile from '../containers/training/lora_trainer/metric_definitions.json';

/**
 * A training job's progress from the metrics SageMaker parses out of its log (the container's
 * `lora-metrics` lines, containers/training/lora_trainer/metric_definitions.json): the latest step,
 * epoch and loss. SageMaker publishes them to CloudWatch under the job's host dimension.
 */

export const TRAINING_NAMESPACE = '/aws/sagemaker/TrainingJobs';
/** SageMaker's metrics are per minute; a finer period finds nothing. */
const PERIOD_SECONDS = 60;

/** What each field of the progress is read from; totals only when the container prints them. */
const FIELDS = {
  step: 'train:step',
  epoch: 'train:epoch',
  loss: 'train:loss',
  secondsPerStep: 'train:seconds_per_step',
  totalSteps: 'train:total_steps',
  totalEpochs: 'train:total_epochs',
} as const;

export type ProgressField = keyof typeof FIELDS;
export type TrainingProgress = Partial<Record<ProgressField, number>>;

/** The metric names the deployed job defines: only those are asked for, so a missing total costs nothing. */
export function definedMetrics(definitions: ReadonlyArray<{ Name: string }> = metricFile.metricDefinitions): ProgressField[] {
  const names = new Set(definitions.map((definition) => definition.Name));
  return (Object.keys(FIELDS) as ProgressField[]).filter((field) => names.has(FIELDS[field]));
}

/** One query per field: the latest value of each (Maximum: a minute's last step or epoch is its highest). */
export function progressQueries(jobName: string, fields: readonly ProgressField[]): MetricDataQuery[] {
  return fields.map((field) => ({
    Id: field.toLowerCase(),
    MetricStat: {
      Metric: { Namespace: TRAINING_NAMESPACE, MetricName: FIELDS[field], Dimensions: [{ Name: 'Host', Value: `${jobName}/algo-1` }] },
      Period: PERIOD_SECONDS,
      // The loss is the minute's mean; counters are the minute's highest.
      Stat: field === 'loss' || field === 'secondsPerStep' ? 'Average' : 'Maximum',
    },
    ReturnData: true,
  }));
}

/**
 * The latest value of each metric between the job's start and now. An empty object when the job
 * has printed no step yet (or CloudWatch has not published it: about a minute behind).
 */
export async function trainingProgress(cloudwatch: CloudWatchClient, jobName: string, startMs: number, nowMs: number): Promise<TrainingProgress> {
  const fields = definedMetrics();
  const queries = progressQueries(jobName, fields);
  const progress: TrainingProgress = {};
  let nextToken: string | undefined;
  do {
    const answer = await cloudwatch.send(
      new GetMetricDataCommand({
        MetricDataQueries: queries,
        // Whole minutes around the job, so its first and latest minutes are included.
        StartTime: new Date(Math.floor(startMs / 60_000) * 60_000 - 60_000),
        EndTime: new Date(Math.ceil(nowMs / 60_000) * 60_000 + 60_000),
        ScanBy: 'TimestampDescending',
        NextToken: nextToken,
      }),
    );
    for (const result of answer.MetricDataResults ?? []) {
      const field = fields.find((candidate) => candidate.toLowerCase() === result.Id);
      // Newest first: the first value met is the latest.
      if (field !== undefined && progress[field] === undefined && result.Values?.length) progress[field] = result.Values[0];
    }
    nextToken = answer.NextToken;
  } while (nextToken !== undefined && fields.some((field) => progress[field] === undefined));
  return progress;
}

function loss(value: number): string {
  return value >= 0.001 ? value.toFixed(3) : value.toExponential(2);
}

/** "step 340/1000 (34%), epoch 4/10, loss 0.081"; undefined when nothing is known yet. */
export function progressLine(progress: TrainingProgress): string | undefined {
  const parts: string[] = [];
  if (progress.step !== undefined) {
    const total = progress.totalSteps;
    parts.push(total !== undefined && total > 0 ? `step ${progress.step}/${total} (${Math.floor((progress.step / total) * 100)}%)` : `step ${progress.step}`);
  }
  if (progress.epoch !== undefined) parts.push(progress.totalEpochs !== undefined ? `epoch ${progress.epoch}/${progress.totalEpochs}` : `epoch ${progress.epoch}`);
  if (progress.loss !== undefined) parts.push(`loss ${loss(progress.loss)}`);
  if (progress.secondsPerStep !== undefined) parts.push(`${progress.secondsPerStep.toFixed(2)} s/step`);
  return parts.length > 0 ? parts.join(', ') : undefined;
}
