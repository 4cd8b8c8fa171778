// The admin API while the spool is being recovered after a start: the queue routes are mounted
// before recovery begins and answer 503 with its progress (phase, messages found and queued)
// until every message is queued, not a 404 or a short queue list that would read as "no mail
// here"; then they answer as themselves.
import type { RecoveryProgress } from '../spool/recovery-progress.ts';
import type { AdminResponse, AdminRoute } from './routes.ts';

export function whileRecovering(progress: RecoveryProgress, routes: readonly AdminRoute[]): AdminRoute[] {
  const recovering = (): AdminResponse | undefined =>
    progress.status().recovering ? { status: 503, body: { error: `${progress.describe()}; try again shortly`, reason: 'recovering', recovery: progress.status() } } : undefined;
  return routes.map((route): AdminRoute => ('stream' in route ? { ...route, stream: async (request) => recovering() ?? route.stream(request) } : { ...route, handle: async (request) => recovering() ?? route.handle(request) }));
}
