import { LINK_SECONDS, presign, runArtifacts } from '../shared/artifact-links';
import { log } from '../shared/log';
import type { HistoryFindings } from './history';
import type { RunStatus, StatusContext } from './status';

/** A run's samples and smoke images, linked for the status answer: signed locally, no S3 call. */

/** Fresh links to what the history names; none when signing fails (the rest of the answer stands). */
export async function artifactLinks(context: Pick<StatusContext, 's3' | 'now'>, history: HistoryFindings): Promise<Pick<RunStatus, 'links' | 'linksExpireAt'>> {
  const artifacts = runArtifacts(history.samples, history.smoke);
  if (context.s3 === undefined || artifacts.length === 0) return {};
  try {
    const links = await presign(context.s3, artifacts);
    const expires = new Date((context.now ?? Date.now)() + LINK_SECONDS * 1000).toISOString();
    return { links: Object.fromEntries(links.map((link) => [link.name, link.url])), linksExpireAt: expires };
  } catch (error) {
    log('WARN', 'Links not signed', { error: error instanceof Error ? error.name : 'Error' });
    return {};
  }
}
