import type { CfnElement, Stack } from 'aws-cdk-lib';
import type { Template } from 'aws-cdk-lib/assertions';
import type * as iam from 'aws-cdk-lib/aws-iam';

/** One statement of an `AWS::IAM::Policy` as it stands in a synthesized template. */
export interface PolicyStatement {
  readonly Action: string | string[];
  readonly Resource: unknown;
  readonly Condition?: Record<string, Record<string, unknown>>;
  readonly Sid?: string;
}

/** A statement's actions, whether written as one string or a list. */
export function actionsOf(statement: PolicyStatement): string[] {
  return Array.isArray(statement.Action) ? statement.Action : [statement.Action];
}

/** The statements of every `AWS::IAM::Policy` in the template, or of those attached to `roleLogicalId`. */
export function policyStatements(template: Template, roleLogicalId?: string): PolicyStatement[] {
  const filter = roleLogicalId === undefined ? undefined : { Properties: { Roles: [{ Ref: roleLogicalId }] } };
  return Object.values(template.findResources('AWS::IAM::Policy', filter)).flatMap(
    (policy) => (policy as { Properties: { PolicyDocument: { Statement: PolicyStatement[] } } }).Properties.PolicyDocument.Statement,
  );
}

/** A role's logical id and the statements of the policies attached to it. */
export function roleStatements(stack: Stack, template: Template, role: iam.IRole): { roleId: string; statements: PolicyStatement[] } {
  const roleId = stack.getLogicalId(role.node.defaultChild as CfnElement);
  return { roleId, statements: policyStatements(template, roleId) };
}

/** An IAM pattern (`*` any run of characters, `?` one) as a whole-string regular expression. */
function pattern(value: string, flags = ''): RegExp {
  return new RegExp(`^${value.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, flags);
}

/**
 * Whether any Allow statement of `statements` (resources resolved to plain ARNs) names `action` on
 * `resource`, conditions aside: an upper bound of what the role may do, so `false` means never.
 */
export function allows(statements: ReadonlyArray<PolicyStatement & { Effect?: string }>, action: string, resource: string): boolean {
  return statements.some(
    (s) =>
      (s.Effect ?? 'Allow') === 'Allow' &&
      actionsOf(s).some((a) => pattern(a, 'i').test(action)) &&
      [s.Resource].flat().some((r) => typeof r === 'string' && pattern(r).test(resource)),
  );
}
