// The admin API while the spool is being recovered after a start: every call under /api/v1 is
// answered 503 with the recovery's progress (phase, messages found and queued), not a 404 or an
// empty queue list that would read as "no mail here". Mounted before the queue API; silent once
// the recovery is done.
import type { RecoveryProgress } from '../spool/recovery-progress.ts';
import { QUEUE_API_PREFIX } from './queue-api.ts';
import type { AdminHandler } from './routes.ts';

export function createRecoveryApi(progress: RecoveryProgress): AdminHandler {
  return async (request) => {
    if (!progress.status().recovering || !request.path.startsWith(`${QUEUE_API_PREFIX}/`)) return undefined;
    return { status: 503, body: { error: `${progress.describe()}; try again shortly`, reason: 'recovering', recovery: progress.status() } };
  };
}
