import { ConfigurationError } from './command';

/**
 * AWS failures as the CLI reports them: a call AWS refused or could not be made (no credentials,
 * access denied, a missing function or table) is a ConfigurationError (exit 3) that says which call
 * failed; anything else is left as it is.
 */

/** An SDK error: a service's answer carries `$metadata`; the credential chain's failure has its own name. */
export function isAwsError(error: unknown): error is Error {
  if (!(error instanceof Error)) return false;
  return '$metadata' in error || /CredentialsProviderError|TokenProviderError|ExpiredToken|UnrecognizedClient/.test(error.name);
}

/** Runs `call`; an AWS failure becomes a ConfigurationError naming `what` was being done. */
export async function awsCall<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (!isAwsError(error)) throw error;
    const hint = /Credentials|ExpiredToken|UnrecognizedClient/.test(error.name)
      ? ' (set AWS credentials: AWS_PROFILE, --profile, or aws sso login)'
      : /AccessDenied|UnauthorizedOperation|NotAuthorized/.test(error.name)
        ? ' (your AWS identity is not allowed this call)'
        : '';
    throw new ConfigurationError(`${what} failed: ${error.name}: ${error.message}${hint}`);
  }
}
