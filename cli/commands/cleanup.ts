import { awsCall } from '../aws-errors';
import { type CliContext, type Command, EXIT, UsageError } from '../command';
import { type CleanupPlan, type Decision, planCleanup } from '../cleanup-plan';
import { errorLine, table } from '../format';
import { deleteResource, readInventory } from '../sagemaker-inventory';

const USAGE = `lora-pipeline cleanup <dataset> [--dry-run] [--yes]

Deletes the SageMaker resources of a dataset that no longer serve it: the models, endpoint configs
and dedicated endpoints of its earlier runs, found by the tags the workflow puts on each
(pipeline = the stack's name, dataset = the folder). It first lists what it will delete and what
it keeps, then asks. Never deleted: the endpoint serving the dataset's newest run with its current
config and that config's model; an endpoint being created or updated, with its configs; the
configs and models of runs newer than the serving one (a run may be deploying them); a config
another dataset's endpoint of this stack is on (two folders whose train.json give one "name"); the
shared endpoint. Deletes endpoints first, then configs, then models; a deletion that fails is reported
and the others go on.

Exit status: 0 when everything listed was deleted (or nothing was to be); 1 when a deletion failed
or the answer was not yes; 2 on a usage error; 3 on an AWS or configuration error.`;

function rows(decisions: readonly Decision[]): string {
  return table(
    ['KIND', 'NAME', 'RUN', 'WHY'],
    decisions.map(({ resource, reason }) => [resource.kind, resource.name, resource.run ?? '-', reason]),
  );
}

function listing(dataset: string, plan: CleanupPlan): string {
  const lines = [
    plan.serving !== undefined
      ? `${dataset} is served by the endpoint ${plan.serving.name} (${plan.serving.status}) on config ${plan.serving.configName ?? 'unknown'}.`
      : `${dataset} has no dedicated endpoint.`,
  ];
  if (plan.keep.length > 0) lines.push('', `Keeping ${plan.keep.length}:`, rows(plan.keep));
  if (plan.remove.length > 0) lines.push('', `Will delete ${plan.remove.length}:`, rows(plan.remove));
  return lines.join('\n');
}

/** Deletes in the plan's order; each failure is printed and counted, the rest go on. */
async function execute(ctx: CliContext, plan: CleanupPlan): Promise<number> {
  let failed = 0;
  for (const { resource } of plan.remove) {
    try {
      await deleteResource(ctx.clients.sagemaker, resource);
      ctx.io.err(`Deleted ${resource.kind} ${resource.name}\n`);
    } catch (error) {
      failed += 1;
      ctx.io.err(`Could not delete ${resource.kind} ${resource.name}: ${errorLine(error)}\n`);
    }
  }
  if (failed > 0) ctx.io.err(`${failed} of ${plan.remove.length} deletions failed; run cleanup again once the cause is fixed.\n`);
  return failed > 0 ? EXIT.failed : EXIT.ok;
}

export const command: Command = {
  name: 'cleanup',
  summary: "delete a dataset's superseded models, endpoint configs and dedicated endpoints (lists, then asks)",
  usage: USAGE,
  flags: {
    'dry-run': { type: 'boolean', description: 'only list what would be deleted and kept' },
    yes: { type: 'boolean', short: 'y', description: 'delete without asking' },
  },
  async run(args, ctx) {
    if (args.positionals.length !== 1) throw new UsageError(`cleanup takes one dataset, e.g. lora-pipeline cleanup pokemon${args.positionals.length > 1 ? `; got ${args.positionals.join(' ')}` : ''}`);
    const dataset = args.positionals[0];
    const outputs = await ctx.outputs('NamePrefix', 'SharedEndpointName');
    const scope = { pipeline: outputs.stackName, dataset, namePrefix: outputs.find('NamePrefix') };
    const inventory = await awsCall(`Listing the SageMaker resources of ${dataset}`, () => readInventory(ctx.clients.sagemaker, scope));
    const plan = planCleanup(inventory, outputs.find('SharedEndpointName'));
    ctx.io.out(`${listing(dataset, plan)}\n`);
    if (plan.remove.length === 0) {
      ctx.io.out(`Nothing to clean up for ${dataset}.\n`);
      return EXIT.ok;
    }
    if (args.boolean('dry-run')) return EXIT.ok;
    if (!args.boolean('yes')) {
      const answer = await ctx.io.ask(`Delete these ${plan.remove.length} resources? [y/N] `);
      if (!/^y(es)?$/i.test(answer.trim())) {
        ctx.io.err('Nothing deleted.\n');
        return EXIT.failed;
      }
    }
    return execute(ctx, plan);
  },
};
