import { Validations } from 'aws-cdk-lib';
import { Annotations, Match } from 'aws-cdk-lib/assertions';
import * as s3 from 'aws-cdk-lib/aws-s3';
import type { Acknowledgment } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { createTestApp, testConfig } from './support/app';
import { LoraPipelineStack } from '../lib/lora-pipeline-stack';

interface RecordedAcknowledgment {
  readonly path: string;
  readonly id: string;
  readonly reason: string;
}

/**
 * Builds the stack with cdk-nag's AwsSolutions checks applied as `bin/app.ts` applies them,
 * recording every acknowledgement the stack makes and leaving out the one numbered `drop`.
 *
 * With cdk-nag 3, findings are a validation plugin's report, not annotations, so
 * `Annotations.fromStack(...).findError(...)` would find nothing: the report is what is checked.
 */
function nagReport(configValues: Record<string, unknown>, drop?: number, extend?: (stack: LoraPipelineStack) => void) {
  const acknowledgements: RecordedAcknowledgment[] = [];
  const original = Validations.prototype.acknowledge;
  const spy = jest.spyOn(Validations.prototype, 'acknowledge').mockImplementation(function (this: Validations, ...rules: Acknowledgment[]) {
    const scope = (this as unknown as { scope: IConstruct }).scope;
    for (const rule of rules) {
      const index = acknowledgements.length;
      acknowledgements.push({ path: scope.node.path, id: rule.id, reason: rule.reason });
      if (index !== drop) original.call(this, rule);
    }
  });
  try {
    const app = createTestApp();
    const config = testConfig(configValues);
    const stack = new LoraPipelineStack(app, config.stackName, { config });
    extend?.(stack);
    const report = new AwsSolutionsChecks(app).validateScope(stack);
    return { stack, report, acknowledgements };
  } finally {
    spy.mockRestore();
  }
}

describe.each([
  ['default configuration', {}],
  ['removalPolicy=destroy', { removalPolicy: 'destroy' }],
  ['sdxl with an S3 base model and e-mail', { modelType: 'sdxl', baseModel: 's3://models/sdxl/', notificationEmail: 'a@example.com' }],
  ['shared endpoint scaling to zero on a type taking the key', { 'endpoint.minInstances': 0, 'endpoint.instanceType': 'ml.p3.2xlarge' }],
  ['dedicated endpoints', { 'endpoint.mode': 'dedicated' }],
  ['FLUX.1-dev with a Hugging Face token secret', { modelType: 'flux1', baseModel: 'black-forest-labs/FLUX.1-dev', huggingFaceTokenSecret: 'hf/token' }],
  [
    'FLUX.1 from an S3 folder (Prepare lists it) on dedicated endpoints, the secret by ARN',
    {
      modelType: 'flux1',
      baseModel: 's3://models/flux/dev/',
      'endpoint.mode': 'dedicated',
      huggingFaceTokenSecret: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:hf/token-AbC123',
    },
  ],
])('cdk-nag AwsSolutions with the %s', (_, configValues: Record<string, unknown>) => {
  const { report, acknowledgements } = nagReport(configValues);

  test('reports no unacknowledged finding, of any severity', () => {
    expect(report.violations).toEqual([]);
    expect(report.success).toBe(true);
  });

  test('every acknowledgement gives a specific reason', () => {
    for (const { id, reason } of acknowledgements) {
      expect([id, reason.length >= 40]).toEqual([id, true]);
    }
  });

  // Negative control for each acknowledgement the stack makes: removing it must fail the check.
  // This also proves that no acknowledgement is stale. (A stack that needs none gets no such test.)
  const table = acknowledgements.map((a, index) => [a.id, a.path, index] as const);
  if (table.length > 0) test.each(table)(
    'removing the acknowledgement of %s on %s makes the check fail',
    (id, path, index) => {
      const { report: withoutIt } = nagReport(configValues, index);
      expect(withoutIt.success).toBe(false);
      const findings = withoutIt.violations.flatMap((v) => v.violatingResources.map((r) => ({ rule: v.ruleName, path: r.constructPath })));
      // One acknowledgement, one finding: an acknowledgement on a parent that silenced several
      // resources at once would hide a new resource's finding too, so each stands by its resource.
      expect(findings).toHaveLength(1);
      const [{ rule, path: found = '' }] = findings;
      expect(rule).toBe(id);
      expect(found === path || found.startsWith(`${path}/`)).toBe(true);
    },
  );
});

describe('the nag check itself (negative control)', () => {
  const PROBE = 'SageMakerLoraPipeline/NonCompliantProbe/Resource';
  /** Adds a bucket that breaks two AwsSolutions rules (no access logs, no TLS-only policy), acknowledged as asked. */
  const probe = (acknowledged: string[]) => (stack: LoraPipelineStack) => {
    const bucket = new s3.Bucket(stack, 'NonCompliantProbe');
    for (const id of acknowledged) Validations.of(bucket).acknowledge({ id, reason: 'test probe: a finding acknowledged on purpose' });
  };
  const findingsOf = (report: ReturnType<typeof nagReport>['report']) =>
    report.violations.flatMap((v) => v.violatingResources.map((r) => `${v.ruleName} @ ${r.constructPath}`)).sort();

  test('a non-compliant resource is reported', () => {
    expect(findingsOf(nagReport({}, undefined, probe([])).report)).toEqual([`AwsSolutions-S1 @ ${PROBE}`, `AwsSolutions-S10 @ ${PROBE}`]);
  });

  test('acknowledging every finding next to the resource makes the stack clean', () => {
    const { report, acknowledgements } = nagReport({}, undefined, probe(['AwsSolutions-S1', 'AwsSolutions-S10']));
    expect(report).toEqual({ success: true, violations: [] });
    // The recorder that drives the per-acknowledgement controls above sees acknowledgements.
    expect(acknowledgements.slice(-2).map((a) => [a.id, a.path])).toEqual([
      ['AwsSolutions-S1', 'SageMakerLoraPipeline/NonCompliantProbe'],
      ['AwsSolutions-S10', 'SageMakerLoraPipeline/NonCompliantProbe'],
    ]);
  });

  test('a removed acknowledgement is caught', () => {
    const probeFirst = nagReport({}, undefined, probe(['AwsSolutions-S1', 'AwsSolutions-S10'])).acknowledgements.length - 2;
    const { stack, report } = nagReport({}, probeFirst, probe(['AwsSolutions-S1', 'AwsSolutions-S10']));
    expect(report.success).toBe(false);
    expect(findingsOf(report)).toEqual([`AwsSolutions-S1 @ ${PROBE}`]);
    // Why these tests read the plugin's report: cdk-nag 3 findings are not annotations.
    expect(Annotations.fromStack(stack).findError('*', Match.anyValue())).toEqual([]);
  });
});
