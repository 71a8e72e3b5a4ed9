/**
 * Checks a Task state's Parameters against the request shape the AWS SDK v3 itself carries (its
 * Smithy schemas), the way Step Functions and the service would: an unknown field, a value of the
 * wrong type or a missing required member is reported instead of silently dropped.
 *
 * The schemas are the SDK's compact runtime form (pinned with the SDK in package-lock.json):
 * a structure is `[3, namespace, name, traits, memberNames, memberSchemas, requiredCount?]`, a list
 * `[1, …, memberSchema]`, a map `[2, …, keySchema, valueSchema]`, a simple type with traits
 * `[0, …, type]`, an operation `[9, …, input, output]`; a member with traits of its own is
 * `[schema, memberTraits]`; a number is a simple type (0 string, 1 number, 2 boolean) with 64 set
 * for a list of it and 128 for a map of it; a function is a lazy reference to another schema.
 */
type Schema = number | unknown[] | (() => Schema);

const SIMPLE_WITH_TRAITS = 0;
const STRUCTURE = 3;
const LIST = 1;
const MAP = 2;
const OPERATION = 9;
const LIST_OF = 64;
const MAP_OF = 128;
const SIMPLE: Record<number, string> = { 0: 'string', 1: 'number', 2: 'boolean' };

export interface ShapeProblems {
  /** Fields Step Functions refuses outright (States.Runtime): unknown names, wrong JSON types. */
  readonly runtime: string[];
  /** Fields the service refuses (a validation error): required members that are missing. */
  readonly validation: string[];
}

function resolve(schema: Schema): number | unknown[] {
  return typeof schema === 'function' ? resolve(schema()) : schema;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Returns `value` with its keys renamed to the schema's own member names where they differ only in
 * case (Step Functions takes PascalCase even for camelCase APIs), and collects what is wrong.
 */
function check(value: unknown, schema: Schema, path: string, problems: ShapeProblems): unknown {
  const shape = resolve(schema);
  if (typeof shape === 'number') {
    if (shape & LIST_OF) return check(value, [LIST, '', '', 0, shape & ~LIST_OF], path, problems);
    if (shape & MAP_OF) return check(value, [MAP, '', '', 0, 0, shape & ~MAP_OF], path, problems);
    const expected = SIMPLE[shape];
    if (expected && typeof value !== expected) problems.runtime.push(`${path} must be a ${expected}, not ${JSON.stringify(value)}`);
    return value;
  }
  if (typeof shape[0] === 'function' || Array.isArray(shape[0])) {
    return check(value, shape[0] as Schema, path, problems);
  }
  switch (shape[0]) {
    case SIMPLE_WITH_TRAITS:
      return check(value, shape[4] as Schema, path, problems);
    case STRUCTURE: {
      if (!isObject(value)) {
        problems.runtime.push(`${path} must be an object, not ${JSON.stringify(value)}`);
        return value;
      }
      const names = shape[4] as string[];
      const members = shape[5] as Schema[];
      const required = typeof shape[6] === 'number' ? shape[6] : 0;
      const renamed: Record<string, unknown> = {};
      for (const [key, member] of Object.entries(value)) {
        const index = names.findIndex((n) => n === key) >= 0 ? names.indexOf(key) : names.findIndex((n) => n.toLowerCase() === key.toLowerCase());
        if (index < 0) {
          problems.runtime.push(`The field "${key}" is not supported by Step Functions (at ${path}; ${shape[2]} has ${names.join(', ')})`);
          continue;
        }
        renamed[names[index]] = check(member, members[index], `${path}.${names[index]}`, problems);
      }
      for (const name of names.slice(0, required)) {
        if (!(name in renamed)) problems.validation.push(`${path}.${name} is required`);
      }
      return renamed;
    }
    case LIST:
      if (!Array.isArray(value)) {
        problems.runtime.push(`${path} must be a list, not ${JSON.stringify(value)}`);
        return value;
      }
      return value.map((item, i) => check(item, shape[4] as Schema, `${path}[${i}]`, problems));
    case MAP:
      if (!isObject(value)) {
        problems.runtime.push(`${path} must be an object, not ${JSON.stringify(value)}`);
        return value;
      }
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, check(v, shape[5] as Schema, `${path}.${k}`, problems)]));
    default:
      return value;
  }
}

/**
 * Checks `input` against the request shape of an SDK command class and returns it with member
 * names in the SDK's own case, with the problems found.
 */
export function checkRequest(Command: new (input: never) => unknown, input: unknown): { input: unknown; problems: ShapeProblems } {
  const problems: ShapeProblems = { runtime: [], validation: [] };
  const operation = (new Command({} as never) as { schema?: unknown }).schema;
  const shape = Array.isArray(operation) && operation[0] === OPERATION ? (operation[4] as Schema) : undefined;
  if (shape === undefined) throw new Error(`${Command.name} carries no request schema; this SDK version is not supported by the harness`);
  return { input: check(input, shape, 'Parameters', problems), problems };
}
