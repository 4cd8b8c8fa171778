// The drain part of the admin API: POST /api/v1/drain starts a drain (peers to hand over to, a
// deadline), GET reports its progress, DELETE cancels it. Every call needs the full admin token,
// the report too: a drain takes the relay out of service, and only the operator asks.
import { z } from 'zod';
import type { AdminResponse, AdminRoute } from '../admin/routes.ts';
import type { QueueDrain } from './queue-drain.ts';

export const DRAIN_PATH = '/api/v1/drain';

const DrainBody = z.strictObject({
  handOverTo: z.array(z.string().min(3).max(300)).max(1000).default([]),
  deadlineSeconds: z.number().int().min(1).max(7 * 24 * 3600),
});

function error(status: number, message: string): AdminResponse {
  return { status, body: { error: message } };
}

/** The drain routes; all need the full admin token (routes.ts checks it). */
export function drainRoutes(drain: QueueDrain): AdminRoute[] {
  return [
    { method: 'GET', path: DRAIN_PATH, access: 'write', handle: async () => ({ status: 200, body: drain.report() }) },
    { method: 'DELETE', path: DRAIN_PATH, access: 'write', handle: async () => ({ status: 200, body: await drain.cancel() }) },
    {
      method: 'POST',
      path: DRAIN_PATH,
      access: 'write',
      handle: async (request) => {
        const parsed = DrainBody.safeParse(request.body ?? {});
        if (!parsed.success) {
          const issue = parsed.error.issues[0];
          return error(400, `invalid request body: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`);
        }
        try {
          return { status: 202, body: drain.start(parsed.data) };
        } catch (problem) {
          return error(400, (problem as Error).message);
        }
      },
    },
  ];
}
