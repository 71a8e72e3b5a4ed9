import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ts from 'typescript';

/**
 * The CLI runs from the repository through tsx: what it imports is loaded at every start. It may
 * use lambda/ modules (so it cannot disagree with the workflow) but never the CDK app: no
 * aws-cdk-lib, constructs or cdk-nag, and of lib/ only the pure configuration table.
 */

const ROOT = path.resolve(__dirname, '..', '..');
const CDK_PACKAGES = /^(aws-cdk-lib|constructs|cdk-nag)(\/|$)/;

/** Every repository file reached from `entry` by relative imports, and every package named on the way. */
function importGraph(entry: string): { files: Set<string>; packages: Map<string, string> } {
  const files = new Set<string>();
  const packages = new Map<string, string>();
  const visit = (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    for (const { fileName } of ts.preProcessFile(fs.readFileSync(file, 'utf8'), true, true).importedFiles) {
      if (!fileName.startsWith('.')) {
        packages.set(fileName, path.relative(ROOT, file));
        continue;
      }
      const base = path.resolve(path.dirname(file), fileName);
      const found = [`${base}.ts`, path.join(base, 'index.ts'), base].find((candidate) => fs.existsSync(candidate) && fs.statSync(candidate).isFile());
      if (found === undefined) throw new Error(`${path.relative(ROOT, file)} imports ${fileName}, which is not a file here`);
      if (found.endsWith('.ts')) visit(found);
    }
  };
  visit(entry);
  return { files, packages };
}

test('the CLI never loads the CDK app: no aws-cdk-lib, constructs or cdk-nag, and of lib/ only config-fields.ts', () => {
  const { files, packages } = importGraph(path.join(ROOT, 'cli', 'main.ts'));
  const cdk = [...packages].filter(([name]) => CDK_PACKAGES.test(name)).map(([name, from]) => `${from} -> ${name}`);
  expect(cdk).toEqual([]);
  // config-fields.ts is zod and lambda/shared only; anything else of lib/ would bring the CDK in.
  expect([...files].map((file) => path.relative(ROOT, file)).filter((file) => file.startsWith('lib/'))).toEqual(['lib/config-fields.ts']);
  // Negative control: the CDK app's entry point is caught.
  const app = importGraph(path.join(ROOT, 'bin', 'app.ts'));
  expect([...app.packages.keys()].some((name) => CDK_PACKAGES.test(name))).toBe(true);
});
