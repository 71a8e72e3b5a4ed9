import * as path from 'node:path';
import { Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { DockerImageAsset, Platform } from 'aws-cdk-lib/aws-ecr-assets';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction } from 'aws-cdk-lib/aws-lambda-nodejs';
import type { App } from 'aws-cdk-lib';
import { createTestApp, projectContext } from '../support/app';

const ASSETS = path.resolve(__dirname, '..', 'fixtures', 'assets');

/** A stack with the two kinds of asset the pipeline has: a bundled Lambda and a Docker image. */
function stackWithAssets(app: App): Stack {
  const stack = new Stack(app, 'Assets');
  new NodejsFunction(stack, 'Fn', {
    entry: path.join(ASSETS, 'broken-lambda', 'index.ts'),
    runtime: lambda.Runtime.NODEJS_22_X,
    depsLockFilePath: path.resolve(__dirname, '..', '..', 'package-lock.json'),
  });
  new DockerImageAsset(stack, 'Image', { directory: path.join(ASSETS, 'image'), platform: Platform.LINUX_AMD64 });
  return stack;
}

describe('createTestApp', () => {
  test("carries cdk.json's feature flags", () => {
    const app = createTestApp();
    expect(app.node.tryGetContext('@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy')).toBe(true);
    expect(Object.keys(projectContext()).length).toBeGreaterThan(50);
  });

  test('synthesizes Lambda and Docker image assets without bundling and without Docker', () => {
    const template = Template.fromStack(stackWithAssets(createTestApp()));
    template.resourceCountIs('AWS::Lambda::Function', 1);
  });

  // Negative control: the fixture's handler does not compile, so with bundling on, synth fails.
  // That proves the test app really skips bundling rather than succeeding at it.
  test('with bundling left on, the same stack tries to bundle and fails', () => {
    const app = createTestApp({ 'aws:cdk:bundling-stacks': ['**'] });
    expect(() => stackWithAssets(app)).toThrow(/Failed to bundle asset Assets\/Fn/);
  });
});
