// What a client asked for with DSN (RFC 3461) and what follows from it: RET and ENVID of the
// message, NOTIFY and ORCPT of each recipient, as they are kept on the spool record (decoded
// from xtext, as smtp-server hands them over; encoded again for a next hop); which notices a recipient wants (none with NEVER;
// FAILURE and DELAY when NOTIFY was not given, RFC 3461 §4.1); the MAIL FROM and RCPT TO
// parameters for a next hop that advertises DSN, xtext-encoded.

export type NotifyCondition = 'SUCCESS' | 'FAILURE' | 'DELAY';
/** NOTIFY as given: ['NEVER'] or one or more conditions. */
export type NotifyValue = ['NEVER'] | NotifyCondition[];

/** The message's DSN parameters (MAIL FROM). */
export interface DsnEnvelope {
  ret?: 'FULL' | 'HDRS';
  /** ENVID, decoded from xtext. */
  envid?: string;
}

/** One recipient's DSN parameters (RCPT TO). */
export interface DsnRecipient {
  notify?: NotifyValue;
  /** ORCPT as "addr-type;address", the address decoded from xtext. */
  orcpt?: string;
}

/** The DSN parameters smtp-server parsed for MAIL FROM, as the spool keeps them (nothing when none was given). */
export function dsnEnvelope(parsed: { ret?: string | null; envid?: string | null } | undefined): DsnEnvelope | undefined {
  const ret = parsed?.ret?.toUpperCase();
  const dsn: DsnEnvelope = { ...(ret === 'FULL' || ret === 'HDRS' ? { ret } : {}), ...(parsed?.envid ? { envid: parsed.envid } : {}) };
  return Object.keys(dsn).length > 0 ? dsn : undefined;
}

/** The DSN parameters smtp-server parsed for one RCPT TO, as the spool keeps them. */
export function dsnRecipient(parsed: { notify?: string[]; orcpt?: string } | undefined): DsnRecipient {
  const notify = parsed?.notify?.map((value) => value.toUpperCase());
  return {
    ...(notify && notify.length > 0 ? { notify: (notify.includes('NEVER') ? ['NEVER'] : [...new Set(notify)]) as NotifyValue } : {}),
    ...(parsed?.orcpt ? { orcpt: parsed.orcpt } : {}),
  };
}

/** Whether the sender asked to hear of `condition` for this recipient. Without NOTIFY: failures and delays (RFC 3461 §4.1). */
export function wantsNotice(recipient: DsnRecipient, condition: NotifyCondition): boolean {
  if (!recipient.notify) return condition !== 'SUCCESS';
  return (recipient.notify as string[]).includes(condition);
}

/** MAIL FROM parameters for a next hop that advertises DSN. */
export function mailDsnParameters(dsn: DsnEnvelope | undefined): string[] {
  return [...(dsn?.ret ? [`RET=${dsn.ret}`] : []), ...(dsn?.envid ? [`ENVID=${dsn.envid}`] : [])];
}

/**
 * RCPT TO parameters for a next hop that advertises DSN (RFC 3461 §5.2.1): NOTIFY as given, and
 * ORCPT as given or, when the client gave none, the recipient address as received (rfc822).
 */
export function rcptDsnParameters(recipient: DsnRecipient & { address: string }): string[] {
  const original = recipient.orcpt ? originalRecipient(recipient.orcpt) : { type: 'rfc822', address: recipient.address };
  return [...(recipient.notify ? [`NOTIFY=${recipient.notify.join(',')}`] : []), `ORCPT=${original.type};${encodeXtext(original.address)}`];
}

/** xtext of a string: "+", "=", controls, space and non-ASCII octets as +XX. */
export function encodeXtext(text: string): string {
  return [...Buffer.from(text, 'utf8')].map((octet) => (octet > 0x20 && octet < 0x7f && octet !== 0x2b && octet !== 0x3d ? String.fromCharCode(octet) : `+${octet.toString(16).toUpperCase().padStart(2, '0')}`)).join('');
}

/** ORCPT split into its address type and address, for a next hop and the DSN's Original-Recipient field. */
export function originalRecipient(orcpt: string): { type: string; address: string } {
  const separator = orcpt.indexOf(';');
  return { type: orcpt.slice(0, separator), address: orcpt.slice(separator + 1) };
}
