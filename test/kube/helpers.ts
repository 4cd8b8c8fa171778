// Shared helpers for tests against the fake API server: a client for it and polling.
import { FakeKubeApi, type FakeKubeApiOptions } from '../fixtures/fake-kube-api.ts';
import { KubeClient, loadKubeConfig } from '../../operator/kube/client.ts';

export async function startFakeApi(options: FakeKubeApiOptions = {}): Promise<{ api: FakeKubeApi; client: KubeClient; kubeconfig: string }> {
  const api = await FakeKubeApi.start(options);
  const kubeconfig = await api.writeKubeconfig();
  return { api, client: new KubeClient(loadKubeConfig(kubeconfig)), kubeconfig };
}

/** Polls `condition` until it returns a truthy value; fails with `what` after timeoutMs. */
export async function eventually<T>(what: string, condition: () => T | Promise<T>, timeoutMs = 20_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await condition();
      if (value) return value as NonNullable<T>;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
