// What an SMTP reply (or a failure to get one) means for a recipient: 2xx delivered, 4xx and
// transport failures deferred, 5xx bounced; the RFC 3463 status to report; and the
// PowerMTA-style bounce category used in accounting, metrics and DSNs.

export type DeliveryResult = 'delivered' | 'deferred' | 'bounced';

export const BOUNCE_CATEGORIES = [
  'bad-mailbox',
  'bad-domain',
  'policy-related',
  'spam-related',
  'quota',
  'message-expired',
  'routing-errors',
  'other',
] as const;
export type BounceCategory = (typeof BOUNCE_CATEGORIES)[number];

export interface Classification {
  result: DeliveryResult;
  /** RFC 3463 enhanced status "c.s.d". */
  status: string;
  /** Set for deferred and bounced results. */
  category?: BounceCategory;
  /** The reply or error text, for accounting and the DSN's Diagnostic-Code. */
  diagnostic: string;
}

/** Failures that never produced a reply from the peer. */
export type TransportFailure =
  | { kind: 'connection'; message: string }
  | { kind: 'tls'; message: string }
  | { kind: 'auth'; message: string }
  | { kind: 'dns-temporary'; message: string }
  | { kind: 'no-such-domain'; message: string }
  | { kind: 'null-mx'; message: string }
  | { kind: 'utf8-unsupported'; message: string }
  | { kind: 'expired'; message: string };

const ENHANCED_STATUS = /^[245]\.\d{1,3}\.\d{1,3}\b/;

export function classifyReply(code: number, text: string): Classification {
  const body = text.replace(/^\d{3}[ -]/, '').trim();
  const enhanced = ENHANCED_STATUS.exec(body)?.[0];
  const diagnostic = `${code} ${body}`;
  if (code >= 200 && code < 300) return { result: 'delivered', status: enhanced ?? '2.0.0', diagnostic };
  const result: DeliveryResult = code >= 500 && code < 600 ? 'bounced' : 'deferred';
  const klass = result === 'bounced' ? '5' : '4';
  // A status class that contradicts the reply code is ignored: the reply code decides.
  const status = enhanced && enhanced[0] === klass ? enhanced : `${klass}.0.0`;
  return { result, status, category: bounceCategory(status, body), diagnostic };
}

export function classifyFailure(failure: TransportFailure): Classification {
  switch (failure.kind) {
    case 'connection':
      return { result: 'deferred', status: '4.4.1', category: 'routing-errors', diagnostic: failure.message };
    case 'tls':
      return { result: 'deferred', status: '4.7.5', category: 'policy-related', diagnostic: failure.message };
    // Refused credentials are the sender's configuration, not the message: deferred (fixed by the Secret), bounced at bounceAfter.
    case 'auth':
      return { result: 'deferred', status: '4.7.8', category: 'policy-related', diagnostic: failure.message };
    case 'dns-temporary':
      return { result: 'deferred', status: '4.4.3', category: 'routing-errors', diagnostic: failure.message };
    case 'no-such-domain':
      return { result: 'bounced', status: '5.1.2', category: 'bad-domain', diagnostic: failure.message };
    case 'null-mx':
      return { result: 'bounced', status: '5.1.10', category: 'bad-domain', diagnostic: failure.message };
    case 'utf8-unsupported':
      return { result: 'bounced', status: '5.6.7', category: 'other', diagnostic: failure.message };
    case 'expired':
      return { result: 'bounced', status: '4.4.7', category: 'message-expired', diagnostic: failure.message };
  }
}

const TEXT_CATEGORIES: [RegExp, BounceCategory][] = [
  [/\b(spam|blacklist|blocklist|block ?list|listed|reputation|spamhaus|junk)\b/i, 'spam-related'],
  [/\b(quota|mailbox (is )?full|over ?quota|insufficient (system )?storage)\b/i, 'quota'],
  [/\b(user unknown|unknown user|no such (user|mailbox|recipient)|mailbox (unavailable|not found)|does not exist|invalid recipient|recipient rejected|address rejected)\b/i, 'bad-mailbox'],
  [/\b(domain not found|no such domain|host not found|unrouteable|unroutable)\b/i, 'bad-domain'],
  [/\b(policy|not allowed|denied|rejected for policy|tls required|authentication required)\b/i, 'policy-related'],
];

/** PowerMTA-style category from the enhanced status, refined by the reply text. */
export function bounceCategory(status: string, text: string): BounceCategory {
  for (const [pattern, category] of TEXT_CATEGORIES) if (pattern.test(text)) return category;
  const [, subject, detail] = status.split('.');
  const code = `${subject}.${detail}`;
  if (code === '1.1' || code === '1.6' || code === '2.1') return 'bad-mailbox';
  if (code === '1.2' || code === '1.10' || code === '4.4') return 'bad-domain';
  if (code === '2.2' || code === '3.1') return 'quota';
  if (code === '4.7') return 'message-expired';
  if (subject === '4') return 'routing-errors';
  if (subject === '7') return 'policy-related';
  return 'other';
}
