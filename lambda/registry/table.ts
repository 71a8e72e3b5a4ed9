import { createHash } from 'node:crypto';
import { ConditionalCheckFailedException, TransactionCanceledException } from '@aws-sdk/client-dynamodb';
import { type DynamoDBDocumentClient, GetCommand, PutCommand, QueryCommand, TransactWriteCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { LoraStatus } from '../shared/contract';
import type { ModelType } from '../shared/models';
import { registryBusy, registryConflict } from './errors';

/**
 * The registry table (docs/design.md, "The LoRA registry"): partition key `name`, sort key
 * `version`. Version 0 is a name's head item (`latest`, `current`); versions from 1 are the LoRA
 * versions. Every write that could race another is conditional. `name`, `status` and `current` are
 * DynamoDB reserved words, hence the attribute name placeholders.
 */

export const HEAD_VERSION = 0;

/** A version item as stored. */
export interface VersionItem {
  readonly name: string;
  readonly version: number;
  readonly status: LoraStatus;
  readonly modelType: ModelType;
  readonly baseModel: string;
  readonly s3Uri: string;
  readonly sha256: string;
  readonly sizeBytes: number;
  readonly rank: number;
  readonly components: string[];
  readonly createdAt: string;
  readonly run: string;
  readonly execution: string;
  readonly trainingJob: string;
  readonly summary: Record<string, unknown>;
  readonly failure?: string;
  readonly retiredAt?: string;
}

export interface HeadItem {
  readonly name: string;
  readonly version: typeof HEAD_VERSION;
  readonly latest: number;
  readonly current?: number;
  readonly updatedAt: string;
}

const NAMES = { '#name': 'name', '#version': 'version', '#status': 'status', '#current': 'current', '#latest': 'latest' } as const;

/** Only the placeholders an expression uses: DynamoDB refuses unused ones. */
function names(...expressions: string[]): Record<string, string> {
  const text = expressions.join(' ');
  return Object.fromEntries(Object.entries(NAMES).filter(([placeholder]) => text.includes(placeholder)));
}

/**
 * The head's attribute an execution's registration holds while it runs: named after a hash of the
 * execution's ARN (attribute names may be any string; the ARN's length and colons are simply kept out).
 */
export function claimAttribute(executionArn: string): string {
  return `registering-${createHash('sha256').update(executionArn).digest('hex').slice(0, 32)}`;
}

/** Cancellation reasons of a transaction that may pass if tried again. */
const PASSING_CANCELLATIONS = ['TransactionConflict', 'ThrottlingError', 'ProvisionedThroughputExceeded'];

function isConditionFailure(error: unknown): boolean {
  return error instanceof ConditionalCheckFailedException || (error as Error).name === 'ConditionalCheckFailedException';
}

/** What a promotion's transaction found. */
export type PromotionOutcome = 'made-current' | 'newer-is-current' | 'not-pending';

export class RegistryTable {
  constructor(
    private readonly client: DynamoDBDocumentClient,
    readonly tableName: string,
  ) {}

  private key(name: string, version: number): Record<string, unknown> {
    return { name, version };
  }

  /** One UpdateItem on condition: false when the condition does not hold (nothing is written then). */
  private async updateIf(
    key: Record<string, unknown>,
    update: string,
    condition: string,
    attributeNames: Record<string, string>,
    values: Record<string, unknown>,
  ): Promise<boolean> {
    try {
      await this.client.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: key,
          UpdateExpression: update,
          ConditionExpression: condition,
          ExpressionAttributeNames: attributeNames,
          ExpressionAttributeValues: values,
        }),
      );
      return true;
    } catch (error) {
      if (isConditionFailure(error)) return false;
      throw error;
    }
  }

  async getVersion(name: string, version: number): Promise<VersionItem | undefined> {
    const result = await this.client.send(new GetCommand({ TableName: this.tableName, Key: this.key(name, version), ConsistentRead: true }));
    return result.Item as VersionItem | undefined;
  }

  async getHead(name: string): Promise<HeadItem | undefined> {
    const result = await this.client.send(new GetCommand({ TableName: this.tableName, Key: this.key(name, HEAD_VERSION), ConsistentRead: true }));
    return result.Item as HeadItem | undefined;
  }

  /** Versions of a name, newest first, below `below` when given, passing `filter` (a status). */
  private async *versions(name: string, options: { below?: number; status?: LoraStatus; execution?: string }): AsyncGenerator<VersionItem> {
    const condition = options.below === undefined ? '#name = :name AND #version > :head' : '#name = :name AND #version BETWEEN :first AND :last';
    const filters = [...(options.status ? ['#status = :status'] : []), ...(options.execution ? ['execution = :execution'] : [])];
    const filter = filters.length > 0 ? filters.join(' AND ') : undefined;
    let start: Record<string, unknown> | undefined;
    do {
      const page = await this.client.send(
        new QueryCommand({
          TableName: this.tableName,
          KeyConditionExpression: condition,
          FilterExpression: filter,
          ExpressionAttributeNames: names(condition, filter ?? ''),
          ExpressionAttributeValues: {
            ':name': name,
            ...(options.below === undefined ? { ':head': HEAD_VERSION } : { ':first': HEAD_VERSION + 1, ':last': options.below - 1 }),
            ...(options.status ? { ':status': options.status } : {}),
            ...(options.execution ? { ':execution': options.execution } : {}),
          },
          ScanIndexForward: false,
          ConsistentRead: true,
          ExclusiveStartKey: start,
        }),
      );
      for (const item of page.Items ?? []) yield item as VersionItem;
      start = page.LastEvaluatedKey;
    } while (start);
  }

  /** Every version of a name, newest first (all pages); what `lora-pipeline loras <name>` lists. */
  async allVersions(name: string): Promise<VersionItem[]> {
    const items: VersionItem[] = [];
    for await (const item of this.versions(name, {})) items.push(item);
    return items;
  }

  /** The version an execution registered, if any: a retried registration returns it instead of adding another. */
  async versionOfExecution(name: string, execution: string): Promise<VersionItem | undefined> {
    for await (const item of this.versions(name, { execution })) return item;
    return undefined;
  }

  /**
   * Claims the registration of an execution on the name's head item until `until` (epoch ms), unless
   * another invocation holds an unexpired claim: false then. A claim left by an invocation that died
   * expires, so its retry can go on.
   */
  async claimRegistration(name: string, executionArn: string, nowMs: number, until: number): Promise<boolean> {
    return this.updateIf(
      this.key(name, HEAD_VERSION),
      'SET #claim = :until',
      'attribute_not_exists(#claim) OR #claim < :now',
      { '#claim': claimAttribute(executionArn) },
      { ':until': until, ':now': nowMs },
    );
  }

  /** Removes this invocation's claim (the one ending at `until`); another invocation's later claim is left alone. */
  async releaseRegistration(name: string, executionArn: string, until: number): Promise<void> {
    await this.updateIf(this.key(name, HEAD_VERSION), 'REMOVE #claim', '#claim = :until', { '#claim': claimAttribute(executionArn) }, { ':until': until });
  }

  /** The highest 'ready' version below `version`, if any. */
  async highestReadyBelow(name: string, version: number): Promise<number | undefined> {
    if (version <= HEAD_VERSION + 1) return undefined;
    for await (const item of this.versions(name, { below: version, status: 'ready' })) return item.version;
    return undefined;
  }

  /**
   * A new version number for the name: `ADD latest :one` on its head item (created on first use)
   * is atomic, so concurrent registrations get distinct numbers, and none is ever handed out twice.
   */
  async allocateVersion(name: string, now: string): Promise<number> {
    const update = 'ADD #latest :one SET updatedAt = :now';
    const result = await this.client.send(
      new UpdateCommand({
        TableName: this.tableName,
        Key: this.key(name, HEAD_VERSION),
        UpdateExpression: update,
        ExpressionAttributeNames: names(update),
        ExpressionAttributeValues: { ':one': 1, ':now': now },
        ReturnValues: 'UPDATED_NEW',
      }),
    );
    const latest = result.Attributes?.latest;
    if (typeof latest !== 'number') throw new Error(`The registry's head item of ${name} has no numeric "latest" after allocation`);
    return latest;
  }

  /** Writes a new version item; never over an existing one. */
  async putVersion(item: VersionItem): Promise<void> {
    try {
      await this.client.send(
        new PutCommand({ TableName: this.tableName, Item: item, ConditionExpression: 'attribute_not_exists(#version)', ExpressionAttributeNames: names('#version') }),
      );
    } catch (error) {
      if (isConditionFailure(error)) {
        throw registryConflict(
          `Version ${item.version} of LoRA ${item.name} already exists although it was just allocated: the head item's "latest" is behind its versions. ` +
            `Set "latest" of the head item (name ${item.name}, version 0) to the highest version, then run again.`,
        );
      }
      throw error;
    }
  }

  /**
   * In one transaction: the version pending → ready, and the head's current → the version unless a
   * newer one is already current. Which condition failed decides the outcome; the caller handles
   * 'newer-is-current' (ready, not current) and 'not-pending'.
   */
  async promote(name: string, version: number, now: string): Promise<PromotionOutcome> {
    const ready = 'SET #status = :ready, updatedAt = :now';
    const pending = '#status = :pending';
    const current = 'SET #current = :v, updatedAt = :now';
    const older = 'attribute_not_exists(#current) OR #current < :v';
    try {
      await this.client.send(
        new TransactWriteCommand({
          TransactItems: [
            {
              Update: {
                TableName: this.tableName,
                Key: this.key(name, version),
                UpdateExpression: ready,
                ConditionExpression: pending,
                ExpressionAttributeNames: names(ready, pending),
                ExpressionAttributeValues: { ':ready': 'ready', ':pending': 'pending', ':now': now },
              },
            },
            {
              Update: {
                TableName: this.tableName,
                Key: this.key(name, HEAD_VERSION),
                UpdateExpression: current,
                ConditionExpression: older,
                ExpressionAttributeNames: names(current, older),
                ExpressionAttributeValues: { ':v': version, ':now': now },
              },
            },
          ],
        }),
      );
      return 'made-current';
    } catch (error) {
      if (!(error instanceof TransactionCanceledException) && (error as Error).name !== 'TransactionCanceledException') throw error;
      const codes = ((error as TransactionCanceledException).CancellationReasons ?? []).map((reason) => reason.Code ?? 'None');
      if (codes[0] === 'ConditionalCheckFailed') return 'not-pending';
      if (codes[0] === 'None' && codes[1] === 'ConditionalCheckFailed') return 'newer-is-current';
      // Another write to the same items, or throttling: under a name the state's Retry lists.
      const passing = codes.find((code) => PASSING_CANCELLATIONS.includes(code));
      if (passing !== undefined) throw registryBusy(`Making ${name}@${version} current was cancelled (${codes.join(', ')}): another registry write or throttling; try again.`);
      // No reasons given, or another one: as it is, for the state's generic retries.
      throw error;
    }
  }

  /**
   * Sets a version's status from `from` (one status or any) to `to`, with extra attributes;
   * false when the version is missing or not in `from`.
   */
  async changeStatus(name: string, version: number, from: LoraStatus | undefined, to: LoraStatus, extra: Record<string, string>): Promise<boolean> {
    const sets = ['#status = :to', ...Object.keys(extra).map((key) => `${key} = :${key}`)];
    const update = `SET ${sets.join(', ')}`;
    const condition = from === undefined ? 'attribute_exists(#version)' : '#status = :from';
    return this.updateIf(this.key(name, version), update, condition, names(update, condition), {
      ':to': to,
      ...(from === undefined ? {} : { ':from': from }),
      ...Object.fromEntries(Object.entries(extra).map(([key, value]) => [`:${key}`, value])),
    });
  }

  /**
   * Moves the head's current from `from` (none when undefined) to `to` (removed when undefined);
   * false when current is no longer `from`.
   */
  async moveCurrent(name: string, from: number | undefined, to: number | undefined, now: string): Promise<boolean> {
    const update = to === undefined ? 'REMOVE #current SET updatedAt = :now' : 'SET #current = :to, updatedAt = :now';
    const condition = from === undefined ? 'attribute_not_exists(#current)' : '#current = :from';
    return this.updateIf(this.key(name, HEAD_VERSION), update, condition, names(update, condition), {
      ':now': now,
      ...(from === undefined ? {} : { ':from': from }),
      ...(to === undefined ? {} : { ':to': to }),
    });
  }
}
