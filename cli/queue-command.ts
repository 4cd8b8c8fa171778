// `vmta queue`: queue inspection and control for operators, on top of the relay's admin HTTP
// API (mta/admin/queue-api.ts). Prints a table for people or JSON with --json.
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';

const USAGE = `usage: vmta queue <action> [options]

actions:
  list                       queues with message counts, next retry, pause and backoff state
  show QUEUE_ID              one message's recipients and their state
  pause | resume             a VirtualMTA (--vmta), a domain (--domain) or one queue (both)
  retry                      retry scheduled messages now (flush)
  bounce | delete            bounce (with DSNs) or drop the selected queues' messages

options:
  --vmta NAME                select a VirtualMTA
  --domain DOMAIN            select a destination domain
  --all                      confirm bounce/delete of every queue when nothing is selected
  --admin URL                admin API base URL (default $VMTA_ADMIN_URL or http://127.0.0.1:8025)
  --token-file FILE          file holding the admin bearer token (default $VMTA_ADMIN_TOKEN)
  --json                     print the API's JSON answer`;

const ACTIONS = new Set(['list', 'show', 'pause', 'resume', 'retry', 'bounce', 'delete']);

interface QueueRow {
  virtualMta: string;
  domain: string;
  messages: number;
  ready: number;
  scheduled: number;
  connections: number;
  paused: boolean;
  backoff: { active: boolean };
  nextRetryAt: string | null;
  lastError: string | null;
}

interface VirtualMtaRow {
  name: string;
  usable: boolean;
  paused: boolean;
  detail: string | null;
}

export async function runQueueCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      vmta: { type: 'string' },
      domain: { type: 'string' },
      all: { type: 'boolean', default: false },
      admin: { type: 'string' },
      'token-file': { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const [action, argument] = positionals;
  if (values.help || action === undefined) {
    console.log(USAGE);
    return;
  }
  if (!ACTIONS.has(action)) return usageError(`unknown action "${action}"`);
  const base = (values.admin ?? process.env.VMTA_ADMIN_URL ?? 'http://127.0.0.1:8025').replace(/\/$/, '');
  const token = values['token-file'] ? (await readFile(values['token-file'], 'utf8')).trim() : process.env.VMTA_ADMIN_TOKEN;
  const headers: Record<string, string> = { accept: 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) };

  let response: Response;
  if (action === 'list') {
    response = await fetch(`${base}/api/v1/queues`, { headers });
  } else if (action === 'show') {
    if (!argument) return usageError('show needs a queue id');
    response = await fetch(`${base}/api/v1/messages/${encodeURIComponent(argument)}`, { headers });
  } else {
    const body = { ...(values.vmta ? { virtualMta: values.vmta } : {}), ...(values.domain ? { domain: values.domain } : {}), ...(values.all ? { all: true } : {}) };
    response = await fetch(`${base}/api/v1/queues/${action}`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  }
  const answer: unknown = await response.json().catch(() => ({ error: `HTTP ${response.status} with a body that is not JSON` }));
  if (!response.ok) {
    const message = typeof answer === 'object' && answer !== null && 'error' in answer ? String(answer.error) : `HTTP ${response.status}`;
    console.error(`vmta queue ${action}: ${message}`);
    process.exitCode = 1;
    return;
  }
  if (values.json || action === 'show') {
    console.log(JSON.stringify(answer, null, 2));
  } else if (action === 'list') {
    console.log(formatQueues(answer as { queues: QueueRow[]; virtualMtas: VirtualMtaRow[] }));
  } else {
    const result = answer as { queues?: number; messages?: number };
    console.log(`${action}: ${result.queues !== undefined ? `${result.queues} queue(s)` : `${result.messages ?? 0} message(s)`}`);
  }
}

function usageError(message: string): void {
  console.error(`vmta queue: ${message}\n\n${USAGE}`);
  process.exitCode = 2;
}

function formatQueues(answer: { queues: QueueRow[]; virtualMtas: VirtualMtaRow[] }): string {
  const header = ['VIRTUAL-MTA', 'DOMAIN', 'MESSAGES', 'READY', 'SCHEDULED', 'CONNS', 'STATE', 'NEXT-RETRY', 'LAST-ERROR'];
  const rows = answer.queues.map((queue) => [
    queue.virtualMta,
    queue.domain,
    String(queue.messages),
    String(queue.ready),
    String(queue.scheduled),
    String(queue.connections),
    queue.paused ? 'paused' : queue.backoff.active ? 'backoff' : 'active',
    queue.nextRetryAt ?? '-',
    (queue.lastError ?? '-').slice(0, 60),
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  const line = (cells: string[]) => cells.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd();
  const problems = answer.virtualMtas.filter((vmta) => !vmta.usable || vmta.paused).map((vmta) => `VirtualMTA ${vmta.name}: ${vmta.usable ? 'paused' : `UNUSABLE — ${vmta.detail ?? ''}`}`);
  return [line(header), ...rows.map(line), ...(problems.length ? ['', ...problems] : [])].join('\n');
}
