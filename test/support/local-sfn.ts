import './promise-with-resolvers';
import { ExecutionError, StateMachine } from 'aws-local-stepfunctions';
import type { RunOptions, StateMachineDefinition } from 'aws-local-stepfunctions';

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
/** A state as the harness reads it: its type, a Task's Resource and Parameters, and nested machines. */
export interface AnyState {
  readonly Type: string;
  readonly Resource?: string;
  readonly Parameters?: Record<string, unknown>;
  readonly Branches?: StateMachineDefinition[];
  readonly Iterator?: StateMachineDefinition;
  readonly ItemProcessor?: StateMachineDefinition;
}
type EventLog = Awaited<ReturnType<ReturnType<StateMachine['run']>['eventLogs']['next']>>['value'];

/** Answers one Task state: gets the state's effective input (after `Parameters`), returns the service's result. */
export type TaskHandler = (input: JsonValue) => Promise<JsonValue> | JsonValue;

export interface LocalRunOptions {
  /** One handler per Task state name. Every Task state must have one: the harness never calls AWS. */
  readonly handlers: Record<string, TaskHandler>;
  /** Milliseconds a Wait state pauses, per state name. @default 0 for every Wait state */
  readonly waitMs?: Record<string, number>;
  /** Milliseconds before each retry. @default 0 */
  readonly retryMs?: number;
  /** The Context object (`$$`) fields the definition reads, e.g. `{ Execution: { Name: 'run-1' } }`. */
  readonly context?: RunOptions['context'];
}

export interface LocalRunResult {
  readonly status: 'SUCCEEDED' | 'FAILED';
  /** The execution's output, when it succeeded. */
  readonly output?: JsonValue;
  /** Error and Cause of the failed execution. */
  readonly error?: string;
  readonly cause?: string;
  /** Every state entered, in order, repeats included. */
  readonly visited: string[];
  /** How often each state was retried. */
  readonly retries: Record<string, number>;
  readonly events: EventLog[];
}

/** An error a Task handler throws to make the state fail with this Error name and Cause. */
export function taskError(name: string, cause: string): Error {
  const error = new Error(cause);
  error.name = name;
  return error;
}

/** Every state of a definition by name, those in Parallel branches and Map processors included. */
export function allStates(definition: StateMachineDefinition): Array<[string, AnyState]> {
  return Object.entries(definition.States).flatMap(([name, raw]) => {
    const state = raw as AnyState;
    const nested = [...(state.Branches ?? []), ...(state.Iterator ? [state.Iterator] : []), ...(state.ItemProcessor ? [state.ItemProcessor] : [])];
    return [[name, state] as [string, AnyState], ...nested.flatMap(allStates)];
  });
}

function statesOf(definition: StateMachineDefinition, kind: string): string[] {
  return allStates(definition).flatMap(([name, state]) => (state.Type === kind ? [name] : []));
}

/**
 * Runs a plain ASL definition in-process with aws-local-stepfunctions: Task states are answered by
 * the test's handlers, Wait states and retry back-offs take no time unless asked to.
 */
export async function runLocally(definition: StateMachineDefinition, input: JsonValue, options: LocalRunOptions): Promise<LocalRunResult> {
  const tasks = statesOf(definition, 'Task');
  const missing = tasks.filter((name) => !(name in options.handlers));
  const unknown = Object.keys(options.handlers).filter((name) => !tasks.includes(name));
  if (missing.length > 0 || unknown.length > 0) {
    throw new Error(`Task handlers must match the Task states ${JSON.stringify(tasks)}: missing ${JSON.stringify(missing)}, unknown ${JSON.stringify(unknown)}`);
  }
  const waitTimeOverrides = Object.fromEntries(statesOf(definition, 'Wait').map((name) => [name, options.waitMs?.[name] ?? 0]));
  const retryable = ['Task', 'Parallel', 'Map'].flatMap((kind) => statesOf(definition, kind));
  const retryIntervalOverrides = Object.fromEntries(retryable.map((name) => [name, options.retryMs ?? 0]));

  // A plain JSON copy: objects from another realm (structuredClone inside jest, say) are not seen
  // as objects by the interpreter, which would then leave their `.$` fields unresolved.
  const plain = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;
  const machine = new StateMachine(plain(definition), { validationOptions: { checkArn: true, checkPaths: true } });
  const execution = machine.run(plain(input) as never, {
    overrides: { taskResourceLocalHandlers: options.handlers as never, waitTimeOverrides, retryIntervalOverrides },
    context: options.context,
  });

  let output: JsonValue | undefined;
  let failure: unknown;
  try {
    output = (await execution.result) as JsonValue;
  } catch (error) {
    if (!(error instanceof ExecutionError)) throw error;
    failure = error;
  }

  const events: EventLog[] = [];
  for await (const event of execution.eventLogs) events.push(event);
  const visited = events.flatMap((e) => (e?.type === 'StateEntered' ? [e.state.name] : []));
  const retries: Record<string, number> = {};
  for (const e of events) if (e?.type === 'StateRetried') retries[e.state.name] = (retries[e.state.name] ?? 0) + 1;

  if (failure === undefined) return { status: 'SUCCEEDED', output, visited, retries, events };
  const failed = events.find((e) => e?.type === 'ExecutionFailed');
  const errorInfo = failed && 'Error' in failed ? failed : undefined;
  return {
    status: 'FAILED',
    error: errorInfo?.Error,
    cause: errorInfo?.Cause === undefined ? undefined : String(errorInfo.Cause),
    visited,
    retries,
    events,
  };
}
