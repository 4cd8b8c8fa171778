// `vmta queue`: queue inspection and control for operators, on top of the relay's admin HTTP
// API (mta/admin/queue-api.ts). Prints tables and sentences for people, or the API's JSON with
// -o json. Errors are CliErrors: one line, and the exit code of their kind (cli/exit-codes.ts).
import { adminBaseUrl, adminToken, callAdmin, DEFAULT_ADMIN_URL, parseAdminCommand } from './admin-client.ts';
import { CliError, EXIT_CODES_HELP } from './exit-codes.ts';
import { QUEUE_ID_PATTERN, QueueSelectorBody } from '../mta/admin/queue-api.ts';
import { formatAction, formatMessage, formatQueueList, type MessageListing, type QueueListing, type Selection } from './queue-format.ts';
import type { MessageState } from '../mta/delivery/delivery-engine.ts';

export const QUEUE_USAGE = `usage: vmta queue <action> [options]

actions:
  list                       queues with message counts, next retry, pause and backoff state,
                             and the queue ids of waiting messages
  show QUEUE_ID              one message's recipients and their state
  pause | resume             a VirtualMTA (--vmta), a domain (--domain), one queue (both) or all
  retry                      retry scheduled messages now (flush)
  bounce | delete            bounce (with DSNs) or drop the selected queues' messages

options:
  --vmta NAME                select a VirtualMTA
  --domain DOMAIN            select a destination domain
  --all                      confirm bounce/delete of every queue when nothing is selected
  --limit N                  list: how many queue ids to show (default 20)
  --admin URL                admin API (default $VMTA_ADMIN_URL or ${DEFAULT_ADMIN_URL}; the scheme may be left out)
  --token-file FILE          file holding the admin bearer token, the full one or (list, show) the
                             read-only one (default $VMTA_ADMIN_TOKEN, or the token \`vmta local\`
                             made for that admin port, found by itself)
  -o json, --json            print the API's JSON answer

${EXIT_CODES_HELP}`;

const CONTROL_ACTIONS = new Set(['pause', 'resume', 'retry', 'bounce', 'delete']);

interface QueueOptions {
  action: string;
  queueId?: string;
  selection: Selection;
  all: boolean;
  limit: number;
  json: boolean;
  admin: string;
  tokenFile?: string;
}

function parseQueueOptions(argv: string[]): QueueOptions | undefined {
  const { values, positionals, help, json, admin, tokenFile } = parseAdminCommand('queue', argv, {
    vmta: { type: 'string' },
    domain: { type: 'string' },
    all: { type: 'boolean', default: false },
    limit: { type: 'string' },
  });
  const [action, queueId, ...extra] = positionals;
  if (help) return undefined;
  if (action === undefined) throw new CliError('usage', 'which action? vmta queue list|show|pause|resume|retry|bounce|delete (vmta queue --help)');
  if (action !== 'list' && action !== 'show' && !CONTROL_ACTIONS.has(action)) throw new CliError('usage', `unknown action "${action}"; the actions are list, show, pause, resume, retry, bounce, delete`);
  if (action === 'show' && queueId === undefined) throw new CliError('usage', 'show needs a queue id: vmta queue show QUEUE_ID (vmta queue list shows them)');
  if ((action !== 'show' && queueId !== undefined) || extra.length > 0) throw new CliError('usage', `unexpected argument "${action === 'show' ? extra[0] : queueId}"; vmta queue --help`);
  if (queueId !== undefined && !QUEUE_ID_PATTERN.test(queueId)) throw new CliError('usage', `"${queueId}" is not a queue id (letters, digits, ".", "_" and "-", at most 128); vmta queue list shows them`);
  const selection: Selection = { ...(values.vmta ? { virtualMta: values.vmta } : {}), ...(values.domain ? { domain: values.domain } : {}) };
  checkSelection(selection);
  if ((action === 'bounce' || action === 'delete') && !selection.virtualMta && !selection.domain && !values.all) {
    throw new CliError('usage', `${action} needs --vmta NAME and/or --domain DOMAIN, or --all to ${action} every queue`);
  }
  const limit = Number(values.limit ?? 20);
  if (!Number.isInteger(limit) || limit < 0 || limit > 1000) throw new CliError('usage', `--limit: a whole number from 0 to 1000 (got "${values.limit}")`);
  return {
    action,
    queueId,
    selection,
    all: values.all,
    limit,
    json,
    admin,
    tokenFile,
  };
}

/** The flag a field of the API's selector comes from, so errors name what the user typed. */
const FLAG_OF_FIELD: Record<string, string> = { virtualMta: '--vmta', domain: '--domain', all: '--all' };

/** The admin API's own bounds, checked here so that a refusal names the flag, not the API field. */
function checkSelection(selection: Selection): void {
  const parsed = QueueSelectorBody.safeParse(selection);
  if (parsed.success) return;
  const issue = parsed.error.issues[0]!;
  const field = String(issue.path[0] ?? '');
  const value = (selection as Record<string, unknown>)[field];
  const shown = typeof value === 'string' && value.length > 40 ? `${value.slice(0, 40)}... (${value.length} characters)` : String(value);
  throw new CliError('usage', `${FLAG_OF_FIELD[field] ?? field} "${shown}": ${issue.message.replace(/^Too big: expected string to have /, 'at most ').replace(/<=(\d+) characters/, '$1 characters')}`);
}

export async function runQueueCommand(argv: string[]): Promise<void> {
  const options = parseQueueOptions(argv);
  if (!options) {
    console.log(QUEUE_USAGE);
    return;
  }
  const base = adminBaseUrl(options.admin);
  const { action, selection, json } = options;
  const print = (answer: unknown, text: () => string) => console.log(json ? JSON.stringify(answer, null, 2) : text());
  // Reads need a token too (the read-only one will do): queues and messages name recipients.
  const token = await adminToken(options.tokenFile, base);
  if (action === 'list') {
    const query = new URLSearchParams({ ...selection, limit: String(options.limit) });
    const all = (await callAdmin(base, { path: '/api/v1/queues', token })) as QueueListing;
    const listing = { ...all, queues: all.queues.filter((queue) => (!selection.virtualMta || queue.virtualMta === selection.virtualMta) && (!selection.domain || queue.domain === selection.domain.toLowerCase())) };
    const waiting = (await callAdmin(base, { path: `/api/v1/messages?${query}`, token })) as MessageListing;
    print({ ...listing, waiting }, () => formatQueueList(listing, waiting));
  } else if (action === 'show') {
    const message = (await callAdmin(base, { path: `/api/v1/messages/${encodeURIComponent(options.queueId!)}`, token })) as MessageState;
    print(message, () => formatMessage(message));
  } else {
    const answer = (await callAdmin(base, { method: 'POST', path: `/api/v1/queues/${action}`, body: { ...selection, ...(options.all ? { all: true } : {}) }, token })) as { queues?: number; messages?: number };
    print(answer, () => formatAction(action, selection, answer));
  }
}
