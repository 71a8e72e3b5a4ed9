import { type ReportEvent, type ReportResult } from '../shared/contract';
import { log } from '../shared/log';
import { report } from './report';

/** The workflow's Report success / Report failure step. No AWS calls: the workflow notifies. */
export async function handler(event: ReportEvent): Promise<ReportResult> {
  const result = report(event, { now: new Date(), region: process.env.AWS_REGION });
  log(result.error === undefined ? 'INFO' : 'WARN', 'Run reported', {
    execution: event?.execution?.name,
    outcome: event?.outcome,
    run: result.summary?.run,
    error: result.error,
    cleanup: result.cleanup,
  });
  return result;
}
