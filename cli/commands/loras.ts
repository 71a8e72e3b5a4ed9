import type { VersionItem } from '../../lambda/registry/table';
import { LORA_NAME, loraRef } from '../../lambda/shared/lora-name';
import { awsCall } from '../aws-errors';
import { type Command, EXIT, UsageError } from '../command';
import { json, shortTime, table } from '../format';
import { type LoraEntry, listLoras, loraEntry } from '../registry-list';

const USAGE = `lora-pipeline loras [<name>] [--json]

The LoRA registry (the stack's RegistryTableName): each LoRA name with its current version (the one
a request naming only the name gets), its latest version, the status of each version (pending,
ready, failed, retired) and when the latest was created. With <name>, that name's versions one per
line: status, whether current, created, rank, size, the run that trained it, and why a failed one failed.

Exit status: 0; 1 when <name> is not in the registry; 3 on an AWS or configuration error.`;

/** A version as --json prints it: the registry's fields a user acts on, and whether it is current. */
function versionJson(item: VersionItem, current: number | undefined) {
  return {
    version: item.version,
    ref: loraRef(item.name, item.version),
    status: item.status,
    current: item.version === current,
    createdAt: item.createdAt,
    modelType: item.modelType,
    baseModel: item.baseModel,
    rank: item.rank,
    sizeBytes: item.sizeBytes,
    sha256: item.sha256,
    s3Uri: item.s3Uri,
    run: item.run,
    trainingJob: item.trainingJob,
    ...(item.failure !== undefined ? { failure: item.failure } : {}),
    ...(item.retiredAt !== undefined ? { retiredAt: item.retiredAt } : {}),
  };
}

function entryJson(entry: LoraEntry) {
  const current = entry.head?.current;
  return {
    name: entry.name,
    current: current ?? null,
    latest: entry.head?.latest ?? entry.versions[0]?.version ?? null,
    updatedAt: entry.head?.updatedAt ?? null,
    versions: entry.versions.map((item) => versionJson(item, current)),
  };
}

function namesTable(entries: readonly LoraEntry[]): string {
  const rows = entries.map((entry) => [
    entry.name,
    entry.head?.current !== undefined ? String(entry.head.current) : '-',
    String(entry.head?.latest ?? entry.versions[0]?.version ?? '-'),
    entry.versions.map((item) => `${item.version} ${item.status}`).join(', ') || '-',
    shortTime(entry.versions[0]?.createdAt),
  ]);
  return table(['NAME', 'CURRENT', 'LATEST', 'VERSIONS', 'LATEST CREATED'], rows);
}

function mebibytes(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function versionsTable(entry: LoraEntry): string {
  const current = entry.head?.current;
  const rows = entry.versions.map((item) => [
    loraRef(item.name, item.version),
    item.status,
    item.version === current ? 'current' : '',
    shortTime(item.createdAt),
    String(item.rank),
    mebibytes(item.sizeBytes),
    item.run,
    item.failure ?? (item.retiredAt !== undefined ? `retired ${shortTime(item.retiredAt)}` : ''),
  ]);
  const note = current === undefined ? `\nNo version of ${entry.name} is current: a request must name one as ${entry.name}@<version>.` : '';
  return `${table(['VERSION', 'STATUS', 'CURRENT', 'CREATED', 'RANK', 'SIZE', 'RUN', 'NOTE'], rows)}${note}`;
}

export const command: Command = {
  name: 'loras',
  summary: 'the LoRA registry: names, current and latest versions, each version\'s status',
  usage: USAGE,
  flags: { json: { type: 'boolean', description: 'print the registry entries as JSON' } },
  async run(args, ctx) {
    if (args.positionals.length > 1) throw new UsageError(`loras takes at most one LoRA name, not ${args.positionals.length}: ${args.positionals.join(' ')}`);
    const name = args.positionals[0];
    if (name !== undefined && !LORA_NAME.test(name)) {
      throw new UsageError(`"${name}" is not a LoRA name: a letter or digit, then up to 62 letters, digits, '_' or '-'`);
    }
    const tableName = (await ctx.outputs('RegistryTableName')).get('RegistryTableName');
    const client = ctx.clients.dynamodb;
    if (name === undefined) {
      const entries = await awsCall(`Reading the registry table ${tableName}`, () => listLoras(client, tableName));
      if (args.boolean('json')) ctx.io.out(`${json({ loras: entries.map(entryJson) })}\n`);
      else if (entries.length === 0) ctx.io.err('The registry is empty: no LoRA has been registered yet (shared mode registers each trained LoRA).\n');
      else ctx.io.out(`${namesTable(entries)}\n`);
      return EXIT.ok;
    }
    const entry = await awsCall(`Reading ${name} from the registry table ${tableName}`, () => loraEntry(client, tableName, name));
    if (entry === undefined) {
      ctx.io.err(`No LoRA named ${name} in the registry ${tableName}. List the names with: lora-pipeline loras\n`);
      return EXIT.failed;
    }
    ctx.io.out(`${args.boolean('json') ? json(entryJson(entry)) : versionsTable(entry)}\n`);
    return EXIT.ok;
  },
};
