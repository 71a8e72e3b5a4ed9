import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import type * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { ERROR_DIMENSION, PIPELINE_DIMENSION, RUN_METRICS, RUN_METRICS_NAMESPACE } from '../lambda/report/run-metrics';

/** What the dashboard needs to know of the shared endpoint (`endpoint.mode=shared`). */
export interface DashboardSharedEndpoint {
  readonly endpointName: string;
  readonly inferenceComponentName: string;
  readonly variantName: string;
  /** The shared server's embedded-metric-format namespace and its one dimension's value. */
  readonly serverMetricsNamespace: string;
  readonly modelType: string;
  /** The autoscaling range, drawn on the instance graph. */
  readonly minInstances: number;
  readonly maxInstances: number;
}

/** Properties of {@link PipelineDashboard}. */
export interface PipelineDashboardProps {
  /** The configuration's namePrefix: the dashboard's name, and the first part of every dedicated endpoint's name. */
  readonly namePrefix: string;
  /** The stack's name: the Pipeline dimension of the run metrics. */
  readonly pipeline: string;
  readonly stateMachine: sfn.IStateMachine;
  /** Absent in dedicated-only deployments. */
  readonly sharedEndpoint?: DashboardSharedEndpoint;
}

/**
 * The shared server's metrics on the dashboard (containers/inference/lora_server, `metrics.record`):
 * the per-tier hit flags (their average is the hit rate), the misses, and the times.
 */
export const SERVER_METRICS = {
  hits: ['LoraHitGpu', 'LoraHitHost', 'LoraHitDisk'],
  misses: 'LoraMiss',
  times: ['LoraLoadMs', 'LoraFetchMs', 'LoraSwitchMs', 'GenerationMs'],
} as const;
/** The server's one dimension (app.py's `Metrics(…, {"ModelType": …})`). */
export const SERVER_DIMENSION = 'ModelType';

const RUNS_PERIOD = Duration.hours(1);
const TRAINING_PERIOD = Duration.days(1);
const ENDPOINT_PERIOD = Duration.minutes(5);
/**
 * Utilization metrics come once a minute from each instance: their SampleCount over a period,
 * divided by the period's minutes, is the average number of instances in it.
 */
const INSTANCE_PERIOD = Duration.minutes(5);
const WIDTH = 8;
const HEIGHT = 6;

/**
 * One CloudWatch dashboard for the pipeline: runs (started, succeeded, failed, and failed by
 * Error), training time, the shared endpoint and the dedicated endpoints, and the shared server's
 * LoRA cache. Dedicated endpoints are named per dataset, so their graphs are SEARCH expressions
 * over the name prefix.
 */
export class PipelineDashboard extends Construct {
  public readonly dashboard: cloudwatch.Dashboard;
  public readonly dashboardName: string;

  constructor(scope: Construct, id: string, props: PipelineDashboardProps) {
    super(scope, id);
    this.dashboardName = `${props.namePrefix}-pipeline`;
    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: this.dashboardName,
      defaultInterval: Duration.days(7),
      // The default (auto) fits every graph's period to the time range: "per hour" and "per day"
      // would be drawn at another period, and SampleCount instance counts multiplied.
      periodOverride: cloudwatch.PeriodOverride.INHERIT,
    });
    this.dashboard.addWidgets(...runWidgets(props));
    this.dashboard.addWidgets(...trainingWidgets(props.pipeline));
    if (props.sharedEndpoint) {
      this.dashboard.addWidgets(...sharedEndpointWidgets(props.sharedEndpoint));
      this.dashboard.addWidgets(...serverWidgets(props.sharedEndpoint));
    }
    // Shared deployments too: a run the shared endpoint cannot serve gets an endpoint of its own.
    this.dashboard.addWidgets(...dedicatedEndpointWidgets(props.namePrefix, props.sharedEndpoint?.endpointName));
  }
}

function graph(title: string, left: cloudwatch.IMetric[], right: cloudwatch.IMetric[] = [], extra: Partial<cloudwatch.GraphWidgetProps> = {}): cloudwatch.GraphWidget {
  return new cloudwatch.GraphWidget({ title, left, right, width: WIDTH, height: HEIGHT, ...extra });
}

function runWidgets(props: PipelineDashboardProps): cloudwatch.IWidget[] {
  const options = { period: RUNS_PERIOD, statistic: cloudwatch.Stats.SUM };
  const runs = graph('Runs (per hour)', [
    props.stateMachine.metricStarted({ ...options, label: 'started' }),
    props.stateMachine.metricSucceeded({ ...options, label: 'succeeded' }),
    props.stateMachine.metricFailed({ ...options, label: 'failed' }),
  ]);
  const byError = graph('Failed runs by Error (per hour)', [
    new cloudwatch.SearchExpression({
      expression: search(`${schema(RUN_METRICS_NAMESPACE, PIPELINE_DIMENSION, ERROR_DIMENSION)} MetricName="${RUN_METRICS.failed}" ${PIPELINE_DIMENSION}="${props.pipeline}"`, 'Sum', RUNS_PERIOD),
      label: '',
    }),
  ]);
  return [runs, byError];
}

function runMetric(pipeline: string, metricName: string, label: string): cloudwatch.Metric {
  return new cloudwatch.Metric({
    namespace: RUN_METRICS_NAMESPACE,
    metricName,
    dimensionsMap: { [PIPELINE_DIMENSION]: pipeline },
    statistic: cloudwatch.Stats.SUM,
    period: TRAINING_PERIOD,
    label,
  });
}

function trainingWidgets(pipeline: string): cloudwatch.IWidget[] {
  const training = runMetric(pipeline, RUN_METRICS.trainingSeconds, 'training');
  const billable = runMetric(pipeline, RUN_METRICS.billableSeconds, 'billable');
  const saved = runMetric(pipeline, RUN_METRICS.spotSavingsSeconds, 'saved by managed spot');
  const seconds = graph('Training seconds (per day)', [training, billable, saved]);
  const percent = graph(
    'Spot savings (% of training time, per day)',
    [new cloudwatch.MathExpression({ expression: '100 * saved / training', usingMetrics: { saved, training }, label: 'spot savings %', period: TRAINING_PERIOD })],
    [],
    { leftYAxis: { min: 0, max: 100 } },
  );
  return [seconds, percent];
}

function sharedEndpointWidgets(shared: DashboardSharedEndpoint): cloudwatch.IWidget[] {
  const component = { InferenceComponentName: shared.inferenceComponentName };
  const metric = (metricName: string, statistic: string, label: string) =>
    new cloudwatch.Metric({ namespace: 'AWS/SageMaker', metricName, dimensionsMap: component, statistic, period: ENDPOINT_PERIOD, label });
  const invocations = graph(`Shared endpoint ${shared.endpointName}: invocations and errors (per 5 min)`, [
    metric('Invocations', cloudwatch.Stats.SUM, 'invocations'),
    metric('Invocation4XXErrors', cloudwatch.Stats.SUM, '4xx'),
    metric('Invocation5XXErrors', cloudwatch.Stats.SUM, '5xx'),
    // Requests that found no copy (scaled to zero, or still scaling out).
    metric('NoCapacityInvocationFailures', cloudwatch.Stats.SUM, 'no capacity'),
  ]);
  const latency = graph('Shared endpoint: model latency (seconds)', [
    seconds('average', metric('ModelLatency', cloudwatch.Stats.AVERAGE, 'average'), 'average'),
    seconds('p90', metric('ModelLatency', cloudwatch.Stats.percentile(90), 'p90'), 'p90'),
  ]);
  const samples = new cloudwatch.Metric({
    namespace: '/aws/sagemaker/Endpoints',
    metricName: 'CPUUtilization',
    dimensionsMap: { EndpointName: shared.endpointName, VariantName: shared.variantName },
    statistic: cloudwatch.Stats.SAMPLE_COUNT,
    period: INSTANCE_PERIOD,
  });
  // PERIOD() keeps the count right at whatever period the graph is shown with.
  const instanceCount = new cloudwatch.MathExpression({
    expression: 'samples / (PERIOD(samples) / 60)',
    usingMetrics: { samples },
    label: 'instances (CPUUtilization samples per minute)',
    period: INSTANCE_PERIOD,
  });
  const instances = graph('Shared endpoint: instances', [instanceCount], [], {
    leftYAxis: { min: 0 },
    leftAnnotations: [
      { value: shared.minInstances, label: 'endpoint.minInstances' },
      { value: shared.maxInstances, label: 'endpoint.maxInstances' },
    ],
  });
  return [invocations, latency, instances];
}

/** ModelLatency is in microseconds; generations take seconds. Each graph id must be unique in its graph. */
function seconds(id: string, microseconds: cloudwatch.Metric, label: string): cloudwatch.MathExpression {
  return new cloudwatch.MathExpression({ expression: `${id} / 1000000`, usingMetrics: { [id]: microseconds }, label, period: ENDPOINT_PERIOD });
}

function serverWidgets(shared: DashboardSharedEndpoint): cloudwatch.IWidget[] {
  const metric = (metricName: string, statistic: string) =>
    new cloudwatch.Metric({
      namespace: shared.serverMetricsNamespace,
      metricName,
      dimensionsMap: { [SERVER_DIMENSION]: shared.modelType },
      statistic,
      period: ENDPOINT_PERIOD,
      label: metricName,
    });
  const cache = graph(
    'LoRA cache: hit rate per tier (left), downloads (right)',
    SERVER_METRICS.hits.map((name) => metric(name, cloudwatch.Stats.AVERAGE)),
    [metric(SERVER_METRICS.misses, cloudwatch.Stats.SUM)],
    { leftYAxis: { min: 0, max: 1 } },
  );
  const times = graph(
    'LoRA load, fetch and switch times, generation (ms, average)',
    SERVER_METRICS.times.map((name) => metric(name, cloudwatch.Stats.AVERAGE)),
  );
  return [cache, times];
}

/**
 * Dedicated endpoints are `<namePrefix>-<dataset>`: a SEARCH on the prefix's token finds them (and
 * any other endpoint with that token in its name), without the shared endpoint, which shares the prefix.
 */
function dedicatedEndpointWidgets(namePrefix: string, sharedEndpointName: string | undefined): cloudwatch.IWidget[] {
  const notShared = sharedEndpointName === undefined ? '' : ` NOT EndpointName="${sharedEndpointName}"`;
  const query = (namespace: string, metricName: string) =>
    `${schema(namespace, 'EndpointName', 'VariantName')} MetricName="${metricName}" EndpointName=${namePrefix}${notShared}`;
  const endpoints = (namespace: string, metricName: string, statistic: string, period: Duration, label: string) =>
    new cloudwatch.SearchExpression({ expression: search(query(namespace, metricName), statistic, period), label });
  const invocations = graph('Dedicated endpoints: invocations (per 5 min)', [endpoints('AWS/SageMaker', 'Invocations', 'Sum', ENDPOINT_PERIOD, 'invocations')]);
  const errors = graph('Dedicated endpoints: 4xx and 5xx (per 5 min)', [
    endpoints('AWS/SageMaker', 'Invocation4XXErrors', 'Sum', ENDPOINT_PERIOD, '4xx'),
    endpoints('AWS/SageMaker', 'Invocation5XXErrors', 'Sum', ENDPOINT_PERIOD, '5xx'),
  ]);
  const latency = graph('Dedicated endpoints: model latency (µs, average)', [endpoints('AWS/SageMaker', 'ModelLatency', 'Average', ENDPOINT_PERIOD, 'latency')]);
  // A SEARCH's period is its own argument (PERIOD() takes only plain metrics): samples per minute.
  const samples = search(query('/aws/sagemaker/Endpoints', 'CPUUtilization'), 'SampleCount', INSTANCE_PERIOD);
  const instances = graph('Dedicated endpoints: instances', [
    new cloudwatch.MathExpression({
      expression: `${samples} / ${INSTANCE_PERIOD.toMinutes()}`,
      usingMetrics: {},
      // A dynamic label: one line per endpoint, named after it (a math result has no label of its own).
      label: "instances ${PROP('Dim.EndpointName')}",
      period: INSTANCE_PERIOD,
    }),
  ]);
  return [invocations, errors, latency, instances];
}

/** A SEARCH metric schema: the namespace quoted, as a name with characters other than letters and digits must be. */
function schema(namespace: string, ...dimensions: string[]): string {
  return `{${[`"${namespace}"`, ...dimensions].join(',')}}`;
}

/** A SEARCH expression over one period. */
function search(query: string, statistic: string, period: Duration): string {
  return `SEARCH('${query}', '${statistic}', ${period.toSeconds()})`;
}
