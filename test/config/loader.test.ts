// Loading relay.yaml from a config directory and hot reload: Kubernetes ConfigMap symlink swaps,
// polling, referenced-file changes, and refusal of bad versions with the old one kept.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, test } from 'node:test';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { ConfigWatcher, loadConfigDirectory, recordConfigLoaded, type LoadedConfig } from '../../mta/config/loader.ts';
import { RelayMetrics } from '../../mta/observe/metrics.ts';
import { baseRelayConfig, temporaryDirectory, writeRelayConfig } from '../fixtures/relay-process.ts';

const silent = pino({ level: 'silent' });
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups) await cleanup();
});

async function tempDir(): Promise<string> {
  const directory = await temporaryDirectory('vmta-config-');
  cleanups.push(directory.remove);
  return directory.path;
}

/** Resolves with each applied config, in order. */
function applyRecorder(): { applied: LoadedConfig[]; next: () => Promise<LoadedConfig>; apply: (loaded: LoadedConfig) => Promise<void> } {
  const applied: LoadedConfig[] = [];
  const pending: ((loaded: LoadedConfig) => void)[] = [];
  return {
    applied,
    apply: async (loaded) => {
      applied.push(loaded);
      pending.shift()?.(loaded);
    },
    next: () =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no reload applied within 20 s')), 20_000);
        pending.push((loaded) => {
          clearTimeout(timer);
          resolve(loaded);
        });
      }),
  };
}

async function metricText(metrics: RelayMetrics): Promise<string> {
  return metrics.registry.metrics();
}

test('loads relay.yaml, hashes its bytes and resolves relative paths against the config directory', async () => {
  const directory = await tempDir();
  await writeRelayConfig(directory, baseRelayConfig({
    spool: { path: 'spool' },
    listeners: [{ name: 'tls', address: '127.0.0.1', port: 10465, relayPolicy: 'p', tls: { mode: 'implicit', certFile: 'certs/tls.crt', keyFile: '/abs/tls.key' } }],
    relayPolicies: [{ name: 'p', users: { secretPath: 'users' } }],
    admin: { tokenFile: 'admin/token' },
  }));
  const loaded = await loadConfigDirectory(directory);
  const bytes = await readFile(path.join(directory, 'relay.yaml'));
  assert.equal(loaded.hash, createHash('sha256').update(bytes).digest('hex'));
  assert.equal(loaded.config.spool.path, path.join(directory, 'spool'));
  assert.equal(loaded.config.listeners[0]?.tls.certFile, path.join(directory, 'certs/tls.crt'));
  assert.equal(loaded.config.listeners[0]?.tls.keyFile, '/abs/tls.key');
  assert.equal(loaded.config.relayPolicies[0]?.users?.secretPath, path.join(directory, 'users'));
  assert.equal(loaded.config.admin.tokenFile, path.join(directory, 'admin/token'));
});

test('an invalid config is refused with an error naming the field path and the value', async () => {
  const directory = await tempDir();
  await writeRelayConfig(directory, baseRelayConfig({ listeners: [{ name: 'x', port: 70000, relayPolicy: 'p' }], relayPolicies: [{ name: 'p' }] }));
  await assert.rejects(loadConfigDirectory(directory), /listeners\[0\]\.port: .*got 70000/);
});

test('a missing relay.yaml is refused with the path it looked for', async () => {
  const directory = await tempDir();
  await assert.rejects(loadConfigDirectory(directory), new RegExp(`invalid runtime config ${path.join(directory, 'relay.yaml')}: cannot read the file: ENOENT`));
});

/** Lay out a directory exactly as the kubelet mounts a ConfigMap: relay.yaml -> ..data/relay.yaml, ..data -> ..<timestamp>. */
async function kubeletWrite(directory: string, text: string, generation: number): Promise<void> {
  const versionDir = `..2026_11_23_14_00_0${generation}.00000000${generation}`;
  await mkdir(path.join(directory, versionDir));
  await writeFile(path.join(directory, versionDir, 'relay.yaml'), text);
  // The kubelet's atomic swap: a new ..data_tmp symlink renamed over ..data, then the old version removed.
  await symlink(versionDir, path.join(directory, '..data_tmp'));
  await rename(path.join(directory, '..data_tmp'), path.join(directory, '..data'));
  if (generation === 1) await symlink('..data/relay.yaml', path.join(directory, 'relay.yaml'));
  else await rm(path.join(directory, `..2026_11_23_14_00_0${generation - 1}.00000000${generation - 1}`), { recursive: true });
}

test('a Kubernetes ConfigMap ..data symlink swap is noticed by watching alone, again and again', async () => {
  const directory = await tempDir();
  await kubeletWrite(directory, stringify(baseRelayConfig({ hostname: 'one.test' })), 1);
  const initial = await loadConfigDirectory(directory);
  const recorder = applyRecorder();
  const metrics = new RelayMetrics({ processMetrics: false });
  // A poll interval of an hour: only fs.watch can see these changes within the test.
  const watcher = new ConfigWatcher({ directory, initial, apply: recorder.apply, metrics, logger: silent, pollIntervalMs: 3_600_000, debounceMs: 50 });
  await watcher.start();
  try {
    for (const [generation, hostname] of [[2, 'two.test'], [3, 'three.test']] as const) {
      const applied = recorder.next();
      await kubeletWrite(directory, stringify(baseRelayConfig({ hostname })), generation);
      const loaded = await applied;
      await watcher.check(); // lets the reload that called apply finish
      assert.equal(loaded.config.hostname, hostname);
      assert.equal(watcher.current.config.hostname, hostname);
      assert.equal(watcher.status().hash, loaded.hash);
    }
    assert.match(await metricText(metrics), new RegExp(`vmta_config_info\\{hash="${watcher.current.hash}"\\} 1`));
  } finally {
    watcher.stop();
  }
});

test('polling alone notices a changed file when watching is off', async () => {
  const directory = await tempDir();
  await writeRelayConfig(directory, baseRelayConfig({ hostname: 'one.test' }));
  const initial = await loadConfigDirectory(directory);
  const recorder = applyRecorder();
  const watcher = new ConfigWatcher({ directory, initial, apply: recorder.apply, metrics: new RelayMetrics({ processMetrics: false }), logger: silent, pollIntervalMs: 100, watchFiles: false });
  await watcher.start();
  try {
    const applied = recorder.next();
    await writeRelayConfig(directory, baseRelayConfig({ hostname: 'polled.test' }));
    assert.equal((await applied).config.hostname, 'polled.test');
  } finally {
    watcher.stop();
  }
});

test('a broken new version is refused, the old one keeps serving, metrics and status say so; a fixed one applies', async () => {
  const directory = await tempDir();
  await writeRelayConfig(directory, baseRelayConfig({ hostname: 'good.test' }));
  const initial = await loadConfigDirectory(directory);
  const metrics = new RelayMetrics({ processMetrics: false });
  recordConfigLoaded(metrics, initial);
  const recorder = applyRecorder();
  const errors: unknown[] = [];
  const logger = pino({ level: 'error' }, { write: (line: string) => void errors.push(JSON.parse(line)) });
  const watcher = new ConfigWatcher({ directory, initial, apply: recorder.apply, metrics, logger, pollIntervalMs: 3_600_000 });
  await watcher.start();
  try {
    await writeRelayConfig(directory, baseRelayConfig({ hostname: 'not a hostname!' }));
    assert.equal(await watcher.check(), 'refused');
    assert.equal(recorder.applied.length, 0);
    assert.equal(watcher.current.config.hostname, 'good.test');
    assert.match(watcher.status().lastError?.message ?? '', /hostname: .*got "not a hostname!"/);
    const text = await metricText(metrics);
    assert.match(text, /vmta_config_reloads_total\{result="failure"\} 1/);
    assert.match(text, /vmta_config_last_reload_successful 0/);
    assert.match(text, new RegExp(`vmta_config_info\\{hash="${initial.hash}"\\} 1`));
    assert.equal(errors.length, 1);
    assert.match(JSON.stringify(errors[0]), /not a hostname!/);
    assert.equal(await watcher.check(), 'unchanged', 'the same refused version is not retried and not logged again');

    await writeRelayConfig(directory, baseRelayConfig({ hostname: 'fixed.test' }));
    assert.equal(await watcher.check(), 'applied');
    assert.equal(watcher.current.config.hostname, 'fixed.test');
    assert.equal(watcher.status().lastError, undefined);
    assert.match(await metricText(metrics), /vmta_config_last_reload_successful 1/);
  } finally {
    watcher.stop();
  }
});

test('a version the relay cannot apply (apply throws) is refused and the old one kept', async () => {
  const directory = await tempDir();
  await writeRelayConfig(directory, baseRelayConfig({ hostname: 'good.test' }));
  const initial = await loadConfigDirectory(directory);
  const watcher = new ConfigWatcher({
    directory, initial, metrics: new RelayMetrics({ processMetrics: false }), logger: silent, pollIntervalMs: 3_600_000,
    apply: async () => { throw new Error('listeners[0].tls.certFile: cannot read /nope.crt'); },
  });
  await watcher.start();
  try {
    await writeRelayConfig(directory, baseRelayConfig({ hostname: 'other.test' }));
    assert.equal(await watcher.check(), 'refused');
    assert.equal(watcher.current.config.hostname, 'good.test');
    assert.match(watcher.status().lastError?.message ?? '', /cannot read \/nope\.crt/);
  } finally {
    watcher.stop();
  }
});

test('a changed certificate or user file triggers a reload of the same config (rotation without restart)', async () => {
  const directory = await tempDir();
  await mkdir(path.join(directory, 'certs'));
  await mkdir(path.join(directory, 'users'));
  await writeFile(path.join(directory, 'certs/tls.crt'), 'cert v1');
  await writeFile(path.join(directory, 'certs/tls.key'), 'key v1');
  await writeFile(path.join(directory, 'users/alice'), 'secret1');
  await writeRelayConfig(directory, baseRelayConfig({
    listeners: [{ name: 'tls', address: '127.0.0.1', port: 10465, relayPolicy: 'p', tls: { mode: 'implicit', certFile: 'certs/tls.crt', keyFile: 'certs/tls.key' } }],
    relayPolicies: [{ name: 'p', users: { secretPath: 'users' } }],
  }));
  const initial = await loadConfigDirectory(directory);
  const recorder = applyRecorder();
  const watcher = new ConfigWatcher({ directory, initial, apply: recorder.apply, metrics: new RelayMetrics({ processMetrics: false }), logger: silent, pollIntervalMs: 3_600_000, debounceMs: 50 });
  await watcher.start();
  try {
    let applied = recorder.next();
    await writeFile(path.join(directory, 'certs/tls.crt'), 'cert v2');
    assert.equal((await applied).hash, initial.hash, 'same relay.yaml, reloaded for its certificate');
    applied = recorder.next();
    await writeFile(path.join(directory, 'users/bob'), 'secret2');
    assert.equal((await applied).hash, initial.hash, 'same relay.yaml, reloaded for a new user file');
  } finally {
    watcher.stop();
  }
});
