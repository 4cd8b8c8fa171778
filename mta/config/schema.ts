// The relay's runtime configuration: the contract between the operator (which renders it into
// a ConfigMap as `relay.yaml`) and the relay (which loads and hot-reloads it). One relay
// process serves one VirtualMTA pool. Durations are PowerMTA-style strings ("10m", "4d") and
// are parsed to milliseconds as the config is read (config-fields.ts), so code inward of the
// loader only sees numbers.
// `RuntimeConfigInput` is what a renderer writes; `RuntimeConfig` is what the relay uses.
import { z } from 'zod';
import { BOUNCE_CATEGORIES } from '../delivery/reply-classification.ts';
import { cidr, domainPattern, duration, filePath, hostname, hostPort, ipAddress, name, port, rate } from './config-fields.ts';
import { checkRelayAddress, checkReplyPattern, checkResolver, refineWith } from './field-checks.ts';
import { BROAD_PROXY_TRUST_MESSAGE, openRelayProblems, overlyBroadIndexes } from './open-relay.ts';
import { WarmupPlan, warmupProblems } from './warmup-plan.ts';

export const RUNTIME_CONFIG_API_VERSION = 'vmta.dev/relay-config/v1';
/** File name of the runtime config inside the mounted config directory. */
export const RUNTIME_CONFIG_FILE = 'relay.yaml';


/** Refuse new mail below 100 MiB free: room for a few maximum-size messages in flight and the journal. */
export const DEFAULT_SPOOL_MIN_FREE_BYTES = 100 * 1024 * 1024;
/** 8 MiB of reserve records the results of some 40,000 deliveries on a full disk. */
export const DEFAULT_SPOOL_RESERVE_BYTES = 8 * 1024 * 1024;

export const TlsSettings = z.strictObject({
  /** none: plain only; starttls: upgrade offered in EHLO; implicit: TLS from the first byte (465). */
  mode: z.enum(['none', 'starttls', 'implicit']).default('none'),
  /** Refuse MAIL and AUTH until the session is encrypted. */
  required: z.boolean().default(false),
  certFile: filePath.optional(),
  keyFile: filePath.optional(),
  /** Further certificates chosen by the client's SNI server name. */
  sni: z.array(z.strictObject({ serverName: hostname, certFile: filePath, keyFile: filePath })).max(64).default([]),
  minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
});

export const AuthMechanism = z.enum(['PLAIN', 'LOGIN', 'CRAM-MD5']);

export const AuthSettings = z.strictObject({
  /** Refuse MAIL FROM until the client has authenticated. */
  required: z.boolean().default(false),
  /** Mechanisms offered; an empty list offers no AUTH at all. CRAM-MD5 is offered only when the users' stored secrets allow it. */
  mechanisms: z.array(AuthMechanism).max(3).default(['PLAIN', 'LOGIN']),
  /** Failed AUTH attempts one client address may make per window before it gets 421 and is disconnected. */
  maxFailures: z.number().int().min(1).max(1000).default(5),
  failureWindow: duration.prefault('5m'),
});

export const ProxyProtocolSettings = z.strictObject({
  enabled: z.boolean().default(false),
  /** Only peers in these CIDRs may send a PROXY header; others are refused. */
  trustedCidrs: z.array(cidr).max(256).default([]),
});

export const ListenerLimits = z.strictObject({
  maxConnections: z.number().int().min(1).max(1_000_000).default(1000),
  maxConnectionsPerClient: z.number().int().min(1).max(100_000).default(50),
  /** Bytes; advertised with SIZE and enforced. */
  maxMessageSize: z.number().int().min(1024).max(2 ** 31 - 1).default(50 * 1024 * 1024),
  maxRecipients: z.number().int().min(1).max(100_000).default(100),
  /** Close a session that sends nothing for this long. */
  idleTimeout: duration.prefault('5m'),
  /** Bound on receiving one command line or the whole DATA section. */
  commandTimeout: duration.prefault('10m'),
  /** Bytes per second a command line or DATA section must keep up from its first byte (Postfix's smtpd_min_data_rate), after `dataRateGrace`. */
  minDataRate: z.number().int().min(1).max(1_000_000_000).default(500),
  /** Time a command line or DATA section gets before `minDataRate` applies: a client dripping bytes is cut off after about this long. */
  dataRateGrace: duration.prefault('30s'),
  /** Protocol errors (bad commands, rejected recipients) before the session is closed with 421. */
  maxErrors: z.number().int().min(1).max(1000).default(10),
  /** Pause before the greeting to catch clients that talk first (useful on port 25, pointless on submission ports). */
  greetingDelay: duration.prefault('0s'),
});

export const Listener = z.strictObject({
  name,
  address: ipAddress.default('0.0.0.0'),
  port,
  /** Name in the greeting banner; defaults to the config's `hostname`. */
  hostname: hostname.optional(),
  tls: TlsSettings.prefault({}),
  auth: AuthSettings.prefault({}),
  /** Name of the entry in `relayPolicies` this listener enforces. */
  relayPolicy: name,
  proxyProtocol: ProxyProtocolSettings.prefault({}),
  limits: ListenerLimits.prefault({}),
});

export const PolicyUsers = z.strictObject({
  /** Directory of a mounted Secret: one file per user, file name = user name, content = password or hash. */
  secretPath: filePath,
  /** Sender domains each user may use in MAIL FROM ("example.com", "*.example.com", "*"). */
  allowedSenderDomains: z.record(z.string().min(1).max(256), z.array(domainPattern).max(256)).prefault({}),
  /** For users with no entry above; empty means such users may send from no domain. */
  defaultAllowedSenderDomains: z.array(domainPattern).max(256).default([]),
});

/** A relay address: an exact address (case-insensitive) or "/regex/flags" (relay-patterns.ts). */
const relayAddress = z.string().min(1).max(512).superRefine(refineWith(checkRelayAddress));

export const RoutingRule = z
  .strictObject({
    senderDomain: domainPattern.optional(),
    user: z.string().min(1).optional(),
    recipientDomain: domainPattern.optional(),
    virtualMta: name,
  })
  .refine((rule) => rule.senderDomain || rule.user || rule.recipientDomain, 'a rule needs senderDomain, user or recipientDomain');

export const Routing = z.strictObject({
  /** Honour (then remove) an X-Virtual-MTA header naming a VirtualMTA of this pool. */
  honorVirtualMtaHeader: z.boolean().default(false),
  /** First matching rule wins. */
  rules: z.array(RoutingRule).max(1000).default([]),
  /** When no rule matches; otherwise the pool's selection picks. */
  defaultVirtualMta: name.optional(),
});

export const RelayPolicy = z.strictObject({
  name,
  /** Credentials are read only on an encrypted session (530 5.7.0 before TLS). */
  requireTlsForAuth: z.boolean().default(true),
  /** Clients in these CIDRs may relay anywhere (PowerMTA `always-allow-relaying`). */
  allowedCidrs: z.array(cidr).max(1024).default([]),
  /** Unauthenticated mail is accepted for recipients in these domains (PowerMTA `relay-domain`). */
  relayDomains: z.array(domainPattern).max(10_000).default([]),
  /** Unauthenticated mail is accepted for these recipient addresses (exact or /regex/). */
  relayAddresses: z.array(relayAddress).max(10_000).default([]),
  /** Allows what would otherwise be refused as an open relay (open-relay.ts). */
  acknowledgeOpenRelay: z.boolean().default(false),
  users: PolicyUsers.optional(),
  routing: Routing.prefault({}),
});

const retryBackoff = z.strictObject({ initial: duration, factor: z.number().min(1).max(10), max: duration });

export const BackoffSettings = z.strictObject({
  /** Regular expressions matched against the whole reply ("^421", "4\\.7\\.[0-9]+"). */
  replyPatterns: z.array(z.string().min(1).max(256).superRefine(refineWith(checkReplyPattern))).min(1).max(64),
  maxSmtpOut: z.number().int().min(1).max(1000).default(1),
  maxMessageRate: rate.optional(),
  retryAfter: duration.prefault('30m'),
  /** Return to normal this long after entering backoff (a successful delivery returns at once). */
  returnAfter: duration.prefault('1h'),
});

/** The ports tried in order when no `ports` are given: submission, its alternate when 587 is blocked, implicit TLS (RFC 8314). */
export const DEFAULT_SMARTHOST_PORTS = [
  { port: 587, tls: 'starttls' as const },
  { port: 2525, tls: 'starttls' as const },
  { port: 465, tls: 'implicit' as const },
];

/** The files of a smarthost login directory: the keys of a kubernetes.io/basic-auth Secret. */
export const SMARTHOST_SECRET_KEYS = ['username', 'password'] as const;

/** Relaying through a submission server (an ESP): TLS always, AUTH with the credentials of a mounted Secret, ports tried in order (mta/delivery/smarthost-session.ts). */
export const SmarthostSettings = z.strictObject({
  /** Host names or addresses, tried in order on each port. */
  hosts: z.array(z.union([hostname, ipAddress])).min(1).max(16),
  /** Tried in order; a refused, silent or failing port (or failed TLS) falls through to the next; the one that worked is used until reprobeAfter. */
  ports: z.array(z.strictObject({ port, tls: z.enum(['starttls', 'implicit']) })).min(1).max(8).default(DEFAULT_SMARTHOST_PORTS),
  /** required: encrypted, certificate not checked; verify: the certificate must chain to a trusted CA and name the host. Never plain text. */
  tlsPolicy: z.enum(['required', 'verify']).default('verify'),
  /** PEM CA bundle trusted for `verify` instead of the system roots (a private relay). */
  caFile: filePath.optional(),
  auth: z
    .strictObject({
      /** Directory holding the files `username` and `password` (a kubernetes.io/basic-auth Secret), read at every session. */
      secretPath: filePath,
      /** auto: PLAIN when offered, else LOGIN. */
      mechanism: z.enum(['PLAIN', 'LOGIN', 'auto']).default('auto'),
    })
    .optional(),
  /** A port that does not answer within this long falls through to the next one. */
  connectTimeout: duration.prefault('15s'),
  /** How long the port that worked after a fallback is used before the list is tried from its start again, and how long a refused login is not offered again (unless the Secret changes). */
  reprobeAfter: duration.prefault('30m'),
});

/** PowerMTA `<domain>` block: every field optional, layered over pool defaults and built-in defaults. */
/** The settings a provider group can give its domains as well as a domain block (ProviderGroup.domainSettings). */
const sessionSettingFields = {
  tlsPolicy: z.enum(['none', 'opportunistic', 'required', 'verify', 'dane', 'dane-only']).optional(),
  mtaSts: z.boolean().optional(),
  /** A list of waits between attempts (the last repeats), or exponential backoff with a cap. */
  retryAfter: z.union([z.array(duration).min(1).max(64), retryBackoff]).optional(),
  bounceAfter: duration.optional(),
  maxMessagesPerConnection: z.number().int().min(1).max(1_000_000).optional(),
};

export const DomainSettings = z.strictObject({
  match: domainPattern,
  ...sessionSettingFields,
  maxSmtpOut: z.number().int().min(1).max(10_000).optional(),
  maxMessageRate: rate.optional(),
  /** Deliver to this host instead of resolving MX (smarthost). */
  smtpHost: hostPort.optional(),
  /** Deliver through an authenticated submission server instead of resolving MX; a block sets smtpHost or smarthost, not both. */
  smarthost: SmarthostSettings.optional(),
  backoff: BackoffSettings.optional(),
}).refine((block) => block.smtpHost === undefined || block.smarthost === undefined, { path: ['smarthost'], message: 'set smtpHost or smarthost, not both' });

/**
 * A provider group (PowerMTA mx-rollup by host, KumoMTA shaping by site): every domain whose MX
 * hosts match one of `mxHosts` shares the group's limits per VirtualMTA, over its own domain limits.
 */
export const ProviderGroup = z.strictObject({
  name,
  /** MX host names: "aspmx.l.google.com" or "*.google.com" (sub-domains only). */
  mxHosts: z.array(domainPattern.refine((pattern) => pattern !== '*', 'MX host names, not "*"')).min(1).max(256),
  /** Open connections per VirtualMTA for all the group's domains together. */
  maxSmtpOut: z.number().int().min(1).max(10_000).optional(),
  /** Messages per VirtualMTA for all the group's domains together. */
  maxMessageRate: rate.optional(),
  /** A throttling reply on one domain puts the whole group in backoff: its connections and rate then hold for the group. Used by domains without a backoff of their own (a "*" block's comes after it). */
  backoff: BackoffSettings.optional(),
  /** Settings for each of the group's domains, over the pool's "*" defaults; a block naming the domain (or a suffix of it) and the VirtualMTA's own blocks still win (domain-settings.ts). */
  domainSettings: z.strictObject(sessionSettingFields).optional(),
});

/** Limits held for the pool as a whole: this pod takes its share from the membership file (mta/delivery/fleet-share.ts). */
export const FleetSettings = z.strictObject({
  /** JSON written by the operator: { members: [ordinals], previousMembers?, raiseAfter? }. Re-read on change. */
  membershipFile: filePath,
  /** Length of a turn when a limit is below the number of pods and its slots rotate. */
  rotationWindow: duration.prefault('60s'),
  /** Wait into a newly held turn, so the last holder's message and clock skew are over. */
  rotationGuard: duration.prefault('5s'),
});

/** DKIM signing algorithms (RFC 6376 rsa-sha256, RFC 8463 ed25519-sha256). */
export const DKIM_ALGORITHMS = ['rsa-sha256', 'ed25519-sha256'] as const;
/** header/body canonicalization (RFC 6376 §3.4). */
export const DKIM_CANONICALIZATIONS = ['relaxed/relaxed', 'relaxed/simple', 'simple/relaxed', 'simple/simple'] as const;
/** Signed when present: the originator and subject, the MIME structure and the RFC 8058 one-click unsubscribe pair. */
export const DEFAULT_DKIM_HEADERS = ['From', 'Reply-To', 'Subject', 'Date', 'To', 'Cc', 'Message-ID', 'In-Reply-To', 'References', 'MIME-Version', 'Content-Type', 'Content-Transfer-Encoding', 'List-Unsubscribe', 'List-Unsubscribe-Post'];
/** Listed in h= once more than they occur, so nobody can add another one without breaking the signature (RFC 6376 §8.15). */
export const DEFAULT_DKIM_OVERSIGNED = ['From'];
const headerName = z.string().regex(/^[!-9;-~]{1,64}$/, 'a header field name such as Subject');
/** A DNS label sequence for `s=` (RFC 6376 §3.1): letters, digits, "-" and "_"... in dot-separated labels. */
const dkimSelector = z.string().regex(/^[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?)*$/, 'a selector of letters, digits, "-" and "_" in dot-separated labels');

export const DkimKey = z.strictObject({
  /** The signing domain (`d=`); messages whose From domain is this domain (or, with organizationalDomain, a sub-domain of it) are signed. */
  domain: hostname.transform((value) => value.toLowerCase()),
  /** `s=`: the public key is published at <selector>._domainkey.<domain>. */
  selector: dkimSelector,
  algorithm: z.enum(DKIM_ALGORITHMS).default('rsa-sha256'),
  /** PEM private key (PKCS#8 or PKCS#1); rsa-sha256 needs 2048 bits or more. Re-read on change. */
  keyFile: filePath,
  /** Overrides the pool's canonicalization for this key. */
  canonicalization: z.enum(DKIM_CANONICALIZATIONS).optional(),
});

export const DkimSettings = z.strictObject({
  /** Keys of the whole pool (PowerMTA `domain-key` outside a virtual-mta); a VirtualMTA's own keys for a domain take precedence. */
  keys: z.array(DkimKey).max(1000).default([]),
  canonicalization: z.enum(DKIM_CANONICALIZATIONS).default('relaxed/relaxed'),
  /** Header fields signed when present (case-insensitive); must include From. */
  headers: z.array(headerName).min(1).max(64).default(DEFAULT_DKIM_HEADERS).refine((names) => names.some((name) => name.toLowerCase() === 'from'), 'must include From (RFC 6376 §5.4)'),
  oversignHeaders: z.array(headerName).max(64).default(DEFAULT_DKIM_OVERSIGNED),
  /** Signature lifetime (`x=` = signing time + this); omitted = no x= tag. */
  expireAfter: duration.optional(),
  /** Sign a From domain without a key of its own with its organizational domain's key (public suffix list: news.example.com -> example.com). */
  organizationalDomain: z.boolean().default(true),
});

/** A SOCKS5 proxy (RFC 1928, with RFC 1929 username/password) that a VirtualMTA's connections leave through (docs/source-addresses.md). */
export const EgressProxy = z.strictObject({
  /** "host:port" of the proxy, reached at the address that makes it send from the VirtualMTA's sourceAddress (Dante `external.rotation: same-same`). */
  server: hostPort,
  /** Directory of a mounted Secret with files "username" and "password" (RFC 1929); read at every connection so a rotated Secret applies. Omitted: no authentication. */
  credentialsDir: filePath.optional(),
});

export const VirtualMta = z.strictObject({
  name,
  /** Source address of outbound connections (PowerMTA `smtp-source-host`); omitted = the host's default. */
  sourceAddress: ipAddress.optional(),
  /** EHLO name of outbound connections. */
  hostname,
  weight: z.number().int().min(1).max(1000).default(1),
  domains: z.array(DomainSettings).max(1000).default([]),
  /** Keys used for messages routed to this VirtualMTA (PowerMTA `domain-key` inside `<virtual-mta>`), before the pool's keys of the same domain. */
  dkimKeys: z.array(DkimKey).max(1000).default([]),
  /** A new source address: daily/hourly caps that grow with the days (warmup-plan.ts). */
  warmup: WarmupPlan.optional(),
  /** SOCKS5 egress proxies, tried in order with failover; empty: connections leave from this host (bound to sourceAddress). */
  proxies: z.array(EgressProxy).max(16).default([]),
});

export const Pool = z.strictObject({
  name,
  selection: z.enum(['round-robin', 'weighted']).default('round-robin'),
  /** Per-domain settings shared by every VirtualMTA of the pool. */
  domainDefaults: z.array(DomainSettings).max(1000).default([]),
  virtualMtas: z.array(VirtualMta).min(1).max(1000),
  dkim: DkimSettings.prefault({}),
  /** Warm VirtualMTAs that take a warming VirtualMTA's mail once its cap is reached (unless its plan names its own). */
  overflowVirtualMtas: z.array(name).max(100).default([]),
  providerGroups: z.array(ProviderGroup).max(100).default([]),
});

/** Accounting records (mta/observe/accounting.ts, docs/accounting.md): where they go, what they carry, rotation and retention. */
export const AccountingSettings = z.strictObject({
  /** JSON lines file: one record per line. */
  file: filePath.optional(),
  /** CSV file as PowerMTA's acct-file writes it (RFC 4180, header line first). */
  csvFile: filePath.optional(),
  stdout: z.boolean().default(false),
  /** One `r` record per recipient of each accepted message, besides the delivery records. */
  receipts: z.boolean().default(true),
  /** Header carrying the job or campaign id (PowerMTA `X-Job`); taken out of the message at accept, before signing and sending. */
  jobHeader: headerName.default('X-Job'),
  /** The tenant in every record: the pool's namespace, rendered by the operator. */
  tenant: z.string().min(1).max(253).optional(),
  /** Start a new file once the current one holds this many bytes, or at each multiple of `interval` (UTC); the old one is renamed with its start time. */
  rotate: z.strictObject({ maxBytes: z.number().int().min(1024).max(Number.MAX_SAFE_INTEGER).optional(), interval: duration.optional() }).prefault({}),
  /** Rotated files kept: at most `maxFiles` of each file, none older than `maxAge`. */
  retain: z.strictObject({ maxFiles: z.number().int().min(1).max(100_000).optional(), maxAge: duration.optional() }).prefault({}),
  /** Longest a record waits in memory before its batch is written and fdatasync'ed; omitted = 200ms. */
  syncInterval: duration.optional(),
});

export const DeliverySettings = z.strictObject({
  /** DNS servers ("10.0.0.10" or "127.0.0.1:5353"); empty uses the host's resolvers. */
  resolvers: z.array(z.string().min(1).superRefine(refineWith(checkResolver))).max(8).default([]),
  /**
   * Validating resolvers whose AD bit DANE trusts ("127.0.0.1:53"): on this host or a trusted
   * network path (RFC 7672 §2.1.1). Empty: DANE cannot be validated (`dane` falls back to
   * opportunistic TLS, `dane-only` defers).
   */
  dnssecResolvers: z.array(z.string().min(1).superRefine(refineWith(checkResolver))).max(8).default([]),
  /** TCP port of MX hosts (25; tests point it elsewhere). `smtpHost` routes carry their own port. */
  mxPort: port.default(25),
  /** Queue by MX host set ("site") instead of by recipient domain. */
  mxRollup: z.boolean().default(false),
  /**
   * How long a connection with nothing left to send stays open for its destination's next
   * message (Postfix's smtp_connection_cache_time_limit, KumoMTA's idle_timeout); "0s" quits at once.
   */
  connectionIdleTimeout: duration.prefault('2s'),
  /** Open delivery connections of this relay at most, over every destination and VirtualMTA (idle ones included). */
  maxConnections: z.number().int().min(1).max(100_000).default(1000),
  accounting: AccountingSettings.prefault({}),
  /** Recipient domains that get their own metric label; every other domain is counted as "other". */
  trackedDomains: z.array(domainPattern).max(100).default([]),
  /** How long an egress proxy that failed is passed over before a connection tries it again. */
  proxyRecheckAfter: duration.prefault('30s'),
  /** Send a "delayed" DSN (RFC 3464) once per recipient still queued this long after arrival (Postfix delay_warning_time); omitted: none. */
  delayWarningAfter: duration.optional(),
});

/** The pool's suppression list (mta/suppression/): what it does with a suppressed recipient, what a hard bounce is, which peers share it. */
export const SuppressionSettings = z.strictObject({
  /** refuse: 550 at RCPT TO, so the sending app sees it; bounce: accept, then bounce at once with a DSN. */
  mode: z.enum(['refuse', 'bounce']).default('refuse'),
  /** Bounce categories (mta/delivery/reply-classification.ts) whose 5xx replies add the recipient to the list. */
  hardBounceCategories: z.array(z.enum(BOUNCE_CATEGORIES)).max(BOUNCE_CATEGORIES.length).default(['bad-mailbox']),
  /** Admin API addresses ("host:port") of the other pods of the pool: every change made here is sent to them, and read from them at start. */
  peers: z.array(hostPort).max(1000).default([]),
});

const mailbox = z.string().max(254).regex(/^[^\s@<>()",;:]+@[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)+$/, 'an address such as tlsrpt@example.com');

/** TLS-RPT (RFC 8460): counting every session's TLS outcome and reporting it to the recipient domains that ask. */
export const TlsReportingSettings = z.strictObject({
  enabled: z.boolean().default(false),
  /** The reporting organisation (organization-name, TLS-Report-Submitter, the file name's sender): a domain. */
  submitter: hostname.transform((value) => value.toLowerCase()).optional(),
  /** contact-info of the reports: an address or URL to ask about them. */
  contactInfo: z.string().min(3).max(254).optional(),
  /** Sender (envelope and From) of mailed reports; default noreply-tlsrpt@<submitter>. Sign them with a DKIM key of its domain. */
  from: mailbox.optional(),
  /** The reporting period (RFC 8460 §4.4 says a UTC day); shorter for tests. */
  interval: duration.prefault('24h'),
  /** VirtualMTA that sends mailed reports; default: the pool's selection. */
  virtualMta: name.optional(),
  https: z
    .strictObject({
      /** PEM CA bundle trusted for https: report URIs instead of the system roots (private CAs, tests). */
      trustedCaFile: filePath.optional(),
      /** Let a rua point at loopback, private or link-local addresses (off: a domain could make the relay POST into its own network). */
      allowPrivateAddresses: z.boolean().default(false),
      timeout: duration.prefault('30s'),
    })
    .prefault({}),
});

export const RuntimeConfig = z
  .strictObject({
    apiVersion: z.literal(RUNTIME_CONFIG_API_VERSION),
    /** Name of this relay in greetings and Received headers. */
    hostname,
    pool: Pool,
    listeners: z.array(Listener).max(64),
    relayPolicies: z.array(RelayPolicy).max(64),
    spool: z.strictObject({
      path: filePath,
      /** Free bytes on the spool's file system below which MAIL FROM is answered 452 4.3.1 (Postfix's queue_minfree). */
      minFreeBytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(DEFAULT_SPOOL_MIN_FREE_BYTES),
      /** Bytes kept in a reserve file and released to record delivery results when the disk is full; 0 keeps none. */
      reserveBytes: z.number().int().min(0).max(1024 * 1024 * 1024).default(DEFAULT_SPOOL_RESERVE_BYTES),
    }),
    admin: z
      .strictObject({
        address: ipAddress.default('0.0.0.0'),
        port: port.default(8025),
        /** File holding the full admin bearer token: every admin call (reads, queue changes, drain). */
        tokenFile: filePath.optional(),
        /** File holding a read-only bearer token: queue and message reads only. Without either token only health, readiness, metrics and config status answer. */
        readTokenFile: filePath.optional(),
      })
      .prefault({}),
    delivery: DeliverySettings.prefault({}),
    /** Absent: reporting is off (left out rather than defaulted, so a parsed config parses again). */
    tlsReporting: TlsReportingSettings.optional(),
    /** Omitted: nothing is refused or added by bounces (the list can still be edited through the admin API). */
    suppression: SuppressionSettings.optional(),
    /** Absent: every limit is this relay's own (one pod, or limits meant per pod). */
    fleet: FleetSettings.optional(),
    /**
     * Processes that serve SMTP sessions beside the one that owns the spool and delivery
     * (mta/sessions/): "auto" is one per CPU the container is given beyond the first when it is
     * given three or more, none on one or two; 0 serves every session in the one process. Read at start only.
     */
    sessionProcesses: z.union([z.literal('auto'), z.number().int().min(0).max(64)]).default('auto'),
  })
  .superRefine((config, ctx) => {
    const reporting = config.tlsReporting;
    if (reporting?.enabled) {
      if (!reporting.submitter) ctx.addIssue({ code: 'custom', path: ['tlsReporting', 'submitter'], input: undefined, message: 'TLS reporting needs the submitter domain (organization-name of the reports)' });
      if (!reporting.contactInfo) ctx.addIssue({ code: 'custom', path: ['tlsReporting', 'contactInfo'], input: undefined, message: 'TLS reporting needs contactInfo (an address or URL for questions about the reports)' });
    }
    if (reporting && (reporting.interval < 1_000 || reporting.interval > 7 * 86_400_000)) ctx.addIssue({ code: 'custom', path: ['tlsReporting', 'interval'], input: reporting.interval, message: 'between 1s and 7d (RFC 8460 expects 24h)' });
    if (reporting?.virtualMta && !config.pool.virtualMtas.some((vmta) => vmta.name === reporting.virtualMta)) {
      ctx.addIssue({ code: 'custom', path: ['tlsReporting', 'virtualMta'], input: reporting.virtualMta, message: `no VirtualMTA named "${reporting.virtualMta}" in pool "${config.pool.name}"` });
    }
    for (const problem of warmupProblems(config.pool)) ctx.addIssue({ code: 'custom', path: ['pool', ...problem.path], input: problem.input, message: problem.message });
    const policyNames = new Set(config.relayPolicies.map((policy) => policy.name));
    const vmtaNames = new Set(config.pool.virtualMtas.map((vmta) => vmta.name));
    const endpoints = new Map<string, string>();
    config.listeners.forEach((listener, index) => {
      if (!policyNames.has(listener.relayPolicy)) {
        ctx.addIssue({ code: 'custom', path: ['listeners', index, 'relayPolicy'], input: listener.relayPolicy, message: `no relay policy named "${listener.relayPolicy}"` });
      }
      const endpoint = `${listener.address}:${listener.port}`;
      const clash = endpoints.get(endpoint);
      if (clash) ctx.addIssue({ code: 'custom', path: ['listeners', index, 'port'], input: listener.port, message: `listener "${clash}" already uses ${endpoint}` });
      endpoints.set(endpoint, listener.name);
      if (listener.tls.mode !== 'none' && (!listener.tls.certFile || !listener.tls.keyFile)) {
        ctx.addIssue({ code: 'custom', path: ['listeners', index, 'tls', 'certFile'], input: listener.tls.certFile, message: `TLS mode "${listener.tls.mode}" needs certFile and keyFile` });
      }
      if (listener.tls.required && listener.tls.mode === 'none') {
        ctx.addIssue({ code: 'custom', path: ['listeners', index, 'tls', 'required'], input: true, message: 'TLS cannot be required when tls.mode is "none"' });
      }
      if (listener.proxyProtocol.enabled && listener.proxyProtocol.trustedCidrs.length === 0) {
        ctx.addIssue({ code: 'custom', path: ['listeners', index, 'proxyProtocol', 'trustedCidrs'], input: [], message: 'PROXY protocol needs at least one trusted CIDR' });
      }
      for (const broad of overlyBroadIndexes(listener.proxyProtocol.trustedCidrs)) {
        ctx.addIssue({ code: 'custom', path: ['listeners', index, 'proxyProtocol', 'trustedCidrs', broad], input: listener.proxyProtocol.trustedCidrs[broad], message: BROAD_PROXY_TRUST_MESSAGE });
      }
    });
    config.relayPolicies.forEach((policy, index) => {
      for (const open of openRelayProblems({ ...policy, cidrs: policy.allowedCidrs })) {
        ctx.addIssue({ code: 'custom', path: ['relayPolicies', index, open.field === 'cidrs' ? 'allowedCidrs' : open.field, open.index], input: open.value, message: open.message });
      }
      policy.routing.rules.forEach((rule, ruleIndex) => {
        if (!vmtaNames.has(rule.virtualMta)) {
          ctx.addIssue({ code: 'custom', path: ['relayPolicies', index, 'routing', 'rules', ruleIndex, 'virtualMta'], input: rule.virtualMta, message: `no VirtualMTA named "${rule.virtualMta}" in pool "${config.pool.name}"` });
        }
      });
      const fallback = policy.routing.defaultVirtualMta;
      if (fallback && !vmtaNames.has(fallback)) {
        ctx.addIssue({ code: 'custom', path: ['relayPolicies', index, 'routing', 'defaultVirtualMta'], input: fallback, message: `no VirtualMTA named "${fallback}" in pool "${config.pool.name}"` });
      }
    });
  });

export type RuntimeConfigInput = z.input<typeof RuntimeConfig>;
export type RuntimeConfig = z.output<typeof RuntimeConfig>;
export type ListenerConfig = RuntimeConfig['listeners'][number];
export type RelayPolicyConfig = RuntimeConfig['relayPolicies'][number];
export type VirtualMtaConfig = RuntimeConfig['pool']['virtualMtas'][number];
export type SuppressionConfig = z.output<typeof SuppressionSettings>;
export type DomainSettingsConfig = z.output<typeof DomainSettings>;
export type SmarthostConfig = z.output<typeof SmarthostSettings>;
export type ProviderGroupConfig = z.output<typeof ProviderGroup>;
export type DkimKeyConfig = z.output<typeof DkimKey>;
export type DkimSettingsConfig = z.output<typeof DkimSettings>;
export type TlsReportingConfig = z.output<typeof TlsReportingSettings>;
/** The TLS reporting settings in force: the config's, or reporting off. */
export function tlsReportingOf(config: RuntimeConfig): TlsReportingConfig {
  return config.tlsReporting ?? REPORTING_OFF;
}
const REPORTING_OFF: TlsReportingConfig = TlsReportingSettings.parse({});
export type DkimAlgorithm = (typeof DKIM_ALGORITHMS)[number];
export type DkimCanonicalization = (typeof DKIM_CANONICALIZATIONS)[number];
export type AccountingConfig = z.output<typeof AccountingSettings>;
