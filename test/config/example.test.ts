// The example runtime config that `npm start` runs must stay valid against the schema.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { loadConfigDirectory } from '../../mta/config/loader.ts';
import { REPO_ROOT } from '../fixtures/relay-process.ts';

test('examples/relay-config/relay.yaml validates: three localhost listeners, two VirtualMTAs, spool in .state', async () => {
  const directory = path.join(REPO_ROOT, 'examples/relay-config');
  const { config } = await loadConfigDirectory(directory);
  assert.deepEqual(config.listeners.map((listener) => [listener.name, listener.address, listener.port, listener.tls.mode]), [
    ['submission', '127.0.0.1', 2525, 'starttls'],
    ['submissions', '127.0.0.1', 10465, 'implicit'],
    ['relay', '127.0.0.1', 10025, 'starttls'],
  ]);
  assert.deepEqual(config.pool.virtualMtas.map((vmta) => vmta.name), ['vmta-main', 'vmta-bulk']);
  assert.equal(config.spool.path, path.join(directory, '.state/spool'));
});
