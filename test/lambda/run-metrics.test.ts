import { LORA_ERRORS, PREPARE_ERRORS, type FailureStage, type ReportEvent, type ReportResult } from '../../lambda/shared/contract';
import { handler } from '../../lambda/report/index';
import { report } from '../../lambda/report/report';
import {
  emitRunMetrics,
  errorDimension,
  OTHER_ERROR,
  PIPELINE_ENV,
  RUN_ERRORS,
  RUN_METRICS,
  RUN_METRICS_NAMESPACE,
} from '../../lambda/report/run-metrics';
import { preparedRunFixture, sharedRunFixture, trainingJobFixture } from '../support/runs';

const execution = { name: 'pokemon-0123456789abcdef', startTime: '2025-01-01T11:55:00.000Z' };
const run = preparedRunFixture();
const env = { [PIPELINE_ENV]: 'MyPipeline' };
const NOW = 1735736400000;

/** What emitRunMetrics writes for the event, parsed; exactly one line. */
function emitted(event: unknown, result: ReportResult | undefined): Record<string, any> {
  const lines: string[] = [];
  emitRunMetrics(event as ReportEvent, result, { write: (line) => lines.push(line), now: () => NOW, env });
  expect(lines).toHaveLength(1);
  expect(lines[0]).not.toContain('\n');
  const document = JSON.parse(lines[0]) as Record<string, any>;
  expectValidEmf(document);
  return document;
}

const EMF_UNITS = new Set([
  'Seconds', 'Microseconds', 'Milliseconds', 'Bytes', 'Kilobytes', 'Megabytes', 'Gigabytes', 'Terabytes', 'Bits', 'Kilobits', 'Megabits',
  'Gigabits', 'Terabits', 'Percent', 'Count', 'Bytes/Second', 'Kilobytes/Second', 'Megabytes/Second', 'Gigabytes/Second',
  'Terabytes/Second', 'Bits/Second', 'Kilobits/Second', 'Megabits/Second', 'Gigabits/Second', 'Terabits/Second', 'Count/Second', 'None',
]);

function expectOnlyKeys(object: Record<string, unknown>, allowed: string[]): void {
  expect(Object.keys(object).filter((key) => !allowed.includes(key))).toEqual([]);
}

/**
 * The rules of the EMF specification (CloudWatch user guide, "Specification: Embedded metric
 * format") a document must follow for CloudWatch Logs to extract its metrics, with the CloudWatch
 * API's limits (namespace and names at most 255 characters, 30 dimensions, 100 metrics).
 */
function expectValidEmf(document: Record<string, any>): void {
  expect(typeof document).toBe('object');
  const metadata = document._aws;
  expectOnlyKeys(metadata, ['Timestamp', 'CloudWatchMetrics', 'LogGroupName', 'LogStreamName']);
  expect(Number.isInteger(metadata.Timestamp) && metadata.Timestamp > 0).toBe(true);
  expect(Array.isArray(metadata.CloudWatchMetrics) && metadata.CloudWatchMetrics.length > 0).toBe(true);
  for (const directive of metadata.CloudWatchMetrics) {
    expectOnlyKeys(directive, ['Namespace', 'Dimensions', 'Metrics']);
    expect(directive.Namespace).toMatch(/^[^:].{0,254}$/);
    expect(directive.Namespace.startsWith('AWS/')).toBe(false);
    for (const dimensionSet of directive.Dimensions) {
      expect(dimensionSet.length).toBeGreaterThan(0);
      expect(dimensionSet.length).toBeLessThanOrEqual(30);
      for (const dimension of dimensionSet) {
        // A dimension references a root member holding a non-empty string of at most 1024 characters.
        expect(typeof document[dimension]).toBe('string');
        expect(document[dimension].length).toBeGreaterThan(0);
        expect(document[dimension].length).toBeLessThanOrEqual(1024);
      }
    }
    expect(directive.Metrics.length).toBeGreaterThan(0);
    expect(directive.Metrics.length).toBeLessThanOrEqual(100);
    for (const metric of directive.Metrics) {
      expectOnlyKeys(metric, ['Name', 'Unit', 'StorageResolution']);
      expect(metric.Name.length).toBeLessThanOrEqual(255);
      if (metric.Unit !== undefined) expect(EMF_UNITS.has(metric.Unit)).toBe(true);
      // A metric references a root member holding a number (or up to 100 numbers).
      const value = document[metric.Name];
      expect(typeof value === 'number' && Number.isFinite(value)).toBe(true);
    }
  }
}

/** The metric names of each directive, with its dimension sets. */
function directives(document: Record<string, any>): Array<{ dimensions: string[][]; metrics: string[] }> {
  return document._aws.CloudWatchMetrics.map((d: any) => ({ dimensions: d.Dimensions, metrics: d.Metrics.map((m: any) => m.Name) }));
}

describe('a run that succeeded', () => {
  const event: ReportEvent = { outcome: 'succeeded', execution, run, training: trainingJobFixture() };
  const document = emitted(event, report(event, { now: new Date(NOW) }));

  test('counts one success and its training, billable and spot-saved seconds, per pipeline', () => {
    expect(document._aws.Timestamp).toBe(NOW);
    expect(document._aws.CloudWatchMetrics[0].Namespace).toBe(RUN_METRICS_NAMESPACE);
    expect(directives(document)).toEqual([
      {
        dimensions: [['Pipeline']],
        metrics: [RUN_METRICS.succeeded, RUN_METRICS.trainingSeconds, RUN_METRICS.billableSeconds, RUN_METRICS.spotSavingsSeconds],
      },
    ]);
    expect(document).toMatchObject({ Pipeline: 'MyPipeline', RunsSucceeded: 1, TrainingSeconds: 1000, BillableSeconds: 370, SpotSavingsSeconds: 630 });
    expect(document).not.toHaveProperty('Error');
    expect(document).not.toHaveProperty(RUN_METRICS.failed);
  });

  test('a job without spot (billable = training) saved nothing', () => {
    const plain: ReportEvent = { ...event, training: trainingJobFixture({ BillableTimeInSeconds: 1000 }) };
    expect(emitted(plain, report(plain, { now: new Date(NOW) })).SpotSavingsSeconds).toBe(0);
  });
});

describe('a run that failed', () => {
  function failed(stage: FailureStage, error: { Error: string; Cause?: string }, state: Record<string, unknown> = { request: { dataset: 'pokemon' }, run }) {
    const event: ReportEvent = { outcome: 'failed', execution, stage, error, state };
    return { event, result: report(event, { now: new Date(NOW), region: 'eu-west-1' }) };
  }

  test('counts the failure per pipeline and again per Error, without training values when it never trained', () => {
    const { event, result } = failed('prepare', { Error: PREPARE_ERRORS.invalidDataset, Cause: 'no images' });
    const document = emitted(event, result);
    expect(directives(document)).toEqual([
      { dimensions: [['Pipeline']], metrics: [RUN_METRICS.failed] },
      { dimensions: [['Pipeline', 'Error']], metrics: [RUN_METRICS.failed] },
    ]);
    expect(document).toMatchObject({ Pipeline: 'MyPipeline', Error: 'InvalidDataset', RunsFailed: 1 });
    expect(document).not.toHaveProperty(RUN_METRICS.trainingSeconds);
  });

  test("a failed training job's seconds come from the caught Cause (its DescribeTrainingJob)", () => {
    const job = trainingJobFixture({ TrainingJobStatus: 'Failed', FailureReason: 'AlgorithmError', TrainingTimeInSeconds: 400, BillableTimeInSeconds: 100 });
    const { event, result } = failed('training', { Error: 'States.TaskFailed', Cause: JSON.stringify(job) });
    expect(emitted(event, result)).toMatchObject({ Error: 'TrainingFailed', TrainingSeconds: 400, BillableSeconds: 100, SpotSavingsSeconds: 300 });
  });

  test("a deployment failure's seconds come from the state's training job", () => {
    const state = { request: { dataset: 'pokemon' }, run, training: trainingJobFixture() };
    const { event, result } = failed('endpoint', { Error: 'SageMaker.AmazonSageMakerException', Cause: 'quota' }, state);
    expect(emitted(event, result)).toMatchObject({ Error: 'EndpointFailed', RunsFailed: 1, TrainingSeconds: 1000, BillableSeconds: 370 });
  });

  test('an Error outside the known set is counted as Other; a known one as itself', () => {
    expect(errorDimension('Lambda.ServiceException')).toBe(OTHER_ERROR);
    expect(errorDimension(undefined)).toBe(OTHER_ERROR);
    expect(errorDimension('x'.repeat(5000))).toBe(OTHER_ERROR);
    expect(errorDimension('TrainingFailed')).toBe('TrainingFailed');
    const { event } = failed('prepare', { Error: PREPARE_ERRORS.invalidInput });
    expect(emitted(event, { subject: 's', message: 'm', error: 'SomethingNew' }).Error).toBe(OTHER_ERROR);
  });
});

describe('the known Error set matches what Report gives a failed run', () => {
  const STAGES: Record<FailureStage, true> = {
    prepare: true, training: true, model: true, endpoint: true, 'endpoint-timeout': true, register: true, check: true, promote: true, smoke: true,
  };
  const CAUGHT = [...Object.values(PREPARE_ERRORS), ...Object.values(LORA_ERRORS), 'States.TaskFailed', 'Lambda.Unknown', 'SageMaker.AmazonSageMakerException', 'States.Timeout'];

  test('every Error Report produces, at every stage, is in RUN_ERRORS (so none is lumped into Other)', () => {
    const produced = new Set<string>();
    for (const stage of Object.keys(STAGES) as FailureStage[]) {
      for (const fixture of [preparedRunFixture(), sharedRunFixture()]) {
        for (const name of CAUGHT) {
          const result = report({ outcome: 'failed', execution, stage, error: { Error: name, Cause: 'why' }, state: { run: fixture } }, { now: new Date(NOW) });
          produced.add(String(result.error));
        }
      }
    }
    expect([...produced].filter((error) => !RUN_ERRORS.includes(error))).toEqual([]);
    // Report really narrows: raw integration errors never reach the Error dimension.
    expect(produced.has('States.TaskFailed')).toBe(false);
    expect(produced.size).toBeGreaterThan(8);
  });

  test("contract C's smoke test Error is known", () => {
    expect(RUN_ERRORS).toContain('SmokeTestFailed');
  });
});

describe('never throws', () => {
  const partial: Array<[string, unknown]> = [
    ['undefined', undefined],
    ['null', null],
    ['an empty object', {}],
    ['a success without training or run', { outcome: 'succeeded' }],
    ['a success with a training that is not an object', { outcome: 'succeeded', training: 'oops' }],
    ['a failure without state or error', { outcome: 'failed' }],
    ['a failure whose Cause is not JSON', { outcome: 'failed', stage: 'training', error: { Error: 'States.TaskFailed', Cause: '{not json' }, state: 'x' }],
    ['negative and non-numeric seconds', { outcome: 'succeeded', training: { TrainingTimeInSeconds: -5, BillableTimeInSeconds: 'many' } }],
  ];

  test.each(partial)('on %s: one valid line, no training values', (_, event) => {
    const document = emitted(event, undefined);
    expect(document[RUN_METRICS.trainingSeconds]).toBeUndefined();
    expect(document[RUN_METRICS.succeeded] ?? document[RUN_METRICS.failed]).toBe(1);
  });

  test('a writer that throws is logged, not thrown', () => {
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    try {
      expect(() =>
        emitRunMetrics({} as ReportEvent, undefined, {
          write: () => {
            throw new Error('EPIPE');
          },
        }),
      ).not.toThrow();
      expect(warn).toHaveBeenCalledWith(expect.stringContaining('EPIPE'));
    } finally {
      warn.mockRestore();
    }
  });

  test('without the pipeline variable the function name stands in for it', () => {
    const lines: string[] = [];
    emitRunMetrics({} as ReportEvent, undefined, { write: (line) => lines.push(line), env: { AWS_LAMBDA_FUNCTION_NAME: 'fn' } });
    expect(JSON.parse(lines[0]).Pipeline).toBe('fn');
  });
});

describe('the Report handler', () => {
  test('writes the EMF line straight to stdout, not through console (which Lambda wraps in JSON)', async () => {
    const write = jest.spyOn(process.stdout, 'write').mockImplementation(() => true);
    const log = jest.spyOn(console, 'log').mockImplementation(() => undefined);
    const previous = process.env[PIPELINE_ENV];
    process.env[PIPELINE_ENV] = 'HandlerPipeline';
    try {
      await handler({ outcome: 'succeeded', execution, run, training: trainingJobFixture() });
      const lines = write.mock.calls.map(([chunk]) => String(chunk)).filter((text) => text.includes('"_aws"'));
      expect(lines).toHaveLength(1);
      expect(lines[0].endsWith('\n')).toBe(true);
      const document = JSON.parse(lines[0]);
      expectValidEmf(document);
      expect(document).toMatchObject({ Pipeline: 'HandlerPipeline', RunsSucceeded: 1 });
      expect(log.mock.calls.some(([text]) => String(text).includes('"_aws"'))).toBe(false);
    } finally {
      if (previous === undefined) delete process.env[PIPELINE_ENV];
      else process.env[PIPELINE_ENV] = previous;
      write.mockRestore();
      log.mockRestore();
    }
  });
});

describe('the EMF check itself (negative control)', () => {
  const good = () => ({
    _aws: { Timestamp: NOW, CloudWatchMetrics: [{ Namespace: 'LoraPipeline', Dimensions: [['Pipeline']], Metrics: [{ Name: 'RunsFailed', Unit: 'Count' }] }] },
    Pipeline: 'p',
    RunsFailed: 1,
  });
  const broken: Array<[string, (d: Record<string, any>) => void]> = [
    ['a metric whose value is missing', (d) => delete d.RunsFailed],
    ['a metric whose value is a string', (d) => (d.RunsFailed = '1')],
    ['a dimension whose value is a number', (d) => (d.Pipeline = 3)],
    ['a timestamp in an ISO string', (d) => (d._aws.Timestamp = '2025-01-01T00:00:00Z')],
    ['an unknown unit', (d) => (d._aws.CloudWatchMetrics[0].Metrics[0].Unit = 'Runs')],
    ['an extra member in a directive', (d) => (d._aws.CloudWatchMetrics[0].Extra = 1)],
    ['an AWS/ namespace', (d) => (d._aws.CloudWatchMetrics[0].Namespace = 'AWS/States')],
  ];

  test('passes a well-formed document', () => {
    expect(() => expectValidEmf(good())).not.toThrow();
  });

  test.each(broken)('fails %s', (_, breakIt) => {
    const document = good();
    breakIt(document);
    expect(() => expectValidEmf(document)).toThrow();
  });
});
