// The queue part of the admin HTTP API (JSON): list queues and VirtualMTAs, the MTA-STS policies
// in force per domain, list waiting messages by queue id, show a message, pause/resume a
// VirtualMTA, a domain or one queue, retry now, bounce or delete a queue's messages. Every call
// that changes state needs the admin token (`authorized`; a refusal says whether the token was
// missing, wrong or not configured); bounce and
// delete without a VirtualMTA or domain also need `"all": true` so nobody purges every queue
// by leaving a field out.
import { z } from 'zod';
import type { DeliveryEngine } from '../delivery/delivery-engine.ts';
import type { AdminCredentials, AdminHandler, AdminRequest, AdminResponse } from './routes.ts';

export const QUEUE_API_PREFIX = '/api/v1';

/** What the API needs from the delivery engine. */
export type QueueControl = Pick<DeliveryEngine, 'listQueues' | 'virtualMtaStatus' | 'showMessage' | 'listMessageIds' | 'pause' | 'resume' | 'retryNow' | 'bounce' | 'delete' | 'mtaStsPolicies'>;

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

/** Why a state change is refused, in words that say what to bring. */
const REFUSALS: Record<Exclude<AdminCredentials, 'valid'>, string> = {
  missing: 'this call changes the queues and needs the admin bearer token',
  wrong: 'the bearer token given is not this relay\'s admin token',
  unconfigured: 'this relay has no admin token configured (admin.tokenFile), so it refuses every call that changes the queues',
};

export function createQueueApi(engine: QueueControl): AdminHandler {
  return async (request: AdminRequest) => {
    const { method, path } = request;
    if (path === `${QUEUE_API_PREFIX}/queues` && method === 'GET') {
      return { status: 200, body: { queues: engine.listQueues(), virtualMtas: engine.virtualMtaStatus() } };
    }
    if (path === `${QUEUE_API_PREFIX}/mta-sts` && method === 'GET') {
      return { status: 200, body: { policies: engine.mtaStsPolicies().map(({ domain, id, policy, fetchedAt, expiresAt }) => ({ domain, id, ...policy, fetchedAt: new Date(fetchedAt).toISOString(), expiresAt: new Date(expiresAt).toISOString() })) } };
    }
    if (path === `${QUEUE_API_PREFIX}/messages` && method === 'GET') {
      const limit = Math.min(Number(request.query.get('limit') ?? 100) || 100, MAX_LISTED_MESSAGES);
      const selector = { virtualMta: request.query.get('virtualMta') ?? undefined, domain: request.query.get('domain') ?? undefined };
      const { total, ids } = engine.listMessageIds(selector, limit);
      return { status: 200, body: { total, messages: ids.flatMap((id) => engine.showMessage(id) ?? []) } };
    }
    const messageMatch = new RegExp(`^/api/v1/messages/(${QUEUE_ID_PATTERN.source.slice(1, -1)})$`).exec(path);
    if (messageMatch && method === 'GET') {
      const state = engine.showMessage(messageMatch[1]!);
      return state ? { status: 200, body: state } : error(404, `no queued message "${messageMatch[1]}" (delivered, bounced, deleted or never queued here; vmta queue list shows the waiting ones)`, 'not-found');
    }
    const actionMatch = /^\/api\/v1\/queues\/([a-z]+)$/.exec(path);
    if (!actionMatch || !(ACTIONS as readonly string[]).includes(actionMatch[1]!)) return undefined;
    if (method !== 'POST') return error(405, `${path} takes POST`);
    if (!request.authorized) return error(401, REFUSALS[request.credentials === 'valid' ? 'wrong' : request.credentials], `token-${request.credentials}`);
    const parsed = QueueSelectorBody.safeParse(request.body ?? {});
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return error(400, `invalid request body: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`);
    }
    const { all, ...selector } = parsed.data;
    const action = actionMatch[1] as Action;
    if (selector.virtualMta && !engine.virtualMtaStatus().some((vmta) => vmta.name === selector.virtualMta)) {
      return error(404, `no VirtualMTA named "${selector.virtualMta}" in this relay's pool (it has ${engine.virtualMtaStatus().map((vmta) => vmta.name).join(', ')})`, 'not-found');
    }
    if ((action === 'bounce' || action === 'delete') && !selector.virtualMta && !selector.domain && all !== true) {
      return error(400, `${action} needs "virtualMta" and/or "domain", or "all": true to ${action} every queue`);
    }
    switch (action) {
      case 'pause':
        return { status: 200, body: { action, ...selector, queues: engine.pause(selector) } };
      case 'resume':
        return { status: 200, body: { action, ...selector, queues: engine.resume(selector) } };
      case 'retry':
        return { status: 200, body: { action, ...selector, messages: engine.retryNow(selector) } };
      case 'bounce':
        return { status: 200, body: { action, ...selector, messages: await engine.bounce(selector) } };
      case 'delete':
        return { status: 200, body: { action, ...selector, messages: await engine.delete(selector) } };
    }
  };
}
