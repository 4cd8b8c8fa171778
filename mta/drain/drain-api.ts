// The drain part of the admin API: POST /api/v1/drain starts a drain (peers to hand over to, a
// deadline), GET reports its progress, DELETE cancels it. Every call needs the admin token: a
// drain takes the relay out of service.
import { z } from 'zod';
import type { AdminHandler, AdminResponse } from '../admin/routes.ts';
import type { QueueDrain } from './queue-drain.ts';

export const DRAIN_PATH = '/api/v1/drain';

const DrainBody = z.strictObject({
  handOverTo: z.array(z.string().min(3).max(300)).max(1000).default([]),
  deadlineSeconds: z.number().int().min(1).max(7 * 24 * 3600),
});

function error(status: number, message: string): AdminResponse {
  return { status, body: { error: message } };
}

export function createDrainApi(drain: QueueDrain): AdminHandler {
  return async (request) => {
    if (request.path !== DRAIN_PATH) return undefined;
    if (!request.authorized) return error(401, 'draining takes the relay out of service and needs the admin bearer token');
    switch (request.method) {
      case 'GET':
        return { status: 200, body: drain.report() };
      case 'DELETE':
        return { status: 200, body: await drain.cancel() };
      case 'POST': {
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
      }
      default:
        return error(405, `${DRAIN_PATH} takes GET, POST or DELETE`);
    }
  };
}
