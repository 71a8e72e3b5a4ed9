import { type DynamoDBDocumentClient, ScanCommand } from '@aws-sdk/lib-dynamodb';
import { HEAD_VERSION, type HeadItem, RegistryTable, type VersionItem } from '../lambda/registry/table';

/**
 * The LoRA registry as `loras` lists it: every name with its head item (latest, current) and its
 * versions. The items are the registry function's (lambda/registry/table.ts): one name's head and
 * versions are read through RegistryTable; listing every name needs a Scan, which the registry itself never does.
 */

export interface LoraEntry {
  readonly name: string;
  /** Absent when a version item exists without its head (written by hand, or the head deleted). */
  readonly head?: HeadItem;
  /** Newest first. */
  readonly versions: VersionItem[];
}

/** Every item of the table, all pages (strongly consistent: what the shared server reads). */
async function scanAll(client: DynamoDBDocumentClient, tableName: string): Promise<Array<Record<string, unknown>>> {
  const items: Array<Record<string, unknown>> = [];
  let start: Record<string, unknown> | undefined;
  do {
    const page = await client.send(new ScanCommand({ TableName: tableName, ConsistentRead: true, ExclusiveStartKey: start }));
    items.push(...(page.Items ?? []));
    start = page.LastEvaluatedKey;
  } while (start !== undefined);
  return items;
}

function newestFirst(versions: VersionItem[]): VersionItem[] {
  return [...versions].sort((a, b) => b.version - a.version);
}

/** Every name in the registry, sorted by name. */
export async function listLoras(client: DynamoDBDocumentClient, tableName: string): Promise<LoraEntry[]> {
  const byName = new Map<string, { head?: HeadItem; versions: VersionItem[] }>();
  for (const item of await scanAll(client, tableName)) {
    const name = String(item.name);
    const entry = byName.get(name) ?? { versions: [] };
    if (item.version === HEAD_VERSION) entry.head = item as unknown as HeadItem;
    else entry.versions.push(item as unknown as VersionItem);
    byName.set(name, entry);
  }
  return [...byName.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, entry]) => ({ name, ...(entry.head !== undefined ? { head: entry.head } : {}), versions: newestFirst(entry.versions) }));
}

/** One name's head and versions; undefined when the registry has neither. */
export async function loraEntry(client: DynamoDBDocumentClient, tableName: string, name: string): Promise<LoraEntry | undefined> {
  const registry = new RegistryTable(client, tableName);
  const head = await registry.getHead(name);
  const versions = await registry.allVersions(name);
  if (head === undefined && versions.length === 0) return undefined;
  return { name, ...(head !== undefined ? { head } : {}), versions };
}
