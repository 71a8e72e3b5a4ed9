import { datasetFolder, isRecord } from '../shared/run-info';
import { closest } from '../shared/suggest';

/** The status function's request: one execution, a dataset's latest runs, or the latest runs. */

/** How many runs `{}` and `{dataset}` answer with. */
export const LATEST_RUNS = 10;

/** A request the function cannot answer; the message says what to send instead. */
export class InvalidRequest extends Error {
  override readonly name = 'InvalidRequest';
}

const USAGE =
  'Send {"executionArn": "<an execution of this workflow>"} for one run, {"dataset": "<folder name or s3://…/ URI>"} ' +
  `for the latest runs of a dataset, or {} for the latest ${LATEST_RUNS} runs.`;

export type StatusRequest = { readonly kind: 'execution'; readonly executionArn: string } | { readonly kind: 'dataset'; readonly dataset: string } | { readonly kind: 'latest' };

/** `arn:<partition>:states:<region>:<account>:execution:<state machine>:` for this state machine. */
export function executionArnPrefix(stateMachineArn: string): string {
  const parts = stateMachineArn.split(':');
  if (parts.length !== 7 || parts[0] !== 'arn' || parts[2] !== 'states' || parts[5] !== 'stateMachine') {
    throw new Error(`STATE_MACHINE_ARN is not a state machine ARN: ${stateMachineArn}`);
  }
  return `${parts.slice(0, 5).join(':')}:execution:${parts[6]}:`;
}

export function parseRequest(event: unknown, stateMachineArn: string): StatusRequest {
  if (!isRecord(event)) throw new InvalidRequest(`The request must be a JSON object. ${USAGE}`);
  const accepted = ['executionArn', 'dataset'];
  for (const key of Object.keys(event)) {
    if (accepted.includes(key)) continue;
    const meant = closest(key, accepted);
    throw new InvalidRequest(`Unknown field "${key}"${meant !== undefined ? ` (did you mean "${meant}"?)` : ''}. ${USAGE}`);
  }
  if (event.executionArn !== undefined && event.dataset !== undefined) {
    throw new InvalidRequest(`Give either executionArn or dataset, not both. ${USAGE}`);
  }
  if (event.executionArn !== undefined) return { kind: 'execution', executionArn: executionArnOf(event.executionArn, stateMachineArn) };
  if (event.dataset !== undefined) {
    const folder = datasetFolder(event.dataset);
    if (folder === undefined) {
      throw new InvalidRequest(`dataset must be a folder name such as "pokemon" or its s3:// URI; got ${JSON.stringify(event.dataset)}.`);
    }
    return { kind: 'dataset', dataset: folder };
  }
  return { kind: 'latest' };
}

function executionArnOf(arn: unknown, stateMachineArn: string): string {
  const prefix = executionArnPrefix(stateMachineArn);
  if (typeof arn !== 'string' || !arn.startsWith(prefix) || !/^[^:]+$/.test(arn.slice(prefix.length))) {
    throw new InvalidRequest(
      `executionArn must be an execution of this workflow, ${prefix}<execution name>; got ${JSON.stringify(arn)}. ` +
        'Copy it from the Step Functions console or the run notification.',
    );
  }
  return arn;
}
