import * as path from 'node:path';
import { Duration, type RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as nodejs from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

/** Properties of {@link PipelineFunction}. */
export interface PipelineFunctionProps {
  /** The function's folder under `lambda/`, holding its `index.ts` (which exports `handler`). */
  readonly name: string;
  /** What the function does, in the Lambda console. */
  readonly description: string;
  /** Environment variables. */
  readonly environment?: Record<string, string>;
  /**
   * How long an invocation may run.
   * @default Duration.seconds(30)
   */
  readonly timeout?: Duration;
  /**
   * Memory; also buys CPU for parsing and hashing.
   * @default 256
   */
  readonly memorySize?: number;
  /** Retention of the function's log group. */
  readonly logRetention: logs.RetentionDays;
  /** What happens to the log group when the stack is deleted. */
  readonly removalPolicy: RemovalPolicy;
  /**
   * Where events of asynchronous invocations go once Lambda's retries are spent.
   * @default none
   */
  readonly deadLetterQueue?: sqs.IQueue;
}

/** Where the functions' sources are. */
const LAMBDA_ROOT = path.join(__dirname, '..', 'lambda');

/**
 * One of the pipeline's TypeScript functions, built the same way for all: Node.js 24 (the current
 * LTS) on ARM64, bundled and minified by esbuild with source maps and with the AWS SDK clients the
 * project pins (not the runtime's, which change without notice), X-Ray tracing, and a role of its
 * own that can write only to the function's own log group, which the stack creates with a retention.
 */
export class PipelineFunction extends Construct {
  public readonly function: nodejs.NodejsFunction;
  public readonly role: iam.Role;
  public readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: PipelineFunctionProps) {
    super(scope, id);
    this.logGroup = new logs.LogGroup(this, 'Logs', {
      retention: props.logRetention,
      removalPolicy: props.removalPolicy,
    });
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `Runs the ${props.name} function of ${Stack.of(this).stackName}`,
    });
    this.function = new nodejs.NodejsFunction(this, 'Function', {
      entry: path.join(LAMBDA_ROOT, props.name, 'index.ts'),
      handler: 'handler',
      description: props.description,
      runtime: lambda.Runtime.NODEJS_24_X,
      architecture: lambda.Architecture.ARM_64,
      memorySize: props.memorySize ?? 256,
      timeout: props.timeout ?? Duration.seconds(30),
      role: this.role,
      logGroup: this.logGroup,
      loggingFormat: lambda.LoggingFormat.JSON,
      tracing: lambda.Tracing.ACTIVE,
      deadLetterQueue: props.deadLetterQueue,
      environment: { NODE_OPTIONS: '--enable-source-maps', ...props.environment },
      bundling: {
        minify: true,
        sourceMap: true,
        target: 'node24',
        bundleAwsSDK: true,
      },
    });
    // The log group exists before the function, so the role needs no logs:CreateLogGroup.
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'WriteItsLogs',
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [this.logGroup.logGroupArn],
      }),
    );
    Validations.of(this.role.node.findChild('DefaultPolicy')).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'X-Ray tracing: xray:PutTraceSegments and xray:PutTelemetryRecords support no resource-level permissions.',
    });
  }
}
