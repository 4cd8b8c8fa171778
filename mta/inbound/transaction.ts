// What the inbound side hands over once DATA is complete: the checked envelope and the raw
// message. The acceptor (mta/routing/acceptance.ts) adds trace headers, routes to a
// VirtualMTA and stores it in the spool; only when it resolves does the client get 250.
import type { RelayPolicyConfig } from '../config/schema.ts';
import type { DsnEnvelope, DsnRecipient } from '../delivery/dsn-request.ts';
import type { RelayGrant } from '../spool/types.ts';

/** `notify` and `orcpt`: DSN parameters of RCPT TO (RFC 3461). */
export interface AcceptedRecipient extends DsnRecipient {
  /** Normalised address (domain lower-cased ASCII, no trailing dot). */
  address: string;
  domain: string;
}

export interface AcceptedTransaction {
  listener: string;
  /** Real client address (after a trusted PROXY header). */
  clientAddress: string;
  clientHostname?: string;
  /** Name the client gave in EHLO/HELO. */
  heloName: string;
  /** ESMTP when EHLO was used; ESMTPS/ESMTPSA etc. per RFC 3848 for the Received header. */
  protocol: 'SMTP' | 'ESMTP' | 'ESMTPS' | 'ESMTPA' | 'ESMTPSA';
  /** Negotiated TLS version and cipher, if the session is encrypted. */
  tls?: { version: string; cipher: string };
  user?: string;
  /** How relaying was granted to this session (for accounting); omitted for mail the relay makes itself (TLS reports). */
  relayGrant?: RelayGrant;
  /** '' for the null sender. */
  mailFrom: string;
  recipients: AcceptedRecipient[];
  /** RET and ENVID of MAIL FROM (RFC 3461). */
  dsn?: DsnEnvelope;
  eightBitMime: boolean;
  smtpUtf8: boolean;
  /** The relay policy the listener enforces (routing rules live there). */
  policy: RelayPolicyConfig;
}

/** Stores the message durably; resolves with the queue id for the 250 reply, rejects to answer 451. */
export type MessageAcceptor = (transaction: AcceptedTransaction, message: Buffer) => Promise<{ queueId: string }>;
