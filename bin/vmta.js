#!/usr/bin/env node
// Entry point of the `vmta` command. The sources are TypeScript run by Node 24's type
// stripping; when the machine's own `node` is older, re-run under the Node 24 that the
// package pins (devDependency `node`), so `vmta` works the same everywhere.
// The re-run process is the real one: TERM, INT and HUP sent to this wrapper are passed to it
// (once: it runs in its own process group, so a Ctrl-C in the terminal reaches only the
// wrapper), and the wrapper ends as it did: with its exit code, or by the same signal.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const REQUIRED_MAJOR = 24;
const FORWARDED_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'];
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
  const child = spawn(pinned, [cli, ...process.argv.slice(2)], { stdio: 'inherit', detached: true });
  const forward = (signal) => child.kill(signal);
  for (const signal of FORWARDED_SIGNALS) process.on(signal, forward);
  // If the wrapper itself ends for another reason, the real process must not outlive it.
  const killChild = () => child.kill('SIGKILL');
  process.on('exit', killChild);
  child.on('error', (error) => {
    console.error(`vmta: cannot run ${pinned}: ${error.message}`);
    process.exitCode = 1;
  });
  child.on('exit', (code, signal) => {
    process.off('exit', killChild);
    for (const name of FORWARDED_SIGNALS) process.off(name, forward);
    if (signal) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
}
