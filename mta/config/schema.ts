// The relay's runtime configuration: the contract between the operator (which renders it into
// a ConfigMap as `relay.yaml`) and the relay (which loads and hot-reloads it). One relay
// process serves one VirtualMTA pool. Durations are PowerMTA-style strings ("10m", "4d") and
// are parsed to milliseconds here, so code inward of the loader only sees numbers.
// `RuntimeConfigInput` is what a renderer writes; `RuntimeConfig` is what the relay uses.
import net from 'node:net';
import { z } from 'zod';
import { DURATION_HINT, DURATION_PATTERN, parseDuration, RATE_HINT, RATE_PATTERN } from './duration.ts';

export const RUNTIME_CONFIG_API_VERSION = 'vmta.dev/relay-config/v1';
/** File name of the runtime config inside the mounted config directory. */
export const RUNTIME_CONFIG_FILE = 'relay.yaml';

const duration = z.string().regex(DURATION_PATTERN, DURATION_HINT).transform(parseDuration);
const rate = z.string().regex(RATE_PATTERN, RATE_HINT);
const name = z
  .string()
  .regex(/^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$/, 'a lower-case name of letters, digits, "-" and "." (at most 63)');
const port = z.number().int().min(1).max(65535);
const ipAddress = z.string().refine((value) => net.isIP(value) !== 0, 'an IPv4 or IPv6 address');
const cidr = z.string().refine(isCidr, 'a CIDR such as 10.0.0.0/8 or 2001:db8::/32, or a single address');
const hostname = z
  .string()
  .regex(/^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*$/, 'a DNS host name');
/** "example.com", "*.example.com" (sub-domains only) or "*" (every domain). */
export const domainPattern = z
  .string()
  .regex(/^(\*|(\*\.)?[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*)$/, 'a domain, "*.domain" or "*"')
  .transform((value) => value.toLowerCase());
const hostPort = z.string().regex(/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'host:port, e.g. smarthost.example.net:587');
const filePath = z.string().min(1);

/** An address or CIDR of either family ("10.0.0.0/8", "2001:db8::/32", "192.0.2.1"). */
export function isCidr(value: string): boolean {
  const [address, bits, extra] = value.split('/');
  if (extra !== undefined || address === undefined) return false;
  const family = net.isIP(address);
  if (family === 0) return false;
  if (bits === undefined) return true;
  if (!/^\d{1,3}$/.test(bits)) return false;
  return Number(bits) <= (family === 4 ? 32 : 128);
}

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

/** A relay address: an exact address (case-insensitive) or "/regex/flags". */
export function isRelayAddressPattern(value: string): boolean {
  const regex = /^\/(.*)\/([imsu]*)$/.exec(value);
  if (!regex) return value.includes('@');
  try {
    new RegExp(regex[1] ?? '', regex[2]);
    return true;
  } catch {
    return false;
  }
}
export const RELAY_ADDRESS_HINT = 'an address such as bounces@example.com or a /regular expression/';
const relayAddress = z.string().min(1).max(512).refine(isRelayAddressPattern, RELAY_ADDRESS_HINT);

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
  users: PolicyUsers.optional(),
  routing: Routing.prefault({}),
});

const retryBackoff = z.strictObject({ initial: duration, factor: z.number().min(1).max(10), max: duration });

export const BackoffSettings = z.strictObject({
  /** Regular expressions matched against the whole reply ("^421", "4\\.7\\.[0-9]+"). */
  replyPatterns: z.array(z.string().min(1).max(256)).min(1).max(64),
  maxSmtpOut: z.number().int().min(1).max(1000).default(1),
  maxMessageRate: rate.optional(),
  retryAfter: duration.prefault('30m'),
  /** Return to normal this long after entering backoff (a successful delivery returns at once). */
  returnAfter: duration.prefault('1h'),
});

/** PowerMTA `<domain>` block: every field optional, layered over pool defaults and built-in defaults. */
export const DomainSettings = z.strictObject({
  match: domainPattern,
  tlsPolicy: z.enum(['none', 'opportunistic', 'required', 'verify']).optional(),
  mtaSts: z.boolean().optional(),
  /** A list of waits between attempts (the last repeats), or exponential backoff with a cap. */
  retryAfter: z.union([z.array(duration).min(1).max(64), retryBackoff]).optional(),
  bounceAfter: duration.optional(),
  maxSmtpOut: z.number().int().min(1).max(10_000).optional(),
  maxMessagesPerConnection: z.number().int().min(1).max(1_000_000).optional(),
  maxMessageRate: rate.optional(),
  /** Deliver to this host instead of resolving MX (smarthost). */
  smtpHost: hostPort.optional(),
  backoff: BackoffSettings.optional(),
});

export const VirtualMta = z.strictObject({
  name,
  /** Source address of outbound connections (PowerMTA `smtp-source-host`); omitted = the host's default. */
  sourceAddress: ipAddress.optional(),
  /** EHLO name of outbound connections. */
  hostname,
  weight: z.number().int().min(1).max(1000).default(1),
  domains: z.array(DomainSettings).max(1000).default([]),
});

export const Pool = z.strictObject({
  name,
  selection: z.enum(['round-robin', 'weighted']).default('round-robin'),
  /** Per-domain settings shared by every VirtualMTA of the pool. */
  domainDefaults: z.array(DomainSettings).max(1000).default([]),
  virtualMtas: z.array(VirtualMta).min(1).max(1000),
});

export const DeliverySettings = z.strictObject({
  /** DNS servers ("10.0.0.10" or "127.0.0.1:5353"); empty uses the host's resolvers. */
  resolvers: z.array(z.string().min(1)).max(8).default([]),
  /** TCP port of MX hosts (25; tests point it elsewhere). `smtpHost` routes carry their own port. */
  mxPort: port.default(25),
  /** Queue by MX host set ("site") instead of by recipient domain. */
  mxRollup: z.boolean().default(false),
  accounting: z
    .strictObject({ file: filePath.optional(), stdout: z.boolean().default(false) })
    .prefault({}),
  /** Recipient domains that get their own metric label; every other domain is counted as "other". */
  trackedDomains: z.array(domainPattern).max(100).default([]),
});

export const RuntimeConfig = z
  .strictObject({
    apiVersion: z.literal(RUNTIME_CONFIG_API_VERSION),
    /** Name of this relay in greetings and Received headers. */
    hostname,
    pool: Pool,
    listeners: z.array(Listener).max(64),
    relayPolicies: z.array(RelayPolicy).max(64),
    spool: z.strictObject({ path: filePath }),
    admin: z
      .strictObject({
        address: ipAddress.default('0.0.0.0'),
        port: port.default(8025),
        /** File holding the bearer token that destructive admin calls need. */
        tokenFile: filePath.optional(),
      })
      .prefault({}),
    delivery: DeliverySettings.prefault({}),
  })
  .superRefine((config, ctx) => {
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
    });
    config.relayPolicies.forEach((policy, index) => {
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
export type DomainSettingsConfig = z.output<typeof DomainSettings>;
