/**
 * An error of our own whose `name` is the Lambda error's type: what the workflow's Retry, Catch and
 * the run's report see. Each function subclasses it, so its handler can tell its own refusals
 * (`instanceof`) from anything else thrown, which keeps its own name.
 */
export class NamedError<Name extends string> extends Error {
  constructor(name: Name, message: string) {
    super(message);
    this.name = name;
  }
}
