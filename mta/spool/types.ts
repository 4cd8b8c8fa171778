// The spool's contract with the rest of the relay: what an accepted message looks like on
// disk (envelope + per-recipient state), and the operations inbound (store) and delivery
// (read, record results, complete) rely on. Implemented by mta/spool/spool.ts (FileSpool).
import type { Readable } from 'node:stream';
import type { DsnEnvelope, DsnRecipient } from '../delivery/dsn-request.ts';

/** Sortable, unique, file-name-safe id, returned in the 250 reply after DATA. */
export type QueueId = string;

export type RecipientStatus = 'pending' | 'delivered' | 'bounced';

/** `notify` and `orcpt`: the recipient's DSN parameters (RFC 3461), omitted when the client gave none. */
export interface RecipientState extends DsnRecipient {
  /** Address as given in RCPT TO (normalised: domain lower-cased, no trailing dot). */
  address: string;
  /** Lower-cased ASCII (punycode) domain of the address. */
  domain: string;
  status: RecipientStatus;
  /** Delivery attempts made so far. */
  attempts: number;
  /**
   * Pending: unix ms of the next attempt (0 = as soon as possible). Delivered or bounced: when its
   * final accounting record was made (accounting-recovery.ts), 0 when none was (handed over to a
   * peer, suppressed at acceptance, or recorded by another pod).
   */
  nextAttemptAt: number;
  /** Last reply or error text, for queue inspection and DSNs. */
  lastResult?: string;
}

/** AUTH, an allowed network of the relay policy, or a relay domain/address of every recipient. */
export const RELAY_GRANTS = ['auth', 'network', 'relay-recipient'] as const;
export type RelayGrant = (typeof RELAY_GRANTS)[number];

export interface Envelope {
  /** '' for the null sender <>. */
  mailFrom: string;
  recipients: RecipientState[];
  /** VirtualMTA chosen by routing at accept time. */
  virtualMta: string;
  /** Unix ms when the 250 was given. */
  receivedAt: number;
  listener: string;
  clientAddress: string;
  /** Authenticated user, if any. */
  user?: string;
  /** How relaying was granted (accounting); omitted in messages spooled before it was recorded. */
  relayGrant?: RelayGrant;
  /** EHLO/HELO name of the submitting client (accounting `srcMta`). */
  heloName?: string;
  /** Job or campaign id from the job header (X-Job), which was taken out of the message. */
  jobId?: string;
  /** Byte size of the stored message (headers + body, CRLF line ends). */
  size: number;
  /** Declared BODY=8BITMIME / SMTPUTF8 on MAIL FROM. */
  eightBitMime: boolean;
  smtpUtf8: boolean;
  /** RET and ENVID of MAIL FROM (RFC 3461); omitted when the client gave neither. */
  dsn?: DsnEnvelope;
  /** Times the message was handed from a draining relay to a peer (mta/drain/); omitted = never. */
  handovers?: number;
}

export interface SpooledMessage {
  id: QueueId;
  envelope: Envelope;
}

export interface RecipientResult {
  status: RecipientStatus;
  nextAttemptAt: number;
  lastResult?: string;
  /** Attempts made so far once this result is recorded; omitted = one more than before (the result of one delivery attempt). */
  attempts?: number;
}

export interface Spool {
  /** A fresh queue id, for a caller that must name the message (Received header) before storing it. */
  allocateId(): QueueId;
  /**
   * Write message and envelope durably (file + directory fsynced, possibly shared by group commit); resolves only then.
   * The message may be given as several buffers (e.g. new headers + the untouched body), written in order without
   * being joined. `id` is one from allocateId(); a new one is allocated when omitted.
   */
  store(envelope: Omit<Envelope, 'size'>, message: Buffer | readonly Buffer[], id?: QueueId): Promise<SpooledMessage>;
  /** The stored message bytes, streamed so a large body is never held whole by the scheduler. */
  readMessage(id: QueueId): Readable;
  /** Durably record one recipient's outcome; survives a crash so nothing is delivered twice. */
  recordRecipientResults(id: QueueId, results: ReadonlyMap<number, RecipientResult>): Promise<void>;
  /** Remove a message whose recipients are all final. */
  remove(id: QueueId): Promise<void>;
  /**
   * Why no delivery attempt should start now: the disk is so full that its result might not be
   * recorded (mta/spool/disk-space.ts). Undefined when attempts may start, or for a spool that does not watch its disk.
   */
  deliveryHold?(): string | undefined;
  /** Called each time a delivery hold ends. */
  onDeliveryResume?(listener: () => void): void;
  /** Every message still in the spool, with its latest recipient state (startup recovery). Envelopes only, no bodies. */
  scan(): AsyncIterable<SpooledMessage>;
  close(): Promise<void>;
}
