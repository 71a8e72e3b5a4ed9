import { PREPARE_ERRORS } from '../shared/contract';
import { NamedError } from '../shared/named-error';

/**
 * A refusal of the run: its `name` is the Lambda error's type, which the workflow's Catch and Fail
 * show. Anything else thrown (throttling, access denied) keeps its own name, so the workflow's
 * Retry can tell a passing fault from a run that can never succeed.
 */
export class PrepareError extends NamedError<(typeof PREPARE_ERRORS)[keyof typeof PREPARE_ERRORS]> {}

export function invalidInput(message: string): PrepareError {
  return new PrepareError(PREPARE_ERRORS.invalidInput, message);
}

export function invalidDataset(message: string): PrepareError {
  return new PrepareError(PREPARE_ERRORS.invalidDataset, message);
}

/** `n thing` or `n things`. */
export function count(n: number, thing: string): string {
  return `${n} ${thing}${n === 1 ? '' : 's'}`;
}

/** A value as it appears in the user's JSON. */
export function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}

/** Every problem in one message, so a user fixes them all in one go. */
export function listProblems(what: string, problems: readonly string[], remedy: string): string {
  const numbered = problems.length === 1 ? problems[0] : problems.map((p, i) => `(${i + 1}) ${p}`).join('; ');
  return `${what} has ${count(problems.length, 'problem')}: ${numbered}. ${remedy}`;
}
