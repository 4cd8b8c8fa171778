// How many session processes a relay runs (mta/sessions/session-workers.ts sessionProcessCount)
// for every setting and CPU allowance from 1 to 64: "auto" leaves the primary one CPU and gives
// each other CPU a session process, none on one or two CPUs; a number is taken as it is; a start
// that fails after the processes were forked closes them.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { RuntimeConfig } from '../../mta/config/schema.ts';
import { createLogger } from '../../mta/observe/log.ts';
import { Relay } from '../../mta/relay.ts';
import { sessionProcessCount } from '../../mta/sessions/session-workers.ts';
import { freePort, loopbackRelayConfig, temporaryDirectory, writeRelayConfig } from '../fixtures/relay-process.ts';

test('"auto": none on 1 or 2 CPUs, CPUs - 1 from 3 on', () => {
  for (let cpus = 1; cpus <= 64; cpus++) assert.equal(sessionProcessCount('auto', cpus), cpus <= 2 ? 0 : cpus - 1, `${cpus} CPUs`);
});

test('a number is the count, whatever the CPUs', () => {
  for (const setting of [0, 1, 2, 7, 64]) for (const cpus of [1, 2, 4, 32]) assert.equal(sessionProcessCount(setting, cpus), setting);
});

test('relay.yaml takes "auto" (the default) or 0..64; anything else names the field', () => {
  assert.equal(RuntimeConfig.parse(loopbackRelayConfig(2525, 8025)).sessionProcesses, 'auto');
  for (const good of ['auto', 0, 1, 64] as const) assert.equal(RuntimeConfig.parse(loopbackRelayConfig(2525, 8025, { sessionProcesses: good })).sessionProcesses, good);
  for (const bad of [-1, 65, 1.5, 'all', '2', null]) {
    const result = RuntimeConfig.safeParse(loopbackRelayConfig(2525, 8025, { sessionProcesses: bad as never }));
    assert.equal(result.success, false, `${JSON.stringify(bad)} refused`);
    assert.deepEqual(result.error!.issues[0]!.path, ['sessionProcesses']);
  }
});

test('a relay whose start fails after it forked its session processes leaves none running', async () => {
  const directory = await temporaryDirectory('vmta-sessions-start-');
  try {
    // The spool path is a file: the spool cannot be opened, after the processes were forked.
    await writeFile(path.join(directory.path, 'not-a-directory'), '');
    await writeRelayConfig(directory.path, { ...loopbackRelayConfig(await freePort(), await freePort()), sessionProcesses: 2, spool: { path: path.join(directory.path, 'not-a-directory') } });
    await assert.rejects(Relay.start({ configDir: directory.path, shutdownTimeoutMs: 1000, logger: createLogger('test', 'silent') }));
    const children = (await readFile(`/proc/self/task/${process.pid}/children`, 'utf8')).trim();
    assert.equal(children, '', `children left: ${children}`);
  } finally {
    await directory.remove();
  }
});
