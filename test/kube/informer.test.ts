import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Informer } from '../../operator/kube/informer.ts';
import { RESOURCE_TYPES } from '../../operator/kube/resources.ts';
import type { KubeObject } from '../../operator/kube/types.ts';
import type { FakeKubeApi } from '../fixtures/fake-kube-api.ts';
import type { KubeClient } from '../../operator/kube/client.ts';
import { eventually, startFakeApi } from './helpers.ts';

let api: FakeKubeApi;
let client: KubeClient;

before(async () => {
  ({ api, client } = await startFakeApi({ bookmarkIntervalMs: 200 }));
});
after(async () => {
  await api.close();
});

function configMap(name: string, value: string, namespace = 'default'): KubeObject {
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace }, data: { value } };
}

function startInformer(options: Partial<ConstructorParameters<typeof Informer>[1]> = {}) {
  const informer = new Informer(client, { type: RESOURCE_TYPES.ConfigMap, namespace: 'inf', initialBackoffMs: 20, ...options });
  const seen: string[] = [];
  informer.onEvent((kind, object) => seen.push(`${kind}:${object.metadata.name}:${(object.data as { value?: string } | undefined)?.value ?? ''}`));
  return { informer, seen };
}

test('informer lists existing objects, then sees adds, updates and deletes through the watch', async () => {
  api.put(configMap('a', '1', 'inf'));
  const { informer, seen } = startInformer();
  await informer.start();
  try {
    assert.deepEqual(seen, ['add:a:1']);
    api.put(configMap('b', '1', 'inf'));
    api.put(configMap('a', '2', 'inf'));
    api.remove('v1', 'ConfigMap', 'inf', 'b');
    api.put(configMap('other-namespace', '1', 'elsewhere'));
    await eventually('delete of b', () => seen.includes('delete:b:1'));
    assert.deepEqual(seen, ['add:a:1', 'add:b:1', 'update:a:2', 'delete:b:1']);
    assert.equal(informer.get('inf/a')?.data && (informer.get('inf/a')!.data as { value: string }).value, '2');
  } finally {
    informer.stop();
    api.remove('v1', 'ConfigMap', 'inf', 'a');
  }
});

test('informer relists after 410 Gone and catches up on what it missed', async () => {
  const { informer, seen } = startInformer();
  await informer.start();
  try {
    await eventually('watch open', () => api.openWatchCount() > 0);
    api.breakWatches();
    // Written while no watch is open, then the history is gone: only a relist can see it.
    api.put(configMap('missed', '1', 'inf'));
    api.compactHistory();
    await eventually('the missed object', () => informer.get('inf/missed'));
    assert.ok(informer.stats.relistsAfterGone >= 1, 'a 410 triggered a relist');
    assert.ok(seen.includes('add:missed:1'));
  } finally {
    informer.stop();
    api.remove('v1', 'ConfigMap', 'inf', 'missed');
  }
});

test('informer reconnects after a dropped watch and resumes from the last resourceVersion', async () => {
  const { informer, seen } = startInformer();
  await informer.start();
  try {
    await eventually('watch open', () => api.openWatchCount() > 0);
    const watchesBefore = informer.stats.watches;
    api.breakWatches();
    api.put(configMap('after-drop', '1', 'inf'));
    await eventually('the object written during the outage', () => informer.get('inf/after-drop'));
    // The put can reach the informer on the dropped watch before its socket is gone: wait for the
    // reconnect rather than expect it to have happened by the time the object is seen.
    await eventually('a new watch opened after the drop', () => informer.stats.watches > watchesBefore);
    assert.equal(informer.stats.relistsAfterGone, 0, 'no relist was needed');
    assert.deepEqual(seen, ['add:after-drop:1']);
  } finally {
    informer.stop();
    api.remove('v1', 'ConfigMap', 'inf', 'after-drop');
  }
});

test('informer watchdog restarts a watch that went silent', async () => {
  const { informer } = startInformer({ watchdogMs: 600 });
  await informer.start();
  try {
    await eventually('watch open', () => api.openWatchCount() > 0);
    api.silenceWatches();
    api.put(configMap('while-silent', '1', 'inf'));
    await eventually('the object written while the watch was silent', () => informer.get('inf/while-silent'));
    assert.ok(informer.stats.watchdogRestarts >= 1);
  } finally {
    informer.stop();
    api.remove('v1', 'ConfigMap', 'inf', 'while-silent');
  }
});

test('informer resync replays cached objects as updates', async () => {
  api.put(configMap('steady', '1', 'inf'));
  const { informer, seen } = startInformer({ resyncPeriodMs: 200 });
  await informer.start();
  try {
    await eventually('a resync', () => seen.filter((s) => s === 'update:steady:1').length >= 2);
  } finally {
    informer.stop();
    api.remove('v1', 'ConfigMap', 'inf', 'steady');
  }
});

test('informer keeps the cache when bookmarks arrive and does not emit for them', async () => {
  const { informer, seen } = startInformer();
  await informer.start();
  try {
    await new Promise((r) => setTimeout(r, 700));
    assert.deepEqual(seen, []);
    assert.equal(informer.stats.watches, 1, 'bookmarks keep one watch alive');
  } finally {
    informer.stop();
  }
});
