import { LORA_ERRORS, PREPARE_ERRORS, type ReportEvent, type ReportResult } from '../shared/contract';
import { log } from '../shared/log';
import { isRecord, nonEmptyString, parseJson } from '../shared/run-info';
import { summarizeTraining } from '../shared/training-summary';

/**
 * One CloudWatch embedded-metric-format (EMF) line per reported run, on stdout: CloudWatch Logs
 * turns it into metrics, so Report needs no PutMetricData permission and makes no AWS call.
 * The dashboard (lib/pipeline-dashboard.ts) reads these names; both import them from here.
 */

/** The namespace of the run metrics; the {@link PIPELINE_DIMENSION} keeps two stacks apart. */
export const RUN_METRICS_NAMESPACE = 'LoraPipeline';
export const PIPELINE_DIMENSION = 'Pipeline';
export const ERROR_DIMENSION = 'Error';
/** The Report function's environment variable holding the pipeline's (the stack's) name. */
export const PIPELINE_ENV = 'RUN_METRICS_PIPELINE';

export const RUN_METRICS = {
  succeeded: 'RunsSucceeded',
  failed: 'RunsFailed',
  trainingSeconds: 'TrainingSeconds',
  billableSeconds: 'BillableSeconds',
  spotSavingsSeconds: 'SpotSavingsSeconds',
} as const;

/**
 * Every Error a failed run ends with (lambda/report/failure.ts and contract C's smoke test). Any
 * other name is counted as {@link OTHER_ERROR}: a dimension value makes a metric of its own, so
 * an unbounded set of values would make an unbounded number of metrics.
 */
export const RUN_ERRORS: readonly string[] = [
  PREPARE_ERRORS.invalidInput,
  PREPARE_ERRORS.invalidDataset,
  'PreparationFailed',
  'TrainingFailed',
  'DeploymentFailed',
  'EndpointFailed',
  'EndpointTimeout',
  'RegistrationFailed',
  LORA_ERRORS.loraFileInvalid,
  LORA_ERRORS.loraCheckFailed,
  LORA_ERRORS.sharedEndpointUnavailable,
  'PromotionFailed',
  LORA_ERRORS.smokeTestFailed,
];
export const OTHER_ERROR = 'Other';

type Unit = 'Count' | 'Seconds';

/** One EMF MetricDirective: a namespace, its dimension sets and the metrics it extracts. */
interface MetricDirective {
  readonly Namespace: string;
  readonly Dimensions: string[][];
  readonly Metrics: Array<{ readonly Name: string; readonly Unit: Unit }>;
}

export interface RunMetricsOptions {
  /** Where the line goes; stdout by default (see {@link writeStdout}). */
  readonly write?: (line: string) => void;
  readonly now?: () => number;
  readonly env?: NodeJS.ProcessEnv;
}

/**
 * The functions log in Lambda's JSON format, which wraps console output in a `message` field:
 * CloudWatch would not see `_aws` at the root of that event. Writing to stdout directly is not
 * wrapped, so the line stays an EMF document.
 */
export function writeStdout(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** The bounded Error dimension value of a failure. */
export function errorDimension(error: unknown): string {
  return typeof error === 'string' && RUN_ERRORS.includes(error) ? error : OTHER_ERROR;
}

/** The run's DescribeTrainingJob result, wherever the event carries it; undefined if it never trained. */
function trainingJob(event: Record<string, unknown>): unknown {
  if (event.outcome === 'succeeded') return event.training;
  const state = isRecord(event.state) ? event.state : {};
  if (isRecord(state.training)) return state.training;
  // A failed `.sync` training task's Cause is the job's description as JSON.
  const caught = isRecord(event.error) ? event.error : {};
  const cause = nonEmptyString(caught.Cause);
  const parsed = cause === undefined ? undefined : parseJson(cause);
  return isRecord(parsed) && nonEmptyString(parsed.TrainingJobStatus) !== undefined ? parsed : undefined;
}

/** Training, billable and saved seconds, only for a run that trained (zeros would skew the averages). */
function trainingValues(event: Record<string, unknown>): Record<string, number> {
  const { trainingSeconds, billableSeconds } = summarizeTraining(trainingJob(event));
  if (!(trainingSeconds > 0)) return {};
  const values: Record<string, number> = { [RUN_METRICS.trainingSeconds]: trainingSeconds };
  // No billable time yet means SageMaker has not reported it: no saving to claim either.
  if (billableSeconds > 0) {
    values[RUN_METRICS.billableSeconds] = billableSeconds;
    values[RUN_METRICS.spotSavingsSeconds] = Math.max(0, trainingSeconds - billableSeconds);
  }
  return values;
}

/** The EMF document of one reported run. */
export function runMetricsDocument(event: ReportEvent, result: ReportResult | undefined, pipeline: string, timestamp: number): Record<string, unknown> {
  const received: unknown = event;
  const record = isRecord(received) ? received : {};
  const succeeded = record.outcome === 'succeeded' && result?.error === undefined;
  const values: Record<string, number> = { [succeeded ? RUN_METRICS.succeeded : RUN_METRICS.failed]: 1, ...trainingValues(record) };
  const unitOf = (name: string): Unit => (name === RUN_METRICS.succeeded || name === RUN_METRICS.failed ? 'Count' : 'Seconds');
  const directives: MetricDirective[] = [
    { Namespace: RUN_METRICS_NAMESPACE, Dimensions: [[PIPELINE_DIMENSION]], Metrics: Object.keys(values).map((Name) => ({ Name, Unit: unitOf(Name) })) },
  ];
  const document: Record<string, unknown> = { [PIPELINE_DIMENSION]: pipeline, ...values };
  if (!succeeded) {
    // The failure count again, per Error: the dashboard's "failed by Error" graph.
    directives.push({ Namespace: RUN_METRICS_NAMESPACE, Dimensions: [[PIPELINE_DIMENSION, ERROR_DIMENSION]], Metrics: [{ Name: RUN_METRICS.failed, Unit: 'Count' }] });
    document[ERROR_DIMENSION] = errorDimension(result?.error);
  }
  return { _aws: { Timestamp: timestamp, CloudWatchMetrics: directives }, ...document };
}

/** Writes the run's metrics line. Never throws: a run's report must not fail over its metrics. */
export function emitRunMetrics(event: ReportEvent, result: ReportResult | undefined, options: RunMetricsOptions = {}): void {
  try {
    const env = options.env ?? process.env;
    const pipeline = nonEmptyString(env[PIPELINE_ENV]) ?? nonEmptyString(env.AWS_LAMBDA_FUNCTION_NAME) ?? 'unknown';
    const timestamp = (options.now ?? Date.now)();
    (options.write ?? writeStdout)(JSON.stringify(runMetricsDocument(event, result, pipeline, timestamp)));
  } catch (error) {
    log('WARN', 'Run metrics not written', { error: error instanceof Error ? error.message : String(error) });
  }
}
