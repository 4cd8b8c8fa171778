// The suppression part of the admin HTTP API (JSON): list the entries in force (by address or
// domain; addresses are personal data, so reading needs the read or the full admin token), add
// and remove addresses (full token), and the two endpoints the pool's pods share the list
// through (suppression-peers.ts): every record with its tombstones, and sync (full token) to
// apply a peer's changes.
import { z } from 'zod';
import { parseMailbox } from '../inbound/address.ts';
import type { AdminResponse, AdminRoute } from '../admin/routes.ts';
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

/** The suppression routes: reading needs the read or the full admin token, every change (peers' sync too) the full token (routes.ts). */
export function suppressionRoutes(suppression: PoolSuppression): AdminRoute[] {
  return [
    { method: 'GET', path: SUPPRESSIONS_PATH, access: 'read', handle: async ({ query }) => {
      const limit = Math.min(Number(query.get('limit') ?? 1000) || 1000, MAX_LISTED);
      const entries = suppression.list.entries({ address: query.get('address') ?? undefined, domain: query.get('domain') ?? undefined });
      return { status: 200, body: { mode: suppression.mode ?? null, total: entries.length, entries: entries.slice(0, limit).map((entry) => ({ ...entry, addedAt: new Date(entry.addedAt).toISOString() })), ...suppression.peerStatus } };
    } },
    { method: 'GET', path: RECORDS_PATH, access: 'read', handle: async () => ({ status: 200, body: { records: suppression.list.records() } }) },
    { method: 'POST', path: `${SUPPRESSIONS_PATH}/add`, access: 'write', handle: async ({ body }) => change(suppression, 'add', body) },
    { method: 'POST', path: `${SUPPRESSIONS_PATH}/remove`, access: 'write', handle: async ({ body }) => change(suppression, 'remove', body) },
    { method: 'POST', path: SYNC_PATH, access: 'write', handle: async ({ body }) => sync(suppression, body) },
  ];
}

async function sync(suppression: PoolSuppression, body: unknown): Promise<AdminResponse> {
  const parsed = Sync.safeParse(body ?? {});
  if (!parsed.success) return invalidBody(parsed.error.issues[0]);
  const records: SuppressionRecord[] = [];
  for (const [index, value] of parsed.data.records.entries()) {
    const record = parseSuppressionRecord(value);
    if (!record) return error(400, `records[${index}]: not a suppression record`);
    records.push(record);
  }
  return { status: 200, body: { applied: await suppression.merge(records) } };
}

async function change(suppression: PoolSuppression, action: 'add' | 'remove', body: unknown): Promise<AdminResponse> {
  const parsed = Change.safeParse(body ?? {});
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
}
