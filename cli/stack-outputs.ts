import { type CloudFormationClient, DescribeStacksCommand, type Stack } from '@aws-sdk/client-cloudformation';
import { CONFIG_FIELDS } from '../lib/config-fields';
import type { FlagSpecs } from './args';
import { ConfigurationError } from './command';

/**
 * The deployed stack's outputs (lib/lora-pipeline-stack.ts), found with CloudFormation DescribeStacks
 * on the stack's name. Each can also be given by a flag or an env var, which wins, so the CLI works
 * for a user allowed to use the pipeline but not to read CloudFormation.
 */

/** Each output the CLI reads, with the flag (and env var LORA_PIPELINE_<FLAG>) that gives it directly. */
export const OUTPUTS = {
  DatasetsBucketName: 'datasets-bucket',
  ArtifactsBucketName: 'artifacts-bucket',
  DataKeyArn: 'data-key-arn',
  StateMachineArn: 'state-machine-arn',
  StatusFunctionName: 'status-function',
  NotificationTopicArn: 'notification-topic-arn',
  RegistryTableName: 'registry-table',
  RegistryFunctionName: 'registry-function',
  SharedEndpointName: 'shared-endpoint',
  SharedInferenceComponentName: 'shared-inference-component',
  DatasetPrefix: 'dataset-prefix',
  TriggerFileName: 'trigger-file-name',
  ModelType: 'model-type',
  BaseModel: 'base-model',
  EndpointMode: 'endpoint-mode',
  NamePrefix: 'name-prefix',
  CaptionMissing: 'caption-missing',
  DashboardName: 'dashboard',
} as const;

export type OutputKey = keyof typeof OUTPUTS;
export const OUTPUT_KEYS = Object.keys(OUTPUTS) as OutputKey[];

export const STACK_ENV = 'LORA_PIPELINE_STACK';
export const DEFAULT_STACK_NAME: string = CONFIG_FIELDS.stackName.default ?? 'SageMakerLoraPipeline';

/** The env var that gives an output, e.g. LORA_PIPELINE_DATASETS_BUCKET. */
export function outputEnv(key: OutputKey): string {
  return `LORA_PIPELINE_${OUTPUTS[key].toUpperCase().replace(/-/g, '_')}`;
}

/** The global flags that give outputs directly. */
export const OUTPUT_FLAGS: FlagSpecs = Object.fromEntries(
  OUTPUT_KEYS.map((key) => [OUTPUTS[key], { type: 'string', value: '<value>', description: `the stack output ${key} (env ${outputEnv(key)})` }]),
);

export interface StackOutputs {
  /** The stack they come from. */
  readonly stackName: string;
  /** The output's value; a ConfigurationError naming the flag and env var to give when it is unknown. */
  get(key: OutputKey): string;
  /**
   * The value, or undefined when the stack has no such output (SharedEndpointName in dedicated mode)
   * or was not read (flags gave every output the command asked for).
   */
  find(key: OutputKey): string | undefined;
}

export interface OutputSources {
  /** The stack's name: --stack, else LORA_PIPELINE_STACK, else the default. */
  readonly stackName: string;
  /** Values given by flags, by output key. */
  readonly flags: Partial<Record<OutputKey, string>>;
  readonly env: NodeJS.ProcessEnv;
  readonly cloudformation: () => CloudFormationClient;
  /** The region, for messages. */
  readonly region?: string;
}

/** The stack's name from the flag, the env var or the default. */
export function stackNameOf(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  return flag || env[STACK_ENV] || DEFAULT_STACK_NAME;
}

/** The values given by flags or env vars, flags first; empty strings count as not given. */
function overrides(sources: OutputSources): Partial<Record<OutputKey, string>> {
  const given: Partial<Record<OutputKey, string>> = {};
  for (const key of OUTPUT_KEYS) {
    const value = sources.flags[key] || sources.env[outputEnv(key)];
    if (value) given[key] = value;
  }
  return given;
}

function howToGive(key: OutputKey): string {
  return `--${OUTPUTS[key]} <value> or env ${outputEnv(key)}`;
}

/** The stack, or why it could not be read; `general` when no other output would help either (no region, no credentials). */
export type Described = { readonly stack: Stack } | { readonly problem: string; readonly general?: boolean };

/** What the CLI says when the SDK finds no region (its own words: "Region is missing"). */
export const NO_REGION = 'no AWS region is set: pass --region <region> or set AWS_REGION (or a region in your AWS profile)';

/** A reason every AWS call would fail, with its remedy; undefined for others. */
function generalProblem(name: string, message: string): string | undefined {
  if (/Region is missing/i.test(message)) return NO_REGION;
  if (/Credentials|ExpiredToken|UnrecognizedClient|InvalidClientTokenId/.test(name)) {
    return `AWS credentials are missing or invalid (${name}: ${message}): set AWS_PROFILE or pass --profile, run aws sso login, or set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY`;
  }
  return undefined;
}

async function describe(sources: OutputSources): Promise<Described> {
  const where = sources.region ? ` in ${sources.region}` : '';
  try {
    const response = await sources.cloudformation().send(new DescribeStacksCommand({ StackName: sources.stackName }));
    const stack = response.Stacks?.[0];
    if (stack) return { stack };
  } catch (error) {
    const { name, message } = error as Error;
    const general = generalProblem(name, message);
    if (general) return { problem: general, general: true };
    if (!(name === 'ValidationError' && /does not exist/.test(message))) {
      return { problem: `reading the stack "${sources.stackName}"${where} with CloudFormation DescribeStacks failed: ${name}: ${message}` };
    }
  }
  return {
    problem:
      `there is no CloudFormation stack "${sources.stackName}"${where}: deploy it (npx cdk deploy), ` +
      `or name yours with --stack <name> or env ${STACK_ENV}, or pass --region`,
  };
}

/**
 * The outputs, each from its flag or env var, else from the stack. DescribeStacks is called only
 * when some `needed` output is given by neither; its failure is reported only for an output read
 * later that nothing else gives, naming the flag that would have given it.
 */
export async function loadStackOutputs(
  sources: OutputSources,
  needed: readonly OutputKey[] = OUTPUT_KEYS,
  describeOnce: () => Promise<Described> = () => describe(sources),
): Promise<StackOutputs> {
  const given = overrides(sources);
  const described = needed.length > 0 && needed.every((key) => given[key] !== undefined) ? undefined : await describeOnce();
  const fromStack = new Map<string, string>();
  if (described && 'stack' in described) {
    for (const output of described.stack.Outputs ?? []) if (output.OutputKey && output.OutputValue !== undefined) fromStack.set(output.OutputKey, output.OutputValue);
  }
  const find = (key: OutputKey): string | undefined => {
    if (given[key] !== undefined) return given[key];
    // The stack was not read (flags gave every output asked for): an optional one is then unknown.
    if (!described) return undefined;
    if ('problem' in described) {
      throw new ConfigurationError(described.general ? described.problem : `${described.problem}; or give the output ${key} directly: ${howToGive(key)}`);
    }
    return fromStack.get(key);
  };
  return {
    stackName: sources.stackName,
    find,
    get(key) {
      const value = find(key);
      if (value !== undefined) return value;
      if (!described) throw new ConfigurationError(`the stack output ${key} is needed: give ${howToGive(key)}, or let the CLI read the stack`);
      const status = described && 'stack' in described ? described.stack.StackStatus : undefined;
      throw new ConfigurationError(
        `the stack "${sources.stackName}"${status ? ` (${status})` : ''} has no output ${key}: deploy the current version ` +
          `of this app (npx cdk deploy), or give it with ${howToGive(key)}`,
      );
    },
  };
}

/** `CliContext.outputs`: the stack is described at most once however often a command asks. */
export function outputReader(sources: OutputSources): (...needed: OutputKey[]) => Promise<StackOutputs> {
  let described: Promise<Described> | undefined;
  const describeOnce = () => (described ??= describe(sources));
  return (...needed) => loadStackOutputs(sources, needed.length > 0 ? needed : OUTPUT_KEYS, describeOnce);
}
