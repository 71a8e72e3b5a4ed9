import * as fs from 'node:fs';
import * as path from 'node:path';
import { App, type Stack } from 'aws-cdk-lib';
import type { DockerImageAsset } from 'aws-cdk-lib/aws-ecr-assets';
import { AssetManifestArtifact } from 'aws-cdk-lib/cx-api';
import { Template } from 'aws-cdk-lib/assertions';
import { parseConfig, type PipelineConfig } from '../../lib/config';
import { LoraPipelineStack } from '../../lib/lora-pipeline-stack';

const ROOT = path.resolve(__dirname, '..', '..');

/** The feature flags and other context of `cdk.json`, so tests synthesize what `cdk synth` does. */
export function projectContext(): Record<string, unknown> {
  const cdkJson = JSON.parse(fs.readFileSync(path.join(ROOT, 'cdk.json'), 'utf8')) as { context?: Record<string, unknown> };
  return cdkJson.context ?? {};
}

/**
 * An App as `cdk synth` builds it, but with asset bundling switched off (`aws:cdk:bundling-stacks`
 * = none), so no test needs Docker or esbuild output. Docker image assets are never built at synth.
 */
export function createTestApp(context: Record<string, unknown> = {}): App {
  return new App({
    context: { ...projectContext(), 'aws:cdk:bundling-stacks': [], ...context },
  });
}

/** Configuration as `bin/app.ts` would read it from these context values. */
export function testConfig(values: Record<string, unknown> = {}): PipelineConfig {
  return parseConfig(values);
}

export interface SynthesizedPipeline {
  readonly app: App;
  readonly stack: LoraPipelineStack;
  readonly template: Template;
}

/** Synthesizes the real pipeline stack with configuration overrides, without Docker or bundling. */
export function synthPipeline(configValues: Record<string, unknown> = {}): SynthesizedPipeline {
  const app = createTestApp();
  const config = testConfig(configValues);
  const stack = new LoraPipelineStack(app, config.stackName, { config });
  return { app, stack, template: Template.fromStack(stack) };
}

/** Where the synthesized assembly stages a Docker image asset's build context, and how it is to be built and pushed. */
export function dockerImageSource(app: App, stack: Stack, image: DockerImageAsset) {
  const assembly = app.synth();
  const manifest = assembly.getStackArtifact(stack.artifactId).dependencies.find((d) => d instanceof AssetManifestArtifact) as AssetManifestArtifact;
  // The stack's images are keyed by the hash CDK gives each asset.
  const entry = manifest.contents.dockerImages?.[image.assetHash];
  if (!entry?.source.directory) throw new Error(`no staged build context for image asset ${image.node.path}`);
  return { directory: path.join(assembly.directory, entry.source.directory), platform: entry.source.platform, destinations: entry.destinations };
}
