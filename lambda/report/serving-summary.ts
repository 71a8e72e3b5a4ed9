import type { PreparedRun, RunSummary } from '../shared/contract';
import { loraRef } from '../shared/lora-name';
import { isRecord, nonEmptyString } from '../shared/run-info';
import { invokeCommand } from './invoke-command';

/**
 * What a successful run's report says of where its LoRA is served: the shared endpoint with the
 * exact version (and whether it became current), or the run's own endpoint (and, in a shared
 * deployment, why it got one).
 */

export interface ServingReport {
  readonly endpointName: string;
  readonly subject: string;
  /** The message's opening lines. */
  readonly lines: string[];
  readonly summary: Pick<RunSummary, 'servingMode' | 'invokeCommand' | 'loraName' | 'loraVersion' | 'inferenceComponentName' | 'madeCurrent' | 'dedicatedBecause'>;
}

/** Where the run's LoRA is served, from the run and the success event's `lora`, `promotion` and `endpoint`. */
export function servingOf(event: Record<string, unknown>, run: PreparedRun | undefined): ServingReport {
  const runName = run?.run ?? 'of this execution';
  if (run?.serving.mode === 'shared') {
    const { endpointName, inferenceComponentName } = run.serving;
    const lora = isRecord(event.lora) ? event.lora : {};
    const name = nonEmptyString(lora.name) ?? run.lora.name;
    const version = typeof lora.version === 'number' ? lora.version : undefined;
    const ref = version !== undefined ? loraRef(name, version) : name;
    const madeCurrent = isRecord(event.promotion) && event.promotion.current === true;
    const current = madeCurrent
      ? `It is now the current version: requests naming "${name}" get it.`
      : `A newer version of ${name} is current, so requests naming "${name}" get that one; name "${ref}" to use this one.`;
    return {
      endpointName,
      subject: `LoRA ${ref} is ready on ${endpointName}`,
      lines: [`The LoRA run ${runName} registered ${ref}, served by the shared endpoint ${endpointName} (inference component ${inferenceComponentName}).`, current],
      summary: {
        servingMode: 'shared',
        loraName: name,
        ...(version !== undefined ? { loraVersion: version } : {}),
        inferenceComponentName,
        madeCurrent,
        invokeCommand: invokeCommand({ endpointName, inferenceComponentName, lora: ref }),
      },
    };
  }
  const endpoint = isRecord(event.endpoint) ? event.endpoint : {};
  const endpointName = nonEmptyString(endpoint.EndpointName) ?? run?.serving.endpointName ?? 'unknown';
  const because = run?.serving.mode === 'dedicated' ? run.serving.dedicatedBecause : undefined;
  return {
    endpointName,
    subject: `LoRA run ${runName} is in service`,
    lines: [`The LoRA run ${runName} is in service on endpoint ${endpointName}.`, ...(because !== undefined ? [because] : [])],
    summary: { servingMode: 'dedicated', invokeCommand: invokeCommand({ endpointName }), ...(because !== undefined ? { dedicatedBecause: because } : {}) },
  };
}
