import * as fs from 'node:fs';
import * as path from 'node:path';
import type { CfnResource } from 'aws-cdk-lib';
import type { Template } from 'aws-cdk-lib/assertions';
import { emitRunMetrics, PIPELINE_ENV, RUN_METRICS_NAMESPACE } from '../lambda/report/run-metrics';
import type { ReportEvent } from '../lambda/shared/contract';
import { OUTPUT_KEYS } from '../cli/stack-outputs';
import { SERVER_DIMENSION } from '../lib/pipeline-dashboard';
import { synthPipeline } from './support/app';
import { resolveIntrinsics } from './support/asl';
import { trainingJobFixture, preparedRunFixture } from './support/runs';

const SERVER_DIR = path.resolve(__dirname, '..', 'containers', 'inference', 'lora_server');

/** One metric a dashboard graph draws: a plain metric, or a SEARCH's schema and metric name. */
interface DrawnMetric {
  readonly namespace: string;
  readonly metricName: string;
  /** Plain metrics: their dimensions; SEARCH: the schema's dimension names, values unknown (''). */
  readonly dimensions: Record<string, string>;
  readonly search?: string;
}

function resources(template: Template) {
  return template.toJSON().Resources as never;
}

/** The dashboard's body, its Fn::Join resolved in the fake environment, parsed. */
function dashboardBody(template: Template): { widgets: Array<{ properties: Record<string, any> }> } {
  const dashboards = Object.values(template.findResources('AWS::CloudWatch::Dashboard')) as Array<{ Properties: Record<string, unknown> }>;
  expect(dashboards).toHaveLength(1);
  return JSON.parse(String(resolveIntrinsics(dashboards[0].Properties.DashboardBody, resources(template))));
}

const SEARCH = /^SEARCH\('\{"([^"]+)",([^}]*)\} MetricName="([^"]+)"(.*)', '([^']+)', (\d+)\)( \/ \d+)?$/;

function drawnMetrics(template: Template): DrawnMetric[] {
  const drawn: DrawnMetric[] = [];
  for (const widget of dashboardBody(template).widgets) {
    for (const entry of (widget.properties.metrics ?? []) as unknown[][]) {
      const last = entry[entry.length - 1] as Record<string, unknown> | string;
      if (typeof last === 'object' && typeof last.expression === 'string') {
        const match = SEARCH.exec(last.expression);
        if (!match) continue; // plain metric math over the graph's own metrics
        const dimensions = Object.fromEntries(match[2].split(',').map((name) => [name, '']));
        drawn.push({ namespace: match[1], metricName: match[3], dimensions, search: match[4] });
        continue;
      }
      const [namespace, metricName, ...rest] = entry.filter((item) => typeof item === 'string') as string[];
      const dimensions: Record<string, string> = {};
      for (let i = 0; i < rest.length; i += 2) dimensions[rest[i]] = rest[i + 1];
      drawn.push({ namespace, metricName, dimensions });
    }
  }
  return drawn;
}

/** `name{dim,dim}` of a metric: what makes it one CloudWatch metric (besides dimension values). */
function key(namespace: string, metricName: string, dimensions: string[]): string {
  return `${namespace}:${metricName}{${[...dimensions].sort().join(',')}}`;
}

/** What Report writes for a success and a failure, as metric keys. */
function emittedRunMetrics(): Set<string> {
  const lines: string[] = [];
  const write = (line: string) => lines.push(line);
  const execution = { name: 'e', startTime: '2025-01-01T00:00:00Z' };
  const run = preparedRunFixture();
  const events: ReportEvent[] = [
    { outcome: 'succeeded', execution, run, training: trainingJobFixture() },
    { outcome: 'failed', execution, stage: 'endpoint', error: { Error: 'States.TaskFailed' }, state: { run, training: trainingJobFixture() } },
  ];
  for (const event of events) emitRunMetrics(event, event.outcome === 'failed' ? { subject: 's', message: 'm', error: 'EndpointFailed' } : undefined, { write, env: { [PIPELINE_ENV]: 'p' } });
  const keys = new Set<string>();
  for (const document of lines.map((line) => JSON.parse(line))) {
    for (const directive of document._aws.CloudWatchMetrics) {
      for (const set of directive.Dimensions) for (const metric of directive.Metrics) keys.add(key(directive.Namespace, metric.Name, set));
    }
  }
  return keys;
}

/** Every metric the inference server records (`….record("Name", value, "Unit")` in lora_server/*.py). */
function serverMetricNames(): Set<string> {
  const names = new Set<string>();
  for (const file of fs.readdirSync(SERVER_DIR).filter((f) => f.endsWith('.py'))) {
    const text = fs.readFileSync(path.join(SERVER_DIR, file), 'utf8');
    for (const match of text.matchAll(/\.record\(\s*"(\w+)"\s*,/g)) names.add(match[1]);
  }
  return names;
}

/** The dimension names the server's Metrics is built with (app.py: `Metrics(settings.metrics_namespace, {…})`). */
function serverDimensionNames(): string[] {
  const app = fs.readFileSync(path.join(SERVER_DIR, 'app.py'), 'utf8');
  const match = /Metrics\(\s*settings\.metrics_namespace\s*,\s*\{([^}]*)\}/.exec(app);
  if (!match) throw new Error('app.py no longer builds Metrics(settings.metrics_namespace, {...}): update this test with it');
  return [...match[1].matchAll(/"(\w+)"\s*:/g)].map((m) => m[1]);
}

function onlyProperties(template: Template, type: string): Record<string, any> {
  const found = Object.values(template.findResources(type)) as Array<{ Properties: Record<string, any> }>;
  expect(found).toHaveLength(1);
  return resolveIntrinsics(found[0].Properties, resources(template)) as Record<string, any>;
}

function stateMachineArn(template: Template): string {
  const [id] = Object.keys(template.findResources('AWS::StepFunctions::StateMachine'));
  return String(resolveIntrinsics({ Ref: id }, resources(template)));
}

describe('the dashboard of a shared deployment', () => {
  const { template, stack } = synthPipeline({ namePrefix: 'acme' });
  const drawn = drawnMetrics(template);

  test('is named after the name prefix', () => {
    template.hasResourceProperties('AWS::CloudWatch::Dashboard', { DashboardName: 'acme-pipeline' });
  });

  test("draws runs started, succeeded and failed from the stack's own state machine", () => {
    const states = drawn.filter((m) => m.namespace === 'AWS/States');
    expect(states.map((m) => m.metricName).sort()).toEqual(['ExecutionsFailed', 'ExecutionsStarted', 'ExecutionsSucceeded']);
    for (const metric of states) expect(metric.dimensions).toEqual({ StateMachineArn: stateMachineArn(template) });
  });

  test('every run metric it draws is one Report writes, under this stack as Pipeline', () => {
    const emitted = emittedRunMetrics();
    const runMetrics = drawn.filter((m) => m.namespace === RUN_METRICS_NAMESPACE);
    const drawnKeys = runMetrics.map((m) => key(m.namespace, m.metricName, Object.keys(m.dimensions)));
    expect(drawnKeys.filter((k) => !emitted.has(k))).toEqual([]);
    // Failed by Error, and every seconds metric.
    expect(drawnKeys).toEqual(expect.arrayContaining([...emitted].filter((k) => k.includes('Error') || k.includes('Seconds'))));
    for (const metric of runMetrics) {
      if (metric.search !== undefined) expect(metric.search).toContain(`Pipeline="${stack.stackName}"`);
      else expect(metric.dimensions.Pipeline).toBe(stack.stackName);
    }
  });

  test("the Report function is told the stack's name, which the dashboard filters on", () => {
    const report = stack.workflow.reportFunction.function.node.defaultChild as CfnResource;
    const properties = template.toJSON().Resources[stack.getLogicalId(report)].Properties;
    expect(properties.Environment.Variables[PIPELINE_ENV]).toBe(stack.stackName);
    // Only Report writes run metrics.
    const others = Object.values(template.findResources('AWS::Lambda::Function')).filter((f: any) => f.Properties.Environment?.Variables?.[PIPELINE_ENV]);
    expect(others).toHaveLength(1);
  });

  test("draws the shared endpoint's invocations, latency and errors by its inference component, instances by endpoint and variant", () => {
    const component = onlyProperties(template, 'AWS::SageMaker::InferenceComponent');
    const endpoint = onlyProperties(template, 'AWS::SageMaker::Endpoint');
    const byComponent = drawn.filter((m) => m.namespace === 'AWS/SageMaker' && m.search === undefined);
    expect(byComponent.map((m) => m.metricName)).toEqual(
      expect.arrayContaining(['Invocations', 'ModelLatency', 'Invocation4XXErrors', 'Invocation5XXErrors']),
    );
    for (const metric of byComponent) expect(metric.dimensions).toEqual({ InferenceComponentName: component.InferenceComponentName });
    const instances = drawn.filter((m) => m.namespace === '/aws/sagemaker/Endpoints' && m.search === undefined);
    expect(instances).toEqual([
      { namespace: '/aws/sagemaker/Endpoints', metricName: 'CPUUtilization', dimensions: { EndpointName: endpoint.EndpointName, VariantName: component.VariantName } },
    ]);
  });

  test("draws every LoRA cache metric the server records, in the server's namespace and dimension", () => {
    const model = onlyProperties(template, 'AWS::SageMaker::Model');
    const namespace = model.PrimaryContainer.Environment.METRICS_NAMESPACE;
    const recorded = serverMetricNames();
    expect(recorded.size).toBeGreaterThanOrEqual(6); // the parse found the server's record calls
    const server = drawn.filter((m) => m.namespace === namespace);
    const names = server.map((m) => m.metricName);
    expect(names.filter((name) => !recorded.has(name))).toEqual([]);
    expect(names).toEqual(expect.arrayContaining([...recorded].filter((name) => name.startsWith('Lora'))));
    expect(serverDimensionNames()).toEqual([SERVER_DIMENSION]);
    // The value the server reads for its dimension: its MODEL_TYPE (settings.py).
    expect(model.PrimaryContainer.Environment.MODEL_TYPE).toBe('sd15');
    for (const metric of server) expect(metric.dimensions).toEqual({ [SERVER_DIMENSION]: model.PrimaryContainer.Environment.MODEL_TYPE });
  });

  test('searches dedicated endpoints by the name prefix, leaving out the shared endpoint', () => {
    const endpoint = onlyProperties(template, 'AWS::SageMaker::Endpoint');
    const searches = drawn.filter((m) => m.search !== undefined && m.namespace !== RUN_METRICS_NAMESPACE);
    expect(searches.map((m) => m.metricName).sort()).toEqual(['CPUUtilization', 'Invocation4XXErrors', 'Invocation5XXErrors', 'Invocations', 'ModelLatency']);
    for (const metric of searches) {
      expect(metric.dimensions).toEqual({ EndpointName: '', VariantName: '' });
      expect(metric.search).toBe(` EndpointName=acme NOT EndpointName="${endpoint.EndpointName}"`);
    }
  });
});

describe('the dashboard keeps each graph at its own period', () => {
  const { template } = synthPipeline({ namePrefix: 'acme' });
  const body = dashboardBody(template) as { periodOverride?: string; widgets: Array<{ properties: Record<string, any> }> };
  const graph = (title: string) => {
    const widget = body.widgets.find((w) => w.properties.title === title);
    if (!widget) throw new Error(`no graph ${title}`);
    return widget.properties.metrics as unknown[][];
  };

  test('the dashboard obeys the periods set (auto would redraw "per hour" and "per day" at another period)', () => {
    expect(body.periodOverride).toBe('inherit');
  });

  test("the shared endpoint's instances: CPUUtilization samples per minute, whatever the graph's period", () => {
    const metrics = graph('Shared endpoint: instances');
    const [expression] = metrics.filter((m) => typeof (m[0] as any).expression === 'string').map((m) => (m[0] as any).expression as string);
    const samples = metrics.find((m) => m[1] === 'CPUUtilization') as unknown[];
    const options = samples[samples.length - 1] as Record<string, unknown>;
    expect(options).toMatchObject({ stat: 'SampleCount', visible: false });
    expect(expression).toBe(`${String(options.id)} / (PERIOD(${String(options.id)}) / 60)`);
  });

  test('the dedicated endpoints\' instances: each SEARCH series divided by its period in minutes', () => {
    const [entry] = graph('Dedicated endpoints: instances');
    const expression = (entry[0] as { expression: string }).expression;
    const match = /^SEARCH\('.*MetricName="CPUUtilization".*', 'SampleCount', (\d+)\) \/ (\d+)$/.exec(expression);
    expect(match).not.toBeNull();
    expect(Number(match![1]) / 60).toBe(Number(match![2]));
    // A math result over a SEARCH takes the expression's label: without a dynamic one every line would read the same.
    expect((entry[0] as { label: string }).label).toContain("${PROP('Dim.EndpointName')}");
  });
});

describe('the dashboard of a dedicated-only deployment', () => {
  const { template } = synthPipeline({ namePrefix: 'solo', 'endpoint.mode': 'dedicated' });
  const drawn = drawnMetrics(template);

  test('has no shared endpoint or server graphs', () => {
    expect(drawn.filter((m) => 'InferenceComponentName' in m.dimensions)).toEqual([]);
    expect(drawn.filter((m) => m.namespace.endsWith('/Serving'))).toEqual([]);
    expect(drawn.filter((m) => m.namespace === '/aws/sagemaker/Endpoints' && m.search === undefined)).toEqual([]);
  });

  test('still draws runs, training and the dedicated endpoints, with nothing to leave out of the search', () => {
    expect(drawn.some((m) => m.namespace === 'AWS/States')).toBe(true);
    expect(drawn.some((m) => m.namespace === RUN_METRICS_NAMESPACE && m.metricName === 'TrainingSeconds')).toBe(true);
    const searches = drawn.filter((m) => m.namespace === 'AWS/SageMaker');
    expect(searches.length).toBeGreaterThan(0);
    for (const metric of searches) expect(metric.search).toBe(' EndpointName=solo');
  });
});

describe("the stack's outputs for the command-line tool (contract D)", () => {
  test('give the deploy-time settings as configured', () => {
    const { template } = synthPipeline({
      namePrefix: 'acme',
      datasetPrefix: 'data/in/',
      triggerFileName: 'go.start',
      modelType: 'sdxl',
      'endpoint.mode': 'dedicated',
      'training.captionMissing': true,
    });
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    const values = Object.fromEntries(
      ['DatasetPrefix', 'TriggerFileName', 'ModelType', 'BaseModel', 'EndpointMode', 'NamePrefix', 'CaptionMissing', 'DashboardName'].map((id) => [id, outputs[id]?.Value]),
    );
    expect(values).toEqual({
      DatasetPrefix: 'data/in/',
      TriggerFileName: 'go.start',
      ModelType: 'sdxl',
      BaseModel: 'stabilityai/stable-diffusion-xl-base-1.0',
      EndpointMode: 'dedicated',
      NamePrefix: 'acme',
      CaptionMissing: 'true',
      DashboardName: 'acme-pipeline',
    });
    template.hasResourceProperties('AWS::CloudWatch::Dashboard', { DashboardName: values.DashboardName });
  });

  test('the defaults, in shared mode', () => {
    const { template } = synthPipeline();
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    expect(outputs.EndpointMode.Value).toBe('shared');
    expect(outputs.DatasetPrefix.Value).toBe('datasets/');
    expect(outputs.TriggerFileName.Value).toBe('dataset.toml');
    expect(outputs.DashboardName.Value).toBe('lora-pipeline');
    // Left to the model type: the CLI then uses the caption_missing default, as Prepare does.
    expect(outputs.CaptionMissing.Value).toBe('default');
    expect(synthPipeline({ 'training.captionMissing': false }).template.toJSON().Outputs.CaptionMissing.Value).toBe('false');
    // Every output the CLI reads is there (in shared mode, the shared endpoint's too).
    expect(OUTPUT_KEYS.filter((key) => outputs[key] === undefined)).toEqual([]);
  });
});
