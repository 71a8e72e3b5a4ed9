import { isRecord, nonEmptyString as text } from './run-info';

/**
 * What a run's training job amounts to, read from a DescribeTrainingJob result. The report
 * function gets that result as JSON from the `.sync` task (timestamps as numbers, or ISO strings
 * in the local harness); the status function gets it from the SDK (timestamps as Dates). Both
 * read it through here, so a run's numbers are the same in its notification and its status.
 */

export interface TrainingTransition {
  readonly status: string;
  readonly startTime?: string;
  readonly endTime?: string;
  readonly message?: string;
}

export interface TrainingSummary {
  readonly jobName?: string;
  readonly status?: string;
  readonly secondaryStatus?: string;
  readonly trainingSeconds: number;
  readonly billableSeconds: number;
  /** `(1 - billable / training) × 100`, one decimal; 0 without spot savings. */
  readonly spotSavingsPercent: number;
  readonly modelArtifact?: string;
  readonly failureReason?: string;
  readonly transitions: TrainingTransition[];
  /** The job's CloudWatch Logs streams in the console; absent when the job ARN gives no region. */
  readonly logsUrl?: string;
}

function seconds(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : 0;
}

/**
 * A timestamp as ISO 8601. Numbers are epoch seconds as the SageMaker API sends them, or epoch
 * milliseconds as some JSON serializers write Dates; no date this code meets is before 1973, when
 * milliseconds pass 1e11, nor seconds after year 5000.
 */
export function isoTime(value: unknown): string | undefined {
  let date: Date | undefined;
  if (value instanceof Date) date = value;
  else if (typeof value === 'number' && Number.isFinite(value)) date = new Date(value < 1e11 ? value * 1000 : value);
  else if (typeof value === 'string' && value.length > 0) date = new Date(value);
  return date && !Number.isNaN(date.getTime()) ? date.toISOString() : undefined;
}

/**
 * Spot savings as SageMaker's console computes them; 0 when there is nothing to compare. No
 * billable time means SageMaker has not reported it (a job still running), not a free job.
 */
export function spotSavingsPercent(trainingSeconds: number, billableSeconds: number): number {
  if (!(trainingSeconds > 0) || !(billableSeconds > 0) || billableSeconds >= trainingSeconds) return 0;
  return Math.round((1 - billableSeconds / trainingSeconds) * 1000) / 10;
}

/** The region of an ARN (`arn:<partition>:<service>:<region>:…`). */
export function arnRegion(arn: unknown): string | undefined {
  if (typeof arn !== 'string') return undefined;
  const parts = arn.split(':');
  return parts.length >= 6 && parts[0] === 'arn' && /^[a-z0-9-]+$/.test(parts[3]) ? parts[3] : undefined;
}

/**
 * The console's view of the job's log streams in `/aws/sagemaker/TrainingJobs`. The fragment is
 * the console's own double encoding (`$25` for `%`), which it needs to keep the filter.
 */
export function trainingLogsUrl(region: string, jobName: string): string {
  const filter = encodeURIComponent(jobName).replace(/%/g, '$25');
  return (
    `https://${region}.console.aws.amazon.com/cloudwatch/home?region=${region}` +
    `#logsV2:log-groups/log-group/$252Faws$252Fsagemaker$252FTrainingJobs$3FlogStreamNameFilter$3D${filter}`
  );
}

export function summarizeTraining(job: unknown): TrainingSummary {
  const described = isRecord(job) ? job : {};
  const trainingSeconds = seconds(described.TrainingTimeInSeconds);
  const billableSeconds = seconds(described.BillableTimeInSeconds);
  const jobName = text(described.TrainingJobName);
  const region = arnRegion(described.TrainingJobArn);
  const artifacts = isRecord(described.ModelArtifacts) ? described.ModelArtifacts : {};
  const transitions = Array.isArray(described.SecondaryStatusTransitions) ? described.SecondaryStatusTransitions : [];
  return {
    jobName,
    status: text(described.TrainingJobStatus),
    secondaryStatus: text(described.SecondaryStatus),
    trainingSeconds,
    billableSeconds,
    // Without managed spot the billable time is absent or equal to the training time: no savings.
    spotSavingsPercent: described.EnableManagedSpotTraining === false ? 0 : spotSavingsPercent(trainingSeconds, billableSeconds),
    modelArtifact: text(artifacts.S3ModelArtifacts),
    failureReason: text(described.FailureReason),
    transitions: transitions.filter(isRecord).map((transition) => ({
      status: text(transition.Status) ?? 'Unknown',
      startTime: isoTime(transition.StartTime),
      endTime: isoTime(transition.EndTime),
      message: text(transition.StatusMessage),
    })),
    logsUrl: region && jobName ? trainingLogsUrl(region, jobName) : undefined,
  };
}
