// Kubernetes Events (core/v1) about the operator's objects, aggregated like client-go's
// recorder: a repeat of the same reason and message for the same object within the window writes
// nothing (the count grows in memory); after the window the existing Event's count and
// lastTimestamp are patched. Records of one key run one after another, so two reconciles reporting
// the same problem at once patch one Event rather than create two. Events are best effort: a
// failure is logged, never thrown.
import type { Logger } from 'pino';
import { isNotFound, type KubeClient } from './client.ts';
import { RESOURCE_TYPES } from './resources.ts';
import type { KubeObject } from './types.ts';

export type EventType = 'Normal' | 'Warning';

interface SeenEvent {
  name: string;
  namespace: string;
  count: number;
  lastWrittenAt: number;
}

export class EventRecorder {
  private readonly client: KubeClient;
  private readonly component: string;
  private readonly windowMs: number;
  private readonly logger: Logger | undefined;
  private readonly seen = new Map<string, SeenEvent>();
  /** The record of each key in progress (the last one queued). */
  private readonly inProgress = new Map<string, Promise<void>>();

  constructor(client: KubeClient, options: { component?: string; aggregationWindowMs?: number; logger?: Logger } = {}) {
    this.client = client;
    this.component = options.component ?? 'vmta-operator';
    this.windowMs = options.aggregationWindowMs ?? 10 * 60_000;
    this.logger = options.logger;
  }

  record(involved: KubeObject, type: EventType, reason: string, message: string): Promise<void> {
    const key = `${involved.metadata.uid ?? involved.metadata.name}|${type}|${reason}|${message}`;
    const recorded = (this.inProgress.get(key) ?? Promise.resolve()).then(() => this.write(key, involved, type, reason, message));
    this.inProgress.set(key, recorded);
    void recorded.then(() => {
      if (this.inProgress.get(key) === recorded) this.inProgress.delete(key);
    });
    return recorded;
  }

  private async write(key: string, involved: KubeObject, type: EventType, reason: string, message: string): Promise<void> {
    const namespace = involved.metadata.namespace ?? 'default';
    const now = Date.now();
    const existing = this.seen.get(key);
    try {
      if (existing) {
        existing.count += 1;
        if (now - existing.lastWrittenAt < this.windowMs) return;
        try {
          await this.client.mergePatch(RESOURCE_TYPES.Event, existing.namespace, existing.name, { count: existing.count, lastTimestamp: new Date(now).toISOString() });
          existing.lastWrittenAt = now;
          return;
        } catch (error) {
          if (!isNotFound(error)) throw error;
          this.seen.delete(key);
        }
      }
      const name = `${involved.metadata.name}.${now.toString(16)}${Math.floor(Math.random() * 0xffff).toString(16)}`;
      const timestamp = new Date(now).toISOString();
      await this.client.create({
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { name, namespace },
        involvedObject: { apiVersion: involved.apiVersion, kind: involved.kind, name: involved.metadata.name, namespace: involved.metadata.namespace, uid: involved.metadata.uid, resourceVersion: involved.metadata.resourceVersion },
        reason,
        message: message.slice(0, 1024),
        type,
        source: { component: this.component },
        reportingComponent: this.component,
        firstTimestamp: timestamp,
        lastTimestamp: timestamp,
        count: 1,
      });
      this.seen.set(key, { name, namespace, count: 1, lastWrittenAt: now });
    } catch (error) {
      this.logger?.warn({ err: error, reason, object: involved.metadata.name }, 'could not record event');
    }
  }

  /** Forgets an object's events (after it is deleted) so the map does not grow without bound. */
  forgetObject(uid: string | undefined): void {
    if (!uid) return;
    for (const key of this.seen.keys()) if (key.startsWith(`${uid}|`)) this.seen.delete(key);
  }
}
