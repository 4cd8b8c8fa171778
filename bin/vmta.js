#!/usr/bin/env node
// Entry point of the `vmta` command. The sources are TypeScript run by Node 24's type
// stripping; when the machine's own `node` is older, re-run under the Node 24 that the
// package pins (devDependency `node`), so `vmta` works the same everywhere.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const REQUIRED_MAJOR = 24;
const cli = fileURLToPath(new URL('../cli/vmta.ts', import.meta.url));
const major = Number(process.versions.node.split('.')[0]);

if (major >= REQUIRED_MAJOR) {
  await import(cli);
} else {
  const pinned = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));
  if (!existsSync(pinned)) {
    console.error(`vmta needs Node.js ${REQUIRED_MAJOR} or newer (this is ${process.version}); run "npm install" in the package to get it.`);
    process.exit(1);
  }
  const result = spawnSync(pinned, [cli, ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(result.status ?? 1);
}
