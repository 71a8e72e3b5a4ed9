import { LORA_ERRORS } from '../shared/contract';
import { NamedError } from '../shared/named-error';

/**
 * A registry error of its own: its `name` is the Lambda error's type, which the workflow's Retry,
 * Catch and the run's report see. All but RegistryBusy are refusals (LORA_REFUSALS), never retried;
 * anything else thrown (an S3 stream fault, access denied) keeps its own name and is retried a few
 * times.
 */
export class RegistryError extends NamedError<(typeof LORA_ERRORS)[keyof typeof LORA_ERRORS]> {}

export function loraFileInvalid(message: string): RegistryError {
  return new RegistryError(LORA_ERRORS.loraFileInvalid, message);
}

export function registryConflict(message: string): RegistryError {
  return new RegistryError(LORA_ERRORS.registryConflict, message);
}

export function loraNotFound(message: string): RegistryError {
  return new RegistryError(LORA_ERRORS.loraNotFound, message);
}

/** Not a refusal: another write won a race, or DynamoDB throttled a transaction; the state retries it. */
export function registryBusy(message: string): RegistryError {
  return new RegistryError(LORA_ERRORS.registryBusy, message);
}

export function invalidRegistryEvent(message: string): RegistryError {
  return new RegistryError(LORA_ERRORS.invalidRegistryEvent, message);
}
