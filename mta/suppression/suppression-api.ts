// The suppression part of the admin HTTP API (JSON): list the entries in force (by address or
// domain), add and remove addresses (admin token needed), and the two endpoints the pool's pods
// share the list through (suppression-peers.ts): every record with its tombstones, and sync
// (admin token needed) to apply a peer's changes.
import { z } from 'zod';
import { parseMailbox } from '../inbound/address.ts';
import type { AdminHandler, AdminRequest, AdminResponse } from '../admin/routes.ts';
import type { PoolSuppression } from './pool-suppression.ts';
import { parseSuppressionRecord, type SuppressionRecord } from './suppression-list.ts';
import { RECORDS_PATH, SYNC_PATH } from './suppression-peers.ts';

export const SUPPRESSIONS_PATH = '/api/v1/suppressions';
const MAX_LISTED = 10_000;
const MAX_PER_CALL = 10_000;

const Change = z.strictObject({
  addresses: z.array(z.string().min(1).max(320)).min(1).max(MAX_PER_CALL),
  /** Why the operator adds them (kept as the entries' detail). */
  note: z.string().max(1000).optional(),
});
const Sync = z.strictObject({ records: z.array(z.unknown()).max(MAX_PER_CALL) });

function error(status: number, message: string, reason?: string): AdminResponse {
  return { status, body: { error: message, ...(reason ? { reason } : {}) } };
}

const REFUSALS = {
  missing: 'changing the suppression list needs the admin bearer token',
  wrong: 'the bearer token given is not this relay\'s admin token',
  unconfigured: 'this relay has no admin token configured (admin.tokenFile), so its suppression list can only be read',
} as const;

function refusal(request: AdminRequest): AdminResponse | undefined {
  if (request.authorized) return undefined;
  const credentials = request.credentials === 'valid' ? 'wrong' : request.credentials;
  return error(401, REFUSALS[credentials], `token-${credentials}`);
}

function invalidBody(issue: z.core.$ZodIssue | undefined): AdminResponse {
  return error(400, `invalid request body: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`);
}

/** The addresses normalised (domain lower-cased), or the 400 naming the first that is not an address. */
function parseAddresses(addresses: readonly string[]): string[] | AdminResponse {
  const parsed: string[] = [];
  for (const [index, address] of addresses.entries()) {
    const result = parseMailbox(address.trim().replace(/^<(.*)>$/, '$1'));
    if (!result.ok) return error(400, `addresses[${index}]: "${address}" is not an email address (${result.error})`);
    parsed.push(result.mailbox.address);
  }
  return parsed;
}

export function createSuppressionApi(suppression: PoolSuppression): AdminHandler {
  return async (request: AdminRequest) => {
    const { method, path } = request;
    if (!path.startsWith(SUPPRESSIONS_PATH)) return undefined;
    if (path === SUPPRESSIONS_PATH && method === 'GET') {
      const limit = Math.min(Number(request.query.get('limit') ?? 1000) || 1000, MAX_LISTED);
      const entries = suppression.list.entries({ address: request.query.get('address') ?? undefined, domain: request.query.get('domain') ?? undefined });
      return { status: 200, body: { mode: suppression.mode ?? null, total: entries.length, entries: entries.slice(0, limit).map((entry) => ({ ...entry, addedAt: new Date(entry.addedAt).toISOString() })), ...suppression.peerStatus } };
    }
    if (path === RECORDS_PATH && method === 'GET') return { status: 200, body: { records: suppression.list.records() } };
    const action = { [`${SUPPRESSIONS_PATH}/add`]: 'add', [`${SUPPRESSIONS_PATH}/remove`]: 'remove', [SYNC_PATH]: 'sync' }[path];
    if (!action) return error(404, `no such endpoint: ${method} ${path}`);
    if (method !== 'POST') return error(405, `${path} takes POST`);
    const refused = refusal(request);
    if (refused) return refused;
    if (action === 'sync') {
      const parsed = Sync.safeParse(request.body ?? {});
      if (!parsed.success) return invalidBody(parsed.error.issues[0]);
      const records: SuppressionRecord[] = [];
      for (const [index, value] of parsed.data.records.entries()) {
        const record = parseSuppressionRecord(value);
        if (!record) return error(400, `records[${index}]: not a suppression record`);
        records.push(record);
      }
      return { status: 200, body: { applied: await suppression.merge(records) } };
    }
    const parsed = Change.safeParse(request.body ?? {});
    if (!parsed.success) return invalidBody(parsed.error.issues[0]);
    const addresses = parseAddresses(parsed.data.addresses);
    if (!Array.isArray(addresses)) return addresses;
    if (action === 'add') {
      const added = await suppression.add(addresses.map((address) => ({ address, reason: 'operator' as const, ...(parsed.data.note ? { detail: parsed.data.note } : {}) })), 'admin');
      const fresh = new Set(added.map((entry) => entry.address.toLowerCase()));
      return { status: 200, body: { added: added.map((entry) => entry.address), alreadySuppressed: addresses.filter((address) => !fresh.has(address.toLowerCase())) } };
    }
    const removed = await suppression.remove(addresses);
    const gone = new Set(removed.map((address) => address.toLowerCase()));
    return { status: 200, body: { removed, notSuppressed: addresses.filter((address) => !gone.has(address.toLowerCase())) } };
  };
}
