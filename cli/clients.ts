import { CloudFormationClient } from '@aws-sdk/client-cloudformation';
import { CloudWatchClient } from '@aws-sdk/client-cloudwatch';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { LambdaClient } from '@aws-sdk/client-lambda';
import { S3Client } from '@aws-sdk/client-s3';
import { SageMakerClient } from '@aws-sdk/client-sagemaker';
import { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { SFNClient } from '@aws-sdk/client-sfn';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';

/**
 * The AWS SDK v3 clients the commands use, each created on first use: `validate` and `--help`
 * create none, so they work offline and without credentials.
 */

export interface Clients {
  readonly region: string | undefined;
  readonly s3: S3Client;
  readonly sfn: SFNClient;
  readonly sagemaker: SageMakerClient;
  readonly sagemakerRuntime: SageMakerRuntimeClient;
  readonly lambda: LambdaClient;
  /** The registry table's document client (plain JS values, not AttributeValues). */
  readonly dynamodb: DynamoDBDocumentClient;
  readonly cloudformation: CloudFormationClient;
  readonly cloudwatch: CloudWatchClient;
}

/** Sends every client to one endpoint (moto in tests, a local emulator), with path-style S3 URLs. */
export const ENDPOINT_ENV = 'LORA_PIPELINE_ENDPOINT_URL';

export interface ClientOptions {
  /** --region, else AWS_REGION / AWS_DEFAULT_REGION, else the SDK's own lookup (the profile's region). */
  readonly region?: string;
  /** --profile, else the SDK's own lookup (AWS_PROFILE). */
  readonly profile?: string;
  readonly env: NodeJS.ProcessEnv;
  /** Extra client settings, for tests (credentials, maxAttempts). */
  readonly overrides?: Record<string, unknown>;
}

/** The region the clients use, when the command line or env names one. */
export function regionOf(options: Pick<ClientOptions, 'region' | 'env'>): string | undefined {
  return options.region || options.env.AWS_REGION || options.env.AWS_DEFAULT_REGION || undefined;
}

export function createClients(options: ClientOptions): Clients {
  const region = regionOf(options);
  const endpoint = options.env[ENDPOINT_ENV] || undefined;
  const config = {
    ...(region ? { region } : {}),
    ...(options.profile ? { profile: options.profile } : {}),
    ...(endpoint ? { endpoint } : {}),
    ...options.overrides,
  };
  const cache = new Map<string, unknown>();
  const lazy = <T>(name: string, make: () => T): T => {
    if (!cache.has(name)) cache.set(name, make());
    return cache.get(name) as T;
  };
  return {
    region,
    get s3() {
      // An emulator serves buckets by path, not by virtual host name.
      return lazy('s3', () => new S3Client({ ...config, ...(endpoint ? { forcePathStyle: true } : {}) }));
    },
    get sfn() {
      return lazy('sfn', () => new SFNClient(config));
    },
    get sagemaker() {
      return lazy('sagemaker', () => new SageMakerClient(config));
    },
    get sagemakerRuntime() {
      return lazy('sagemakerRuntime', () => new SageMakerRuntimeClient(config));
    },
    get lambda() {
      return lazy('lambda', () => new LambdaClient(config));
    },
    get dynamodb() {
      return lazy('dynamodb', () => DynamoDBDocumentClient.from(new DynamoDBClient(config), { marshallOptions: { removeUndefinedValues: true } }));
    },
    get cloudformation() {
      return lazy('cloudformation', () => new CloudFormationClient(config));
    },
    get cloudwatch() {
      return lazy('cloudwatch', () => new CloudWatchClient(config));
    },
  };
}
