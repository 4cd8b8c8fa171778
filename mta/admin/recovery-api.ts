// The admin API while the spool is being recovered after a start: the queue routes are mounted
// before recovery begins and answer 503 with its progress (phase, messages found and queued)
// until every message is queued, not a 404 or a short queue list that would read as "no mail
// here"; then they answer as themselves. One exception: the queue list, when the last clean stop
// left a snapshot of it (queue-snapshot.ts), answers at once with the snapshot's queues and the
// recovery's progress ("snapshotSavedAt" says the counts are those of the stop).
import type { QueueSnapshot } from './queue-snapshot.ts';
import type { RecoveryProgress } from '../spool/recovery-progress.ts';
import { QUEUE_API_PREFIX } from './queue-api.ts';
import type { AdminResponse, AdminRoute, JsonAdminRoute } from './routes.ts';

export function whileRecovering(progress: RecoveryProgress, routes: readonly AdminRoute[], snapshot: () => Promise<QueueSnapshot | undefined> = async () => undefined): AdminRoute[] {
  const recovering = (): AdminResponse | undefined =>
    progress.status().recovering ? { status: 503, body: { error: `${progress.describe()}; try again shortly`, reason: 'recovering', recovery: progress.status() } } : undefined;
  return routes.map((route): AdminRoute => {
    if ('stream' in route) return { ...route, stream: async (request) => recovering() ?? route.stream(request) };
    if (route.method === 'GET' && route.path === `${QUEUE_API_PREFIX}/queues`) return queueListFromSnapshot(route, progress, snapshot, recovering);
    return { ...route, handle: async (request) => recovering() ?? route.handle(request) };
  });
}

function queueListFromSnapshot(route: JsonAdminRoute, progress: RecoveryProgress, snapshot: () => Promise<QueueSnapshot | undefined>, recovering: () => AdminResponse | undefined): JsonAdminRoute {
  return {
    ...route,
    handle: async (request) => {
      const saved = progress.status().recovering ? await snapshot().catch(() => undefined) : undefined;
      if (!saved) return recovering() ?? route.handle(request);
      const live = await route.handle(request);
      return { ...live, body: { ...(live.body as object), queues: saved.queues, recovery: { ...progress.status(), snapshotSavedAt: saved.savedAt } } };
    },
  };
}
