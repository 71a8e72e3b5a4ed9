import { S3Client } from '@aws-sdk/client-s3';
import { type ArtifactLink, LINK_SECONDS, presign, runArtifacts } from '../shared/artifact-links';
import { type ReportEvent, type ReportResult } from '../shared/contract';
import { log } from '../shared/log';
import { isRecord } from '../shared/run-info';
import { report, smokeOf } from './report';
import { emitRunMetrics } from './run-metrics';

// Presigning signs locally with the role's credentials: no S3 call is made.
const s3 = new S3Client({});

/** Links to a successful run's samples and smoke images; none rather than a failed report. */
async function links(event: ReportEvent): Promise<ArtifactLink[]> {
  if (!isRecord(event) || event.outcome !== 'succeeded') return [];
  try {
    return await presign(s3, runArtifacts(event.samples, smokeOf(event)));
  } catch (error) {
    log('WARN', 'Links not signed', { error: error instanceof Error ? error.name : String(error) });
    return [];
  }
}

/** The workflow's Report success / Report failure step. Its only AWS work is signing links locally: the workflow notifies. */
export async function handler(event: ReportEvent): Promise<ReportResult> {
  const result = report(event, { now: new Date(), region: process.env.AWS_REGION, links: await links(event), linkSeconds: LINK_SECONDS });
  emitRunMetrics(event, result);
  log(result.error === undefined ? 'INFO' : 'WARN', 'Run reported', {
    execution: event?.execution?.name,
    outcome: event?.outcome,
    run: result.summary?.run,
    error: result.error,
    cleanup: result.cleanup,
  });
  return result;
}
