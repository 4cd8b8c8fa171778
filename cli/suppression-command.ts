// `vmta suppression`: the pool's suppression list for operators, on top of the relay's admin
// HTTP API (mta/suppression/suppression-api.ts): list the entries with reason, time and source,
// add and remove addresses. Prints a table or sentences for people, or the API's JSON with
// -o json. Errors are CliErrors: one line, and the exit code of their kind (cli/exit-codes.ts).
import { adminBaseUrl, adminToken, callAdmin, DEFAULT_ADMIN_URL, parseAdminCommand } from './admin-client.ts';
import { CliError, EXIT_CODES_HELP } from './exit-codes.ts';

export const SUPPRESSION_USAGE = `usage: vmta suppression <action> [options]

actions:
  list                       suppressed addresses with reason, time, source and origin relay
  add ADDRESS...             suppress addresses (reason "operator"); --note says why
  remove ADDRESS...          take addresses off the list, so mail to them is sent again

options:
  --domain DOMAIN            list: only addresses of this domain
  --address ADDRESS          list: only this address
  --limit N                  list: how many entries to show (default 100)
  --note TEXT                add: why, kept with each entry
  --admin URL                admin API (default $VMTA_ADMIN_URL or ${DEFAULT_ADMIN_URL}; the scheme may be left out)
  --token-file FILE          file holding the admin bearer token, the full one or (list) the
                             read-only one (default $VMTA_ADMIN_TOKEN, or the token \`vmta local\`
                             made for that admin port, found by itself)
  -o json, --json            print the API's JSON answer

Changes made on one relay are sent to the other pods of its pool.

${EXIT_CODES_HELP}`;

interface ListedEntry {
  address: string;
  reason: string;
  source: string;
  addedAt: string;
  status?: string;
  detail?: string;
  origin: string;
}

interface Listing {
  mode: 'refuse' | 'bounce' | null;
  total: number;
  entries: ListedEntry[];
}

interface SuppressionOptions {
  action: 'list' | 'add' | 'remove';
  addresses: string[];
  domain?: string;
  address?: string;
  limit: number;
  note?: string;
  json: boolean;
  admin: string;
  tokenFile?: string;
}

function parseSuppressionOptions(argv: string[]): SuppressionOptions | undefined {
  const { values, positionals, help, json, admin, tokenFile } = parseAdminCommand('suppression', argv, {
    domain: { type: 'string' },
    address: { type: 'string' },
    limit: { type: 'string' },
    note: { type: 'string' },
  });
  if (help) return undefined;
  const [action, ...addresses] = positionals;
  if (action === undefined) throw new CliError('usage', 'which action? vmta suppression list|add|remove (vmta suppression --help)');
  if (action !== 'list' && action !== 'add' && action !== 'remove') throw new CliError('usage', `unknown action "${action}"; the actions are list, add, remove`);
  if (action === 'list' && addresses.length > 0) throw new CliError('usage', `unexpected argument "${addresses[0]}"; list takes --address ADDRESS or --domain DOMAIN`);
  if (action !== 'list' && addresses.length === 0) throw new CliError('usage', `${action} needs one or more addresses: vmta suppression ${action} user@example.com`);
  if (action !== 'list' && (values.domain !== undefined || values.address !== undefined || values.limit !== undefined)) throw new CliError('usage', `--domain, --address and --limit are for list, not ${action}`);
  if (action !== 'add' && values.note !== undefined) throw new CliError('usage', '--note is for add');
  const limit = Number(values.limit ?? 100);
  if (!Number.isInteger(limit) || limit < 0 || limit > 10_000) throw new CliError('usage', `--limit: a whole number from 0 to 10000 (got "${values.limit}")`);
  return {
    action,
    addresses,
    domain: values.domain,
    address: values.address,
    limit,
    note: values.note,
    json,
    admin,
    tokenFile,
  };
}

function formatListing(listing: Listing): string {
  const mode = listing.mode === null ? 'not enforced (the pool has no spec.suppression)' : listing.mode === 'refuse' ? 'refused at RCPT TO' : 'accepted and bounced at once';
  if (listing.total === 0) return `no suppressed addresses; mode: ${mode}`;
  const rows = listing.entries.map((entry) => [entry.address, entry.reason, entry.status ?? '-', entry.addedAt, entry.source, entry.origin, entry.detail ?? '-']);
  const header = ['ADDRESS', 'REASON', 'STATUS', 'ADDED', 'SOURCE', 'ORIGIN', 'DETAIL'];
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  const line = (cells: string[]) => cells.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd();
  const shown = listing.entries.length < listing.total ? `${listing.entries.length} of ${listing.total} suppressed addresses (--limit N shows more)` : `${listing.total} suppressed address(es)`;
  return [line(header), ...rows.map(line), '', `${shown}; mode: ${mode}`].join('\n');
}

export async function runSuppressionCommand(argv: string[]): Promise<void> {
  const options = parseSuppressionOptions(argv);
  if (!options) {
    console.log(SUPPRESSION_USAGE);
    return;
  }
  const base = adminBaseUrl(options.admin);
  const print = (answer: unknown, text: () => string) => console.log(options.json ? JSON.stringify(answer, null, 2) : text());
  const token = await adminToken(options.tokenFile, base);
  if (options.action === 'list') {
    const query = new URLSearchParams({ limit: String(options.limit), ...(options.domain ? { domain: options.domain } : {}), ...(options.address ? { address: options.address } : {}) });
    const listing = (await callAdmin(base, { path: `/api/v1/suppressions?${query}`, token })) as Listing;
    print(listing, () => formatListing(listing));
    return;
  }
  const body = { addresses: options.addresses, ...(options.note ? { note: options.note } : {}) };
  const answer = (await callAdmin(base, { method: 'POST', path: `/api/v1/suppressions/${options.action}`, body, token })) as { added?: string[]; alreadySuppressed?: string[]; removed?: string[]; notSuppressed?: string[] };
  if (options.action === 'add') {
    print(answer, () => [`suppressed ${answer.added?.length ?? 0} address(es)${answer.added?.length ? `: ${answer.added.join(', ')}` : ''}`, ...(answer.alreadySuppressed?.length ? [`already suppressed: ${answer.alreadySuppressed.join(', ')}`] : [])].join('\n'));
    return;
  }
  const removed = answer.removed ?? [];
  if (removed.length === 0) {
    if (options.json) print(answer, () => '');
    throw new CliError('notFound', `none of ${options.addresses.join(', ')} is on the suppression list (vmta suppression list shows it)`);
  }
  print(answer, () => [`removed ${removed.length} address(es) from the suppression list: ${removed.join(', ')}`, ...(answer.notSuppressed?.length ? [`not on the list: ${answer.notSuppressed.join(', ')}`] : [])].join('\n'));
}
