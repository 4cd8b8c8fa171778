// The Received: trace header the relay prepends to every accepted message (RFC 5321 §4.4,
// RFC 5322 §3.6.7), in the form Postfix uses so existing tooling parses it:
//   Received: from <helo> (<reverse DNS name> [<address>])
//           (using <TLS version> with cipher <cipher>)
//           by <our hostname> with <protocol> id <queue id>
//           for <recipient>; <date>
// "for" names the recipient only when there is exactly one (more would disclose Bcc lists).
// Every value that came from the client is reduced to printable ASCII without comment
// delimiters, so no client can end the header early or smuggle a field in.
import net from 'node:net';

export interface ReceivedTrace {
  heloName: string;
  clientHostname?: string;
  clientAddress: string;
  /** Our host name (the relay config's `hostname`). */
  hostname: string;
  protocol: string;
  queueId: string;
  tls?: { version: string; cipher: string };
  recipients: readonly string[];
  date: Date;
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** RFC 5322 date-time in UTC, e.g. "Mon, 23 Nov 2026 14:21:41 +0000". */
export function formatRfc5322Date(date: Date): string {
  const pad = (value: number): string => String(value).padStart(2, '0');
  return `${DAYS[date.getUTCDay()]}, ${date.getUTCDate()} ${MONTHS[date.getUTCMonth()]} ${date.getUTCFullYear()} ${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())} +0000`;
}

/** Printable ASCII only, without "(", ")", "\\", "<", ">" and ";", at most 255 characters. */
function clean(value: string): string {
  return value.replace(/[^\x21-\x7e]|[()\\<>;]/g, '?').slice(0, 255);
}

/** "[192.0.2.1]" or "[IPv6:2001:db8::1]" (RFC 5321 §4.1.3); IPv4-mapped IPv6 is shown as IPv4. */
export function addressLiteral(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const plain = mapped?.[1] ?? address;
  if (net.isIPv4(plain)) return `[${plain}]`;
  if (net.isIPv6(plain)) return `[IPv6:${plain}]`;
  return `[${clean(plain)}]`;
}

export function formatReceivedHeader(trace: ReceivedTrace): Buffer {
  const literal = addressLiteral(trace.clientAddress);
  const helo = clean(trace.heloName) || 'unknown';
  const tcpInfo = trace.clientHostname ? `${clean(trace.clientHostname)} ${literal}` : literal;
  const lines = [`Received: from ${helo} (${tcpInfo})`];
  if (trace.tls) lines.push(`\t(using ${clean(trace.tls.version)} with cipher ${clean(trace.tls.cipher)})`);
  lines.push(`\tby ${trace.hostname} with ${trace.protocol} id ${trace.queueId}`);
  const recipient = trace.recipients.length === 1 ? trace.recipients[0] : undefined;
  const date = formatRfc5322Date(trace.date);
  if (recipient !== undefined) lines.push(`\tfor <${recipient.replace(/[\x00-\x1f\x7f<>]/g, '?')}>; ${date}`);
  else lines[lines.length - 1] += `; ${date}`;
  return Buffer.from(lines.join('\r\n') + '\r\n', 'utf8');
}
