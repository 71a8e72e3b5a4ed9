import { GetExecutionHistoryCommand, type HistoryEvent, type SFNClient, type StateExitedEventDetails } from '@aws-sdk/client-sfn';
import { STATES } from '../shared/contract';
import { isRecord, parseJson } from '../shared/run-info';

/** What an execution's history says of the run: where it is, and what its states answered. */

export const HISTORY_PAGE_SIZE = 200;
export const MAX_HISTORY_PAGES = 10;

export interface HistoryFindings {
  /** The latest state entered. */
  readonly currentState?: string;
  /** Prepare's latest answer (`.run` of its output), settled or not. */
  readonly prepared?: unknown;
  /** The Register LoRA state's result (`.lora` of its output). */
  readonly registered?: unknown;
  /** The Make LoRA current state's result (`.promotion` of its output). */
  readonly promotion?: unknown;
  /** Publish samples' answer, or the error it recorded (`.samples`). */
  readonly samples?: unknown;
  /** The smoke test's result: `.smoke` of Smoke test the endpoint, or `.check.smoke` of Try LoRA. */
  readonly smoke?: unknown;
}

/** The findings so far, filled in as the events are met, newest first. */
interface HistoryScan {
  readonly found: { -readonly [K in keyof HistoryFindings]: HistoryFindings[K] };
  /** Prepare's exit was met (its answer may still be undefined: a failed Prepare). */
  preparedFound: boolean;
}

/**
 * Reads the history newest first. The first Prepare exit met is its latest answer: once Prepare
 * has settled the workflow never runs it again, so an unsettled answer there means no settled one
 * exists, and the search can stop.
 */
export async function readHistory(sfn: SFNClient, executionArn: string, needCurrentState: boolean): Promise<HistoryFindings> {
  const scan: HistoryScan = {
    found: { currentState: undefined, prepared: undefined, registered: undefined, promotion: undefined, samples: undefined, smoke: undefined },
    preparedFound: false,
  };
  let nextToken: string | undefined;
  for (let page = 0; page < MAX_HISTORY_PAGES; page++) {
    const history = await sfn.send(
      new GetExecutionHistoryCommand({ executionArn, reverseOrder: true, maxResults: HISTORY_PAGE_SIZE, nextToken, includeExecutionData: true }),
    );
    for (const event of history.events ?? []) {
      noteEvent(scan, event);
      if (scan.preparedFound && (scan.found.currentState !== undefined || !needCurrentState)) return scan.found;
    }
    nextToken = history.nextToken;
    if (nextToken === undefined) break;
  }
  return scan.found;
}

function noteEvent(scan: HistoryScan, event: HistoryEvent): void {
  if (scan.found.currentState === undefined && event.type?.endsWith('StateEntered')) scan.found.currentState = event.stateEnteredEventDetails?.name;
  const exited = event.type?.endsWith('StateExited') ? event.stateExitedEventDetails : undefined;
  if (exited !== undefined) noteExit(scan, exited);
}

function noteExit(scan: HistoryScan, exited: StateExitedEventDetails): void {
  const found = scan.found;
  // Both states run after Prepare: newest first, they are met before its exit.
  if (found.registered === undefined && exited.name === STATES.registerLora) found.registered = stateResult(exited.output, 'lora');
  if (found.promotion === undefined && exited.name === STATES.makeLoraCurrent) found.promotion = stateResult(exited.output, 'promotion');
  if (found.samples === undefined && exited.name === STATES.publishSamples) found.samples = stateResult(exited.output, 'samples');
  if (found.smoke === undefined && exited.name === STATES.smokeTest) found.smoke = stateResult(exited.output, 'smoke');
  if (found.smoke === undefined && exited.name === STATES.tryLora) found.smoke = (stateResult(exited.output, 'check') as { smoke?: unknown } | undefined)?.smoke;
  if (!scan.preparedFound && exited.name === STATES.prepare) {
    scan.preparedFound = true;
    const output = parseJson(exited.output);
    // A Prepare that failed exits with its error caught beside the previous pass's answer:
    // that answer is stale, not where the run is.
    found.prepared = isRecord(output) && !('error' in output) ? output.run : undefined;
  }
}

/** The result a state put at `key` of its output, from its exit event; undefined for an exit with a caught error. */
function stateResult(output: string | undefined, key: string): unknown {
  const parsed = parseJson(output);
  return isRecord(parsed) && !('error' in parsed) ? parsed[key] : undefined;
}
