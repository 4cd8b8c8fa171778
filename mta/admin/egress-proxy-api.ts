// GET /egress-proxies on the admin API: per VirtualMTA and SOCKS5 egress proxy, whether the last
// connection through it went through, its last error and when it was checked
// (mta/delivery/egress-proxy-health.ts). Open like /config: it holds no mail data and no
// credentials, and the operator reads it without a token to write the VirtualMtaPool status.
import type { DeliveryEngine } from '../delivery/delivery-engine.ts';
import type { AdminRoute } from './routes.ts';

export const EGRESS_PROXIES_PATH = '/egress-proxies';

export function egressProxyRoutes(delivery: Pick<DeliveryEngine, 'egressProxies'>): AdminRoute[] {
  return [{ method: 'GET', path: EGRESS_PROXIES_PATH, access: 'open', handle: async () => ({ status: 200, body: { proxies: delivery.egressProxies() } }) }];
}
