// bin/vmta.js under the machine's own node: when that node is older than 24 the wrapper re-runs
// the command under the pinned Node 24, and must not leave it behind. Real processes: a relay
// (`vmta mta`) and local mode (`vmta local`, whose relays are its own children) are started
// through the wrapper, the wrapper gets TERM, INT or HUP, and then the real process is gone, its
// ports can be bound again, and the wrapper ended with the real process's exit code or signal.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { freePortShift } from '../fixtures/local-ports.ts';
import { freePort, loopbackRelayConfig, REPO_ROOT, temporaryDirectory, writeRelayConfig } from '../fixtures/relay-process.ts';

const WRAPPER = path.join(REPO_ROOT, 'bin', 'vmta.js');

/** The first `node` on PATH outside this package: the machine's own. */
function machineNode(): { path: string; major: number } | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir === '' || path.resolve(dir).startsWith(path.join(REPO_ROOT, 'node_modules'))) continue;
    const candidate = path.join(dir, 'node');
    const result = spawnSync(candidate, ['-p', 'process.versions.node'], { encoding: 'utf8' });
    if (result.status === 0) return { path: candidate, major: Number(result.stdout.trim().split('.')[0]) };
  }
  return undefined;
}

const machine = machineNode();
const node = machine?.path ?? process.execPath;

test('which node runs the wrapper', (t) => {
  if (!machine) t.diagnostic(`no node on PATH outside node_modules: the wrapper runs under ${process.execPath} (in-process, no re-run)`);
  else if (machine.major >= 24) t.diagnostic(`the machine's node (${machine.path}) is ${machine.major}: the wrapper imports the CLI in-process; the re-run path is not exercised on this machine`);
  else t.diagnostic(`the machine's node (${machine.path}) is ${machine.major}: the wrapper re-runs the command under the pinned Node 24`);
  assert.ok(true);
});

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** After a failed test: the wrapper and a real process it left behind must not outlive the test. */
function killLeftOver(wrapper: ChildProcess, realPid: number | undefined): void {
  wrapper.kill('SIGKILL');
  if (realPid !== undefined && alive(realPid)) process.kill(realPid, 'SIGKILL');
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** The pid the relay's /readyz reports, once it is ready. */
async function readyRelayPid(adminPort: number): Promise<number> {
  return until(`the relay on admin port ${adminPort} to be ready`, async () => {
    const response = await fetch(`http://127.0.0.1:${adminPort}/readyz`).catch(() => undefined);
    if (response?.status !== 200) return undefined;
    return ((await response.json()) as { pid: number }).pid;
  });
}

function startWrapper(args: string[], cwd = REPO_ROOT): { child: ChildProcess; output: () => string } {
  const child = spawn(node, [WRAPPER, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'info' } });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return { child, output: () => output };
}

for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  test(`${signal} to the wrapper of vmta mta stops the real relay, frees its ports, and the wrapper exits 0 as it did`, async () => {
    const dir = await temporaryDirectory('vmta-wrapper-');
    const [port, adminPort] = [await freePort(), await freePort()];
    await writeRelayConfig(dir.path, loopbackRelayConfig(port, adminPort));
    const { child, output } = startWrapper(['mta', '--config', dir.path, '--shutdown-timeout', '2s']);
    let relayPid: number | undefined;
    try {
      relayPid = await readyRelayPid(adminPort);
      if (machine && machine.major < 24) assert.notEqual(relayPid, child.pid, 'the relay is a re-run process, not the wrapper');
      child.kill(signal);
      const result = await exited(child);
      assert.deepEqual(result, { code: 0, signal: null }, output());
      await until('the relay process to be gone', async () => (alive(relayPid!) ? undefined : true), 10_000);
      assert.ok(await canBind(port), `listener port ${port} is free`);
      assert.ok(await canBind(adminPort), `admin port ${adminPort} is free`);
    } finally {
      killLeftOver(child, relayPid);
      await dir.remove();
    }
  });
}

test('SIGTERM to the wrapper of vmta local stops local mode and its relays and frees every port', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vmta-wrapper-local-'));
  await cp(path.join(REPO_ROOT, 'examples'), path.join(dir, 'resources'), { recursive: true });
  const shift = await freePortShift();
  const { child, output } = startWrapper(['local', path.join(dir, 'resources'), '--work-dir', path.join(dir, 'work'), '--port-shift', String(shift), '--no-watch']);
  let relayPid: number | undefined;
  try {
    await until('local mode to be ready', async () => (/pool "outbound" is ready/.test(output()) ? true : undefined), 90_000);
    relayPid = Number(/relay started \(pid (\d+)\)/.exec(output())![1]);
    const ports = [...output().matchAll(/smtps?:\/\/127\.0\.0\.1:(\d+)/g)].map((match) => Number(match[1]));
    const adminPort = Number(/admin and metrics at http:\/\/127\.0\.0\.1:(\d+)/.exec(output())![1]);
    assert.equal(ports.length, 4, output());
    assert.equal(await readyRelayPid(adminPort), relayPid);
    child.kill('SIGTERM');
    const result = await exited(child);
    assert.deepEqual(result, { code: 0, signal: null }, output());
    await until('the relay process to be gone', async () => (alive(relayPid!) ? undefined : true), 15_000);
    for (const port of [...ports, adminPort]) assert.ok(await canBind(port), `port ${port} is free`);
  } finally {
    killLeftOver(child, relayPid);
    await rm(dir, { recursive: true, force: true });
  }
});

test('the wrapper exits with the real process exit code: 2 for a bad command line, 3 for an unreachable relay', async () => {
  for (const [args, code] of [[['mta'], 2], [['queue', 'list', '--admin', `127.0.0.1:${await freePort()}`], 3], [['queue', 'bogus'], 2], [[], 2]] as const) {
    const { child, output } = startWrapper([...args]);
    assert.deepEqual(await exited(child), { code, signal: null }, `vmta ${args.join(' ')}: ${output()}`);
  }
});

test('when the real process dies by a signal, the wrapper ends by the same signal', async () => {
  const dir = await temporaryDirectory('vmta-wrapper-kill-');
  const [port, adminPort] = [await freePort(), await freePort()];
  await writeRelayConfig(dir.path, loopbackRelayConfig(port, adminPort));
  const { child, output } = startWrapper(['mta', '--config', dir.path]);
  try {
    const relayPid = await readyRelayPid(adminPort);
    process.kill(relayPid, 'SIGKILL');
    const result = await exited(child);
    assert.deepEqual(result, { code: null, signal: 'SIGKILL' }, output());
  } finally {
    child.kill('SIGKILL');
    await dir.remove();
  }
});
