import { LORA_ERRORS } from '../shared/contract';
import { NamedError } from '../shared/named-error';

type CheckErrorName =
  | typeof LORA_ERRORS.sharedEndpointWarming
  | typeof LORA_ERRORS.sharedEndpointBusy
  | typeof LORA_ERRORS.sharedEndpointUnavailable
  | typeof LORA_ERRORS.loraCheckFailed
  | typeof LORA_ERRORS.smokeTestFailed
  | typeof LORA_ERRORS.endpointBusy;

/**
 * Warming and Busy are retried by the state; Unavailable (the deployment's fault) fails the run and
 * leaves the version pending; LoraCheckFailed (the server refused the LoRA) and SmokeTestFailed (the
 * LoRA had no effect) reject it. EndpointBusy is a dedicated endpoint's Busy. The message is the Cause.
 */
export class LoraCheckError extends NamedError<CheckErrorName> {}

export function sharedEndpointWarming(message: string): LoraCheckError {
  return new LoraCheckError(LORA_ERRORS.sharedEndpointWarming, message);
}

export function sharedEndpointBusy(message: string): LoraCheckError {
  return new LoraCheckError(LORA_ERRORS.sharedEndpointBusy, message);
}

export function sharedEndpointUnavailable(message: string): LoraCheckError {
  return new LoraCheckError(LORA_ERRORS.sharedEndpointUnavailable, message);
}

export function loraCheckFailed(message: string): LoraCheckError {
  return new LoraCheckError(LORA_ERRORS.loraCheckFailed, message);
}

export function smokeTestFailed(message: string): LoraCheckError {
  return new LoraCheckError(LORA_ERRORS.smokeTestFailed, message);
}

export function endpointBusy(message: string): LoraCheckError {
  return new LoraCheckError(LORA_ERRORS.endpointBusy, message);
}
