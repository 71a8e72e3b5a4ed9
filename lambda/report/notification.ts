import { isRecord, nonEmptyString } from '../shared/run-info';

/** What the success and the failure notification share: the SNS subject, the execution, sections. */

/** SNS refuses a Subject of 100 characters or more ("less than 100 characters long"). */
export const MAX_SUBJECT_LENGTH = 99;

/**
 * A subject SNS accepts: printable ASCII on one line. Accents are dropped rather than the letter,
 * other characters become `?`, and a subject too long is cut with `...`.
 */
export function snsSubject(subject: string): string {
  const ascii = subject
    .normalize('NFKD')
    .replace(/\p{M}/gu, '')
    .replace(/\s+/g, ' ')
    .replace(/[^\x20-\x7e]/g, '?')
    .trim();
  const text = ascii.length > 0 ? ascii : 'LoRA run';
  return text.length <= MAX_SUBJECT_LENGTH ? text : `${text.slice(0, MAX_SUBJECT_LENGTH - 3).trimEnd()}...`;
}

export function executionOf(event: Record<string, unknown>): { name: string; startTime: string } {
  const execution = isRecord(event.execution) ? event.execution : {};
  return { name: nonEmptyString(execution.name) ?? 'unknown', startTime: nonEmptyString(execution.startTime) ?? 'unknown' };
}

/** A section of lines after a blank one, or nothing. */
export const withBlank = (lines: string[]): string[] => (lines.length > 0 ? ['', ...lines] : []);
