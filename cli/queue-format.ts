// What `vmta queue` prints for people: the queue table with the waiting messages' queue ids,
// one message's recipients, and a sentence for each control action. Pure: answers in, text out.
import type { MessageState, QueueSummary, VirtualMtaStatus } from '../mta/delivery/delivery-engine.ts';

export interface QueueListing {
  queues: QueueSummary[];
  virtualMtas: VirtualMtaStatus[];
}

export interface MessageListing {
  total: number;
  messages: MessageState[];
}

export interface Selection {
  virtualMta?: string;
  domain?: string;
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  const line = (cells: string[]) => cells.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd();
  return [line(header), ...rows.map(line)];
}

export function formatQueueList(listing: QueueListing, waiting: MessageListing): string {
  const problems = listing.virtualMtas.filter((vmta) => !vmta.usable || vmta.paused).map((vmta) => `VirtualMTA ${vmta.name}: ${vmta.usable ? 'paused' : `UNUSABLE — ${vmta.detail ?? ''}`}`);
  if (listing.queues.length === 0) return ['no queued mail', ...(problems.length ? ['', ...problems] : [])].join('\n');
  const queues = table(
    ['VIRTUAL-MTA', 'DOMAIN', 'MESSAGES', 'READY', 'SCHEDULED', 'CONNS', 'STATE', 'NEXT-RETRY', 'LAST-ERROR'],
    listing.queues.map((queue) => [
      queue.virtualMta,
      queue.domain,
      String(queue.messages),
      String(queue.ready),
      String(queue.scheduled),
      String(queue.connections),
      queue.paused ? 'paused' : queue.backoff.active ? 'backoff' : 'active',
      queue.nextRetryAt ?? '-',
      // Last column: printed whole, a cut reply hides the reason.
      queue.lastError ?? '-',
    ]),
  );
  const messages = table(
    ['QUEUE-ID', 'VIRTUAL-MTA', 'FROM', 'WAITING-FOR', 'ATTEMPTS', 'NEXT-ATTEMPT'],
    waiting.messages.map((message) => {
      const pending = message.recipients.filter((recipient) => recipient.status === 'pending');
      const next = pending.map((recipient) => recipient.nextAttemptAt).filter((at) => at !== null).sort()[0];
      return [message.id, message.virtualMta, message.mailFrom || '<>', pending.map((recipient) => recipient.address).join(', '), String(Math.max(0, ...pending.map((recipient) => recipient.attempts))), next ?? 'now'];
    }),
  );
  const shown = waiting.messages.length < waiting.total ? `${waiting.messages.length} of ${waiting.total} waiting messages (--limit N shows more)` : `${waiting.total} waiting message(s)`;
  return [...queues, ...(problems.length ? ['', ...problems] : []), '', `${shown}; vmta queue show QUEUE-ID for one:`, ...messages].join('\n');
}

export function formatMessage(message: MessageState): string {
  const facts = [
    ['queue id', message.id],
    ['VirtualMTA', message.virtualMta],
    ['from', message.mailFrom || '<> (a bounce)'],
    ['received', message.receivedAt],
    ['size', `${message.size} bytes`],
  ].map(([name, value]) => `${name!.padEnd(11)} ${value}`);
  const recipients = table(
    ['RECIPIENT', 'STATUS', 'ATTEMPTS', 'NEXT-ATTEMPT', 'LAST-RESULT'],
    message.recipients.map((recipient) => [recipient.address, recipient.status, String(recipient.attempts), recipient.nextAttemptAt ?? '-', recipient.lastResult ?? '-']),
  );
  return [...facts, '', ...recipients].join('\n');
}

function describeSelection(selection: Selection): string {
  if (selection.virtualMta && selection.domain) return `the queue of VirtualMTA ${selection.virtualMta} for ${selection.domain}`;
  if (selection.virtualMta) return `VirtualMTA ${selection.virtualMta}`;
  if (selection.domain) return `domain ${selection.domain} on every VirtualMTA`;
  return 'every queue';
}

function count(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

function selectionFlags(selection: Selection): string {
  return [selection.virtualMta ? `--vmta ${selection.virtualMta}` : '', selection.domain ? `--domain ${selection.domain}` : ''].filter(Boolean).join(' ');
}

/** One sentence for the answer of pause, resume, retry, bounce or delete. */
export function formatAction(action: string, selection: Selection, answer: { queues?: number; messages?: number }): string {
  const target = describeSelection(selection);
  const queues = count(answer.queues ?? 0, 'queue', 'queues');
  const messages = count(answer.messages ?? 0, 'message', 'messages');
  switch (action) {
    case 'pause':
      return `paused ${target} (${answer.queues ? `${queues} with mail now` : 'no mail queued for it now'}); mail queued later waits too, also across restarts, until vmta queue resume ${selectionFlags(selection)}`.trimEnd();
    case 'resume':
      return `resumed ${target} (${answer.queues ? `${queues} with mail` : 'no mail queued for it now'})`;
    case 'retry':
      return `${messages} of ${target} due now`;
    case 'bounce':
      return `bounced ${messages} of ${target} (each sender gets a DSN)`;
    default:
      return `deleted ${messages} of ${target} (no DSNs)`;
  }
}
