// GET /warmup on the admin API: per VirtualMTA still warming, its day of the plan, this pod's
// share of the caps and what this pod sent in the current day and hour (mta/delivery/warmup-ledger.ts).
// Open like /egress-proxies: /metrics, open too, already exports the same numbers
// (vmta_warmup_cap, vmta_warmup_used); it holds no mail data, and the operator reads it without a
// token to sum the pods' use into the VirtualMtaPool status (operator/controller/warmup-status.ts).
// The same list stays at GET /api/v1/warmup behind the read token.
import type { DeliveryEngine } from '../delivery/delivery-engine.ts';
import type { AdminRoute } from './routes.ts';

export const WARMUP_PATH = '/warmup';

export function warmupRoutes(delivery: Pick<DeliveryEngine, 'warmupStatus'>): AdminRoute[] {
  return [{ method: 'GET', path: WARMUP_PATH, access: 'open', handle: async () => ({ status: 200, body: { virtualMtas: delivery.warmupStatus() } }) }];
}
