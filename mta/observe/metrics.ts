// The relay's Prometheus metrics (prom-client): one registry per relay instance so several
// relays can live in one test process. Names follow Prometheus conventions with the `vmta_`
// prefix; every label value comes from a bounded set (listener and VirtualMTA names from the
// config, fixed enums) — never a raw address or recipient domain.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Why a session, command or message was refused: the bounded values of the `reason` label. */
export const REJECTION_REASONS = [
  'relay_denied',
  'auth_required',
  'sender_not_allowed',
  'tls_required',
  'auth_rate_limited',
  'message_too_large',
  'too_many_recipients',
  'too_many_connections',
  'too_many_connections_per_client',
  'too_many_errors',
  'smuggling',
  'proxy_untrusted',
  'proxy_invalid',
  'timeout',
  'syntax',
  'spool_failure',
  // Free space on the spool below spool.minFreeBytes: 452 at MAIL FROM (mta/spool/disk-space.ts).
  'insufficient_storage',
  // Wire hygiene and protocol strictness (mta/inbound/line-faults.ts, mail-parameters.ts).
  'bad_command',
  'line_too_long',
  'unsupported_parameter',
  'bad_sequence',
  'too_slow',
  // A recipient on the pool's suppression list (mta/suppression/), in mode refuse.
  'suppressed',
] as const;
export type RejectionReason = (typeof REJECTION_REASONS)[number];

export class RelayMetrics {
  readonly registry = new Registry();

  readonly inboundConnectionsActive = new Gauge({
    name: 'vmta_inbound_connections_active',
    help: 'Open inbound SMTP sessions.',
    labelNames: ['listener'] as const,
    registers: [this.registry],
  });
  /** Counted when a session ends, so STARTTLS upgrades report the version they reached; connections refused before a session are rejections only. */
  readonly inboundConnections = new Counter({
    name: 'vmta_inbound_connections_total',
    help: 'Inbound SMTP sessions by listener, TLS mode of the listener and TLS version negotiated ("none" when plain).',
    labelNames: ['listener', 'tls_mode', 'tls_version'] as const,
    registers: [this.registry],
  });
  readonly authAttempts = new Counter({
    name: 'vmta_inbound_auth_total',
    help: 'AUTH attempts by listener, mechanism and result (success, failure, rate_limited).',
    labelNames: ['listener', 'mechanism', 'result'] as const,
    registers: [this.registry],
  });
  readonly rejections = new Counter({
    name: 'vmta_inbound_rejections_total',
    help: 'Refused connections, commands and messages by listener and reason.',
    labelNames: ['listener', 'reason'] as const,
    registers: [this.registry],
  });
  // Implicit-TLS and STARTTLS handshakes that never completed (mta/inbound/tls-handshake.ts,
  // smtp-connection.ts): not counted in vmta_inbound_connections_total, whose TLS share they
  // would otherwise lower as tls_version="none".
  readonly tlsHandshakeFailures = new Counter({
    name: 'vmta_inbound_tls_handshake_failures_total',
    help: 'TLS handshakes (implicit or STARTTLS) that failed on inbound listeners, by reason (timeout, closed, error).',
    labelNames: ['listener', 'tls_mode', 'reason'] as const,
    registers: [this.registry],
  });
  readonly messagesReceived = new Counter({
    name: 'vmta_inbound_messages_total',
    help: 'Messages accepted (answered 250 after DATA) by listener.',
    labelNames: ['listener'] as const,
    registers: [this.registry],
  });
  readonly bytesReceived = new Counter({
    name: 'vmta_inbound_bytes_total',
    help: 'Bytes of accepted messages by listener.',
    labelNames: ['listener'] as const,
    registers: [this.registry],
  });
  readonly spoolWriteSeconds = new Histogram({
    name: 'vmta_spool_write_seconds',
    help: 'Time from end of DATA to the message and envelope being on stable storage.',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });
  readonly spoolFsyncs = new Counter({
    name: 'vmta_spool_fsyncs_total',
    help: 'Device flushes made by the spool (O_DSYNC batch writes, journal fdatasyncs, directory fsyncs); shared by group commit.',
    registers: [this.registry],
  });
  readonly spoolMessages = new Gauge({
    name: 'vmta_spool_messages',
    help: 'Messages in the spool: stored and not yet removed (delivered, bounced or deleted).',
    registers: [this.registry],
  });
  // Disk space and recovery of the spool (mta/spool/disk-space.ts, mta/spool/recovery-progress.ts).
  readonly spoolFreeBytes = new Gauge({
    name: 'vmta_spool_free_bytes',
    help: 'Bytes free for the relay on the spool\'s file system (statfs, available to unprivileged users); below spool.minFreeBytes MAIL FROM is answered 452.',
    registers: [this.registry],
  });
  readonly spoolReserveBytes = new Gauge({
    name: 'vmta_spool_reserve_bytes',
    help: 'Bytes held in the spool\'s reserve file, released to record delivery results when the disk is full (spool.reserveBytes when whole).',
    registers: [this.registry],
  });
  readonly spoolRecovering = new Gauge({
    name: 'vmta_spool_recovering',
    help: '1 while the relay is recovering its spool after a start (indexing, then queueing every message for delivery), else 0.',
    registers: [this.registry],
  });
  readonly spoolRecoveryFound = new Gauge({
    name: 'vmta_spool_recovery_found_messages',
    help: 'Messages found in the spool by the recovery after the last start (grows while it indexes).',
    registers: [this.registry],
  });
  readonly spoolRecoveryQueued = new Gauge({
    name: 'vmta_spool_recovery_queued_messages',
    help: 'Messages the recovery after the last start has queued for delivery so far; equal to the found count once it is done.',
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({
    name: 'vmta_queue_depth',
    help: 'Messages in the spool by VirtualMTA and state (ready, scheduled, paused).',
    labelNames: ['virtual_mta', 'state'] as const,
    registers: [this.registry],
  });
  readonly configReloads = new Counter({
    name: 'vmta_config_reloads_total',
    help: 'Runtime config loads by result (success, failure).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly configLastReloadSuccessful = new Gauge({
    name: 'vmta_config_last_reload_successful',
    help: '1 when the last attempt to load the runtime config succeeded, 0 when it was refused.',
    registers: [this.registry],
  });
  readonly configLastReloadSuccessTimestamp = new Gauge({
    name: 'vmta_config_last_reload_success_timestamp_seconds',
    help: 'Unix time of the last successful runtime config load.',
    registers: [this.registry],
  });
  readonly configInfo = new Gauge({
    name: 'vmta_config_info',
    help: 'Always 1; the hash label is the sha256 of the runtime config file in use.',
    labelNames: ['hash'] as const,
    registers: [this.registry],
  });
  readonly certificateExpiry = new Gauge({
    name: 'vmta_listener_certificate_expiry_timestamp_seconds',
    help: 'Unix time at which a listener certificate expires.',
    labelNames: ['listener', 'server_name'] as const,
    registers: [this.registry],
  });

  // DKIM signing (mta/signing/dkim-signer.ts). `match` is how the From domain found its key, never the domain itself.
  readonly dkimSignatures = new Counter({
    name: 'vmta_dkim_signatures_total',
    help: 'DKIM signatures added, by how the From domain matched a key (direct, organizational) and algorithm (rsa-sha256, ed25519-sha256).',
    labelNames: ['match', 'algorithm'] as const,
    registers: [this.registry],
  });
  readonly dkimUnsigned = new Counter({
    name: 'vmta_dkim_unsigned_messages_total',
    help: 'Accepted messages sent without a DKIM signature, by reason (no_key, no_from_domain, from_not_allowed, signing_failed).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  constructor(options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }
}
