// The queue part of the admin HTTP API (JSON): list queues and VirtualMTAs, the MTA-STS policies
// in force per domain, list waiting messages by queue id, show a message, pause/resume a
// VirtualMTA, a domain or one queue, retry now, bounce or delete a queue's messages. Reading
// (recipients are personal data) needs the read-only or the full admin token, every change the
// full one; the server checks them from the route table (routes.ts). Bounce and delete without a
// VirtualMTA or domain also need `"all": true` so nobody purges every queue by leaving a field out.
// Pause and resume answer once the pauses in force are saved (savePauses: queue-pauses.ts), so
// they survive a restart.
import { z } from 'zod';
import type { DeliveryEngine } from '../delivery/delivery-engine.ts';
import type { AdminResponse, AdminRoute, JsonAdminRoute } from './routes.ts';

export const QUEUE_API_PREFIX = '/api/v1';

/** What the API needs from the delivery engine. */
export type QueueControl = Pick<DeliveryEngine, 'listQueues' | 'virtualMtaStatus' | 'showMessage' | 'listMessageIds' | 'pause' | 'resume' | 'pauses' | 'retryNow' | 'bounce' | 'delete' | 'mtaStsPolicies' | 'warmupStatus'>;

/** Keeps the pauses in force durably (queue-pauses.ts); resolves once they are. */
export type SavePauses = (pauses: ReturnType<DeliveryEngine['pauses']>) => Promise<void>;

/** The body of a control call; `vmta queue` checks its flags against it too, so both say the same. */
export const QueueSelectorBody = z.strictObject({
  virtualMta: z.string().min(1).max(63).optional(),
  domain: z.string().min(1).max(253).optional(),
  all: z.boolean().optional(),
});

const ACTIONS = ['pause', 'resume', 'retry', 'bounce', 'delete'] as const;
type Action = (typeof ACTIONS)[number];

/** What a queue id may look like in GET /api/v1/messages/ID. */
export const QUEUE_ID_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;

/** Most messages GET /api/v1/messages lists at once. */
const MAX_LISTED_MESSAGES = 1000;

function error(status: number, message: string, reason?: string): AdminResponse {
  return { status, body: { error: message, ...(reason ? { reason } : {}) } };
}

/** The queue routes: reading needs the read or the full token, every change the full token (routes.ts). */
export function queueRoutes(engine: QueueControl, savePauses?: SavePauses): AdminRoute[] {
  const read = (path: string, handle: JsonAdminRoute['handle']): JsonAdminRoute => ({ method: 'GET', path: `${QUEUE_API_PREFIX}${path}`, access: 'read', handle });
  return [
    read('/queues', async () => ({ status: 200, body: { queues: engine.listQueues(), virtualMtas: engine.virtualMtaStatus() } })),
    read('/mta-sts', async () => ({ status: 200, body: { policies: engine.mtaStsPolicies().map(({ domain, id, policy, fetchedAt, expiresAt }) => ({ domain, id, ...policy, fetchedAt: new Date(fetchedAt).toISOString(), expiresAt: new Date(expiresAt).toISOString() })) } })),
    read('/warmup', async () => ({ status: 200, body: { virtualMtas: engine.warmupStatus() } })),
    read('/messages', async (request) => {
      const limit = Math.min(Number(request.query.get('limit') ?? 100) || 100, MAX_LISTED_MESSAGES);
      const selector = { virtualMta: request.query.get('virtualMta') ?? undefined, domain: request.query.get('domain') ?? undefined };
      const { total, ids } = engine.listMessageIds(selector, limit);
      return { status: 200, body: { total, messages: ids.flatMap((id) => engine.showMessage(id) ?? []) } };
    }),
    read('/messages/:id', async ({ params }) => {
      const state = engine.showMessage(params.id!);
      return state ? { status: 200, body: state } : error(404, `no queued message "${params.id}" (delivered, bounced, deleted or never queued here; vmta queue list shows the waiting ones)`, 'not-found');
    }),
    ...ACTIONS.map((action): JsonAdminRoute => ({ method: 'POST', path: `${QUEUE_API_PREFIX}/queues/${action}`, access: 'write', handle: (request) => queueAction(engine, action, request.body, savePauses) })),
  ];
}

async function queueAction(engine: QueueControl, action: Action, body: unknown, savePauses: SavePauses | undefined): Promise<AdminResponse> {
  const parsed = QueueSelectorBody.safeParse(body ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return error(400, `invalid request body: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`);
  }
  const { all, ...selector } = parsed.data;
  if (selector.virtualMta && !engine.virtualMtaStatus().some((vmta) => vmta.name === selector.virtualMta)) {
    return error(404, `no VirtualMTA named "${selector.virtualMta}" in this relay's pool (it has ${engine.virtualMtaStatus().map((vmta) => vmta.name).join(', ')})`, 'not-found');
  }
  if ((action === 'bounce' || action === 'delete') && !selector.virtualMta && !selector.domain && all !== true) {
    return error(400, `${action} needs "virtualMta" and/or "domain", or "all": true to ${action} every queue`);
  }
  switch (action) {
    case 'pause':
    case 'resume': {
      const queues = action === 'pause' ? engine.pause(selector) : engine.resume(selector);
      // Answered once durable: a pause the operator was told about survives a restart.
      try {
        await savePauses?.(engine.pauses());
      } catch (failure) {
        return error(500, `${action} is in force now, but could not be saved (${(failure as Error).message}): after a restart the relay would not know it; try again`);
      }
      return { status: 200, body: { action, ...selector, queues } };
    }
    case 'retry':
      return { status: 200, body: { action, ...selector, messages: engine.retryNow(selector) } };
    case 'bounce':
      return { status: 200, body: { action, ...selector, messages: await engine.bounce(selector) } };
    case 'delete':
      return { status: 200, body: { action, ...selector, messages: await engine.delete(selector) } };
  }
}
