import { type Template } from 'aws-cdk-lib/assertions';
import type { StateMachineDefinition } from 'aws-local-stepfunctions';
import aslValidator from 'asl-validator';

/** Values the fake deployment uses for CloudFormation pseudo parameters. */
export const FAKE_ENV = {
  partition: 'aws',
  region: 'us-east-1',
  account: '123456789012',
  urlSuffix: 'amazonaws.com',
  stackName: 'TestStack',
} as const;

type CfnResources = Record<string, { Type: string; Properties?: Record<string, unknown> }>;

/**
 * Values of `Ref` and `Fn::GetAtt` per logical id, to override the fake ones the resolver derives.
 * E.g. `{ MyFn: { Ref: 'my-fn', Arn: 'arn:aws:lambda:…' } }`.
 */
export type PhysicalValues = Record<string, Record<string, string>>;

const SERVICE_OF_TYPE: Record<string, string> = {
  'AWS::Lambda::Function': 'lambda',
  'AWS::SNS::Topic': 'sns',
  'AWS::SQS::Queue': 'sqs',
  'AWS::IAM::Role': 'iam',
  'AWS::S3::Bucket': 's3',
  'AWS::KMS::Key': 'kms',
  'AWS::StepFunctions::StateMachine': 'states',
  'AWS::Logs::LogGroup': 'logs',
};

/** A deterministic, well-formed stand-in for a resource's physical name. */
function physicalName(logicalId: string, type: string): string {
  return type === 'AWS::S3::Bucket' ? logicalId.toLowerCase() : logicalId;
}

/** What CloudFormation would return for `Ref` of the resource, in the fake environment. */
function fakeRef(logicalId: string, type: string): string {
  const { partition, region, account } = FAKE_ENV;
  const name = physicalName(logicalId, type);
  switch (type) {
    case 'AWS::SNS::Topic':
      return `arn:${partition}:sns:${region}:${account}:${name}`;
    case 'AWS::StepFunctions::StateMachine':
      return `arn:${partition}:states:${region}:${account}:stateMachine:${name}`;
    case 'AWS::SQS::Queue':
      return `https://sqs.${region}.${FAKE_ENV.urlSuffix}/${account}/${name}`;
    default:
      return name;
  }
}

/**
 * SageMaker hosting resources whose ARN attribute names the resource by the name its properties
 * give (SageMaker writes it lowercase in the ARN), else by its logical id.
 */
const SAGEMAKER_ARNS: Record<string, { attribute: string; resource: string; nameProperty: string }> = {
  'AWS::SageMaker::Endpoint': { attribute: 'EndpointArn', resource: 'endpoint', nameProperty: 'EndpointName' },
  'AWS::SageMaker::InferenceComponent': { attribute: 'InferenceComponentArn', resource: 'inference-component', nameProperty: 'InferenceComponentName' },
};

/** What CloudFormation would return for `Fn::GetAtt` of the resource, in the fake environment. */
function fakeAttribute(logicalId: string, type: string, attribute: string, properties: Record<string, unknown> = {}): string {
  const { partition, region, account } = FAKE_ENV;
  const name = physicalName(logicalId, type);
  const sagemaker = SAGEMAKER_ARNS[type];
  if (sagemaker?.attribute === attribute) {
    const given = properties[sagemaker.nameProperty];
    return `arn:${partition}:sagemaker:${region}:${account}:${sagemaker.resource}/${(typeof given === 'string' ? given : logicalId).toLowerCase()}`;
  }
  if (attribute !== 'Arn') return `${logicalId}.${attribute}`;
  switch (type) {
    case 'AWS::Lambda::Function':
      return `arn:${partition}:lambda:${region}:${account}:function:${name}`;
    case 'AWS::IAM::Role':
      return `arn:${partition}:iam::${account}:role/${name}`;
    case 'AWS::S3::Bucket':
      return `arn:${partition}:s3:::${name}`;
    case 'AWS::KMS::Key':
      return `arn:${partition}:kms:${region}:${account}:key/${name}`;
    case 'AWS::Logs::LogGroup':
      return `arn:${partition}:logs:${region}:${account}:log-group:${name}:*`;
    case 'AWS::DynamoDB::Table':
      return `arn:${partition}:dynamodb:${region}:${account}:table/${name}`;
    case 'AWS::SNS::Topic':
    case 'AWS::StepFunctions::StateMachine':
      return fakeRef(logicalId, type);
    default:
      return `arn:${partition}:${SERVICE_OF_TYPE[type] ?? 'unknown'}:${region}:${account}:${name}`;
  }
}

/**
 * Resolves the CloudFormation intrinsics CDK puts into synthesized strings (`Fn::Join`, `Ref`,
 * `Fn::GetAtt`, `Fn::Sub`, `Fn::Select`, `Fn::Split`) to plain values in a fake environment.
 * Anything else is an error naming the intrinsic, never silently passed through.
 */
export function resolveIntrinsics(value: unknown, resources: CfnResources, physical: PhysicalValues = {}): unknown {
  const resolve = (v: unknown): unknown => resolveIntrinsics(v, resources, physical);
  const typeOf = (logicalId: string): string => {
    const resource = resources[logicalId];
    if (!resource) throw new Error(`Reference to unknown resource "${logicalId}"`);
    return resource.Type;
  };
  const ref = (name: string): string => {
    const pseudo: Record<string, string> = {
      'AWS::Partition': FAKE_ENV.partition,
      'AWS::Region': FAKE_ENV.region,
      'AWS::AccountId': FAKE_ENV.account,
      'AWS::URLSuffix': FAKE_ENV.urlSuffix,
      'AWS::StackName': FAKE_ENV.stackName,
    };
    return pseudo[name] ?? physical[name]?.Ref ?? fakeRef(name, typeOf(name));
  };
  const getAtt = (logicalId: string, attribute: string): string =>
    physical[logicalId]?.[attribute] ?? fakeAttribute(logicalId, typeOf(logicalId), attribute, resources[logicalId].Properties);

  if (Array.isArray(value)) return value.map(resolve);
  if (value === null || typeof value !== 'object') return value;

  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length !== 1 || !(entries[0][0] === 'Ref' || entries[0][0].startsWith('Fn::'))) {
    return Object.fromEntries(entries.map(([k, v]) => [k, resolve(v)]));
  }
  const [fn, args] = entries[0];
  switch (fn) {
    case 'Ref':
      return ref(args as string);
    case 'Fn::GetAtt': {
      const [logicalId, attribute] = typeof args === 'string' ? args.split(/\.(.*)/s) : (args as string[]);
      return getAtt(logicalId, attribute);
    }
    case 'Fn::Join': {
      const [separator, parts] = args as [string, unknown[]];
      return (resolve(parts) as unknown[]).map(String).join(separator);
    }
    case 'Fn::Select': {
      const [index, list] = args as [unknown, unknown];
      return (resolve(list) as unknown[])[Number(resolve(index))];
    }
    case 'Fn::Split': {
      const [separator, source] = args as [string, unknown];
      return String(resolve(source)).split(separator);
    }
    case 'Fn::Sub': {
      const [text, variables] = typeof args === 'string' ? [args, {}] : (args as [string, Record<string, unknown>]);
      return text.replace(/\$\{([^}]*)\}/g, (_, name: string) => {
        // `${!Literal}` is CloudFormation's escape for a literal `${Literal}`.
        if (name.startsWith('!')) return `\${${name.slice(1)}}`;
        if (name in variables) return String(resolve(variables[name]));
        const [logicalId, attribute] = name.split(/\.(.*)/s);
        return attribute ? getAtt(logicalId, attribute) : ref(logicalId);
      });
    }
    default:
      throw new Error(`Cannot resolve CloudFormation intrinsic ${fn}: ${JSON.stringify(args)}`);
  }
}

/** Logical ids of the state machines in a template. */
export function stateMachineIds(template: Template): string[] {
  return Object.keys(template.findResources('AWS::StepFunctions::StateMachine'));
}

/**
 * The plain ASL JSON of a state machine in a synthesized template, with every token resolved.
 *
 * @param logicalId which state machine; may be omitted when the template has exactly one
 */
export function extractDefinition(template: Template, logicalId?: string, physical: PhysicalValues = {}): StateMachineDefinition {
  const resources = template.toJSON().Resources as CfnResources;
  const ids = stateMachineIds(template);
  const id = logicalId ?? (ids.length === 1 ? ids[0] : undefined);
  if (!id || !ids.includes(id)) {
    throw new Error(`Name one state machine of ${JSON.stringify(ids)}; got ${JSON.stringify(logicalId)}`);
  }
  const props = resources[id].Properties ?? {};
  let definition: unknown;
  if (props.DefinitionString !== undefined) {
    definition = JSON.parse(String(resolveIntrinsics(props.DefinitionString, resources, physical)));
  } else if (props.Definition !== undefined) {
    const substitutions = (resolveIntrinsics(props.DefinitionSubstitutions ?? {}, resources, physical) ?? {}) as Record<string, unknown>;
    // Substitutions land inside JSON strings, so they are inserted JSON-escaped.
    const text = JSON.stringify(resolveIntrinsics(props.Definition, resources, physical)).replace(
      /\$\{([A-Za-z0-9_]+)\}/g,
      (whole, name: string) => (name in substitutions ? JSON.stringify(String(substitutions[name])).slice(1, -1) : whole),
    );
    definition = JSON.parse(text);
  } else {
    throw new Error(`State machine ${id} has neither DefinitionString nor Definition`);
  }
  return definition as StateMachineDefinition;
}

/** Validates ASL with asl-validator; throws with every error it reports. */
export function assertValidAsl(definition: unknown): void {
  // The validator writes defaults (QueryLanguage) into what it is given: let it have a copy.
  const { isValid, errorsText } = aslValidator(structuredClone(definition));
  if (!isValid) throw new Error(`Invalid ASL: ${errorsText('\n')}`);
}
