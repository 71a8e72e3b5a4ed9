import { LORA_ERRORS, type LoraVersionRef, type PreparedRun, type RunCleanup } from '../shared/contract';
import { loraRef } from '../shared/lora-name';
import { isRecord, nonEmptyString } from '../shared/run-info';

/**
 * The shared path's failure stages: registering the LoRA, the check request to the shared
 * endpoint, making the version current. Each Cause says what happens to the version, since a
 * registered version outlives the run: marked failed by the clean-up only when the server refused
 * it, else left pending for an operator to promote.
 */

export interface LoraFailure {
  readonly errorName: string;
  /** The caught error's message, when it has one. */
  readonly reason: string | undefined;
  readonly run: PreparedRun | undefined;
  readonly state: Record<string, unknown>;
}

/** The version a shared run registered (`state.lora`), if it got that far. */
export function registeredVersion(state: Record<string, unknown>): LoraVersionRef | undefined {
  const lora = isRecord(state.lora) ? state.lora : undefined;
  const name = nonEmptyString(lora?.name);
  const version = lora?.version;
  return name !== undefined && typeof version === 'number' && Number.isInteger(version) && version > 0 ? { name, version } : undefined;
}

/** "(Error): reason." or " with Error." */
function because(failure: LoraFailure): string {
  return failure.reason === undefined ? ` with ${failure.errorName}.` : ` (${failure.errorName}): ${sentence(failure.reason)}`;
}

function sentence(text: string): string {
  const trimmed = text.trim();
  return /[.!?]$/.test(trimmed) ? trimmed : `${trimmed}.`;
}

function sharedEndpoint(run: PreparedRun | undefined): string {
  return run?.serving.mode === 'shared' ? `the shared endpoint ${run.serving.endpointName}` : 'the shared endpoint';
}

function capitalized(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

export function registerCause(failure: LoraFailure): string {
  const name = failure.run?.lora?.name;
  if (failure.errorName === LORA_ERRORS.loraFileInvalid && failure.reason !== undefined) {
    return `The trained LoRA${name ? ` ${name}` : ''} could not be registered: ${sentence(failure.reason)}`;
  }
  return `Registering the trained LoRA${name ? ` ${name}` : ''} in the registry failed${because(failure)}`;
}

/** What an operator does with a version that stays pending: the registry function's promote action. */
function promoteLater(version: LoraVersionRef | undefined): string {
  const payload = JSON.stringify({ action: 'promote', name: version?.name ?? '<name>', version: version?.version ?? '<version>' });
  return `To make it current later, once the endpoint serves it when named with its version, invoke the registry function (the stack's RegistryFunctionName output) with ${payload}.`;
}

/** The check's Error: the server's refusal of the LoRA, else a fault of the shared endpoint (the version stays pending). */
export function checkError(errorName: string): string {
  return errorName === LORA_ERRORS.loraCheckFailed ? LORA_ERRORS.loraCheckFailed : LORA_ERRORS.sharedEndpointUnavailable;
}

export function checkCause(failure: LoraFailure): string {
  const version = registeredVersion(failure.state);
  const ref = version ? loraRef(version.name, version.version) : 'the new version';
  if (failure.errorName === LORA_ERRORS.loraCheckFailed) {
    const refused = `${ref} will be marked failed by the clean-up that follows this report (the server then answers 410 for it) and was not made current; the name's current version is unchanged.`;
    return `The shared endpoint refused ${ref}${failure.reason !== undefined ? `: ${sentence(failure.reason)}` : '.'} ${refused}`;
  }
  const pending = `${ref} stays pending: it was not made current, nor marked failed, and the name's current version is unchanged. ${promoteLater(version)}`;
  if (failure.errorName === LORA_ERRORS.sharedEndpointWarming) {
    return (
      `${capitalized(sharedEndpoint(failure.run))} still had no copy ready after the workflow's retries${failure.reason ? ` (${failure.reason.trim()})` : ''}. ` +
      `Check the endpoint and its scaling in the SageMaker console. ${pending}`
    );
  }
  if (failure.errorName === LORA_ERRORS.sharedEndpointBusy) {
    return `${capitalized(sharedEndpoint(failure.run))} was still busy after the workflow's retries${failure.reason ? `: ${sentence(failure.reason)}` : '.'} Consider a higher endpoint.maxInstances. ${pending}`;
  }
  return `The check request with ${ref} to ${sharedEndpoint(failure.run)} could not be answered${because(failure)} This is a fault of the deployment, not of the LoRA. ${pending}`;
}

export function promoteCause(failure: LoraFailure): string {
  const version = registeredVersion(failure.state);
  const ref = version ? loraRef(version.name, version.version) : 'the new version';
  return (
    `${ref} passed its check, but making it current failed${because(failure)} It was not marked failed: it stays pending (or ready, if the promotion went through before the error), ` +
    `served when named with its version once ready. ${promoteLater(version)}`
  );
}

/** A shared run whose LoRA the server refused: the version to mark failed. Any other failure leaves it pending. */
export function loraCleanup(errorName: string, state: Record<string, unknown>): RunCleanup | undefined {
  const version = registeredVersion(state);
  return version !== undefined && errorName === LORA_ERRORS.loraCheckFailed ? { loraVersion: version } : undefined;
}
