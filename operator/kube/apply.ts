// Server-side apply with the field manager `vmta-operator`, skipping the request when nothing
// would change: when every field the operator wants is already on the cached live object, or
// when the operator already applied exactly this object and nobody has written it since (the
// API server may normalise what it stores, e.g. defaults or quantities, so the first check alone
// could re-apply forever). A reconcile that finds nothing to change therefore writes nothing.
import { createHash } from 'node:crypto';
import type { KubeClient } from './client.ts';
import { objectKey, type KubeObject } from './types.ts';

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** True when every field of `wanted` is present with the same value in `actual` (lists elementwise). */
export function containsFields(actual: unknown, wanted: unknown): boolean {
  if (isPlainObject(wanted)) {
    if (!isPlainObject(actual)) return false;
    return Object.entries(wanted).every(([key, value]) => containsFields(actual[key], value));
  }
  if (Array.isArray(wanted)) {
    return Array.isArray(actual) && actual.length === wanted.length && wanted.every((item, i) => containsFields(actual[i], item));
  }
  return wanted === actual;
}

function fingerprint(object: KubeObject): string {
  return createHash('sha256').update(JSON.stringify(object)).digest('hex');
}

export interface ApplyOutcome {
  /** True when a request was sent (the object was created or may have changed). */
  written: boolean;
  object: KubeObject | undefined;
}

export class ServerSideApplier {
  private readonly client: KubeClient;
  /** Per object: what was last applied and the resourceVersion the server answered with. */
  private readonly lastApplied = new Map<string, { fingerprint: string; resourceVersion: string | undefined }>();

  constructor(client: KubeClient) {
    this.client = client;
  }

  async apply(desired: KubeObject, live: KubeObject | undefined): Promise<ApplyOutcome> {
    const key = `${desired.apiVersion}/${desired.kind}/${objectKey(desired)}`;
    const print = fingerprint(desired);
    if (live) {
      const memo = this.lastApplied.get(key);
      if (memo && memo.fingerprint === print && memo.resourceVersion === live.metadata.resourceVersion) return { written: false, object: live };
      const { status: _status, ...wanted } = desired;
      if (containsFields(live, wanted)) return { written: false, object: live };
    }
    const result = await this.client.apply<KubeObject>(desired, { force: true });
    this.lastApplied.set(key, { fingerprint: print, resourceVersion: result.metadata.resourceVersion });
    return { written: true, object: result };
  }

  forget(desired: { apiVersion: string; kind: string; metadata: { namespace?: string; name: string } }): void {
    this.lastApplied.delete(`${desired.apiVersion}/${desired.kind}/${objectKey(desired)}`);
  }
}
