// SmtpListener: one SMTP endpoint served by the pods of a VirtualMtaPool. Its `role` carries the
// port knowledge of RFC 5321/6409/8314 and fills the defaults; explicit fields override them,
// and the combinations those RFCs forbid are refused here (zod) and by the API server (CEL):
//   relay        25    STARTTLS offered, not required     no AUTH     relaying only per policy
//   submission   587   STARTTLS required before anything  AUTH required              (RFC 6409)
//   submissions  465   implicit TLS                       AUTH required              (RFC 8314)
//   alternate    2525  as submission, for networks that block 587
import { z } from 'zod';
import { DURATION_PATTERN, parseDuration } from '../../mta/config/duration.ts';
import { BROAD_PROXY_TRUST_MESSAGE, overlyBroadIndexes } from '../../mta/config/open-relay.ts';
import { API_GROUP_VERSION, celRules, cidr, conditions, duration, hostname, ipAddress, BROAD_CIDR_CEL, localRef, ObjectMeta, port } from './fields.ts';

export const LISTENER_ROLES = ['relay', 'submission', 'submissions', 'alternate'] as const;
export type ListenerRole = (typeof LISTENER_ROLES)[number];
export type TlsMode = 'none' | 'starttls' | 'implicit';
export type AuthMechanism = 'PLAIN' | 'LOGIN' | 'CRAM-MD5';

export interface RoleDefaults {
  port: number;
  tlsMode: TlsMode;
  tlsRequired: boolean;
  authRequired: boolean;
  authMechanisms: AuthMechanism[];
}

export const ROLE_DEFAULTS: Record<ListenerRole, RoleDefaults> = {
  relay: { port: 25, tlsMode: 'starttls', tlsRequired: false, authRequired: false, authMechanisms: [] },
  submission: { port: 587, tlsMode: 'starttls', tlsRequired: true, authRequired: true, authMechanisms: ['PLAIN', 'LOGIN'] },
  submissions: { port: 465, tlsMode: 'implicit', tlsRequired: true, authRequired: true, authMechanisms: ['PLAIN', 'LOGIN'] },
  alternate: { port: 2525, tlsMode: 'starttls', tlsRequired: true, authRequired: true, authMechanisms: ['PLAIN', 'LOGIN'] },
};

const ListenerTls = z.strictObject({
  mode: z.enum(['none', 'starttls', 'implicit']).optional().describe('Defaults from the role: starttls, or implicit for `submissions`.'),
  required: z.boolean().optional().describe('Refuse MAIL and AUTH before the session is encrypted. Defaults from the role.'),
  secretName: z.string().max(253).optional().describe('A `kubernetes.io/tls` Secret (keys tls.crt and tls.key), mounted into the pods by reference.'),
  minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
});

const ListenerAuth = z.strictObject({
  required: z.boolean().optional().describe('Refuse MAIL FROM before AUTH. Defaults from the role.'),
  mechanisms: z.array(z.enum(['PLAIN', 'LOGIN', 'CRAM-MD5'])).max(3).optional().describe('Mechanisms offered; empty offers no AUTH. Defaults from the role (none on relay, PLAIN and LOGIN elsewhere).'),
  maxFailures: z.number().int().min(1).max(1000).optional().describe('Failed AUTH attempts from one client address within failureWindow before AUTH is refused (454 4.7.0, saying for how long) on every listener; default 5. The lock-out is logged.'),
  failureWindow: duration.optional().describe('The sliding window of maxFailures; a locked-out client may try again once its oldest counted failure is older than this. Default 5m.'),
});

const ListenerLimits = z.strictObject({
  maxConnections: z.number().int().min(1).max(1_000_000).optional(),
  maxConnectionsPerClient: z.number().int().min(1).max(100_000).optional(),
  maxMessageSize: z.number().int().min(1024).max(2 ** 31 - 1).optional().describe('Bytes, advertised with SIZE.'),
  maxRecipients: z.number().int().min(1).max(100_000).optional(),
  idleTimeout: duration.optional().describe('Close a session that sends nothing for this long (default 5m).'),
  commandTimeout: duration.optional().describe('Bound on receiving one command line or a whole DATA section, however the bytes trickle in (default 10m).'),
  minDataRate: z.number().int().min(1).max(1_000_000_000).optional().describe('Bytes per second a command line or DATA section must keep up after dataRateGrace, or the session gets 421 4.4.2 (Postfix smtpd_min_data_rate; default 500).'),
  dataRateGrace: duration.optional().describe('Time a command line or DATA section gets before minDataRate applies; also the deadline of a TLS handshake or PROXY header, at most idleTimeout and 30s (default 30s).'),
  maxErrors: z.number().int().min(1).max(1000).optional(),
  greetingDelay: duration.optional().describe('Pause before the greeting to catch clients that talk first.'),
});

const ProxyProtocol = z.strictObject({
  enabled: z.boolean().default(false),
  trustedCidrs: z.array(cidr).max(256).optional().describe('Only these peers may send a PROXY header (the load balancers); never the whole internet.'),
});

const ListenerService = z.strictObject({
  type: z.enum(['ClusterIP', 'NodePort', 'LoadBalancer']).default('ClusterIP'),
  port: port.optional().describe('Port of the Service; defaults to the listener\'s port.'),
  nodePort: z.number().int().min(1).max(65535).optional(),
  externalTrafficPolicy: z.enum(['Local', 'Cluster']).optional().describe('Local (the default for LoadBalancer and NodePort) keeps the client address, which relay decisions depend on.'),
  loadBalancerSourceRanges: z.array(cidr).max(64).optional(),
  annotations: z.record(z.string().max(317), z.string().max(4096)).optional(),
});

const SelfCheck = z.strictObject({
  enabled: z.boolean().default(true).describe('Probe the listener through its Service as a remote client would (banner, TLS, certificate, AUTH) and report it in status and the SelfCheck condition.'),
  interval: duration.default('5m').describe('How often the probe runs, besides after each change of the listener or its pool; at least 30s.'),
});

/** Intervals under 30s: 0-29999 milliseconds or 0-29 seconds (CEL has no duration unit "d", so a pattern). */
const SHORT_INTERVAL_CEL = "self.selfCheck.interval.matches('^0*([0-9]{1,4}ms|[12][0-9]{4}ms|[12]?[0-9]s)$')";

const SUBMISSION_ROLE = "self.role != 'relay'";
const hasTls = (field: string) => `has(self.tls) && has(self.tls.${field})`;
const hasAuth = (field: string) => `has(self.auth) && has(self.auth.${field})`;

/** The rules of the table above, as CEL on `spec`; `refineListenerSpec` is the same in TypeScript. */
export const LISTENER_RULES = celRules(
  {
    rule: `!(${hasTls('mode')}) || (self.role == 'submissions' ? self.tls.mode == 'implicit' : (self.role == 'relay' ? self.tls.mode != 'implicit' : self.tls.mode == 'starttls'))`,
    message: 'tls.mode does not fit the role: relay takes none or starttls, submission and alternate take starttls (RFC 6409), submissions takes implicit (RFC 8314)',
    fieldPath: '.tls.mode',
    reason: 'FieldValueForbidden',
  },
  {
    rule: `!(has(self.port) && self.port == 25 && (${hasTls('mode')} ? self.tls.mode == 'implicit' : self.role == 'submissions'))`,
    message: 'port 25 cannot use implicit TLS: other MTAs speak plain SMTP and upgrade with STARTTLS (RFC 3207)',
    fieldPath: '.tls.mode',
    reason: 'FieldValueForbidden',
  },
  {
    rule: `!(${SUBMISSION_ROLE}) || !(${hasTls('required')}) || self.tls.required`,
    message: 'a submission role carries credentials: tls.required cannot be false (RFC 8314)',
    fieldPath: '.tls.required',
    reason: 'FieldValueForbidden',
  },
  {
    rule: `!(${SUBMISSION_ROLE}) || !(${hasAuth('required')}) || self.auth.required`,
    message: 'a submission role requires AUTH (RFC 6409 §4.3); for trusted networks use role relay with the policy\'s alwaysAllowRelaying',
    fieldPath: '.auth.required',
    reason: 'FieldValueForbidden',
  },
  {
    rule: `!(${SUBMISSION_ROLE}) || !(${hasAuth('mechanisms')}) || self.auth.mechanisms.size() > 0`,
    message: 'a submission role requires AUTH, so auth.mechanisms cannot be empty',
    fieldPath: '.auth.mechanisms',
    reason: 'FieldValueForbidden',
  },
  {
    rule: `!(${hasTls('mode')} && self.tls.mode == 'none' && ((${hasAuth('mechanisms')} && self.auth.mechanisms.size() > 0) || (${hasAuth('required')} && self.auth.required)))`,
    message: 'AUTH without TLS would send credentials in clear: offer AUTH only with tls.mode starttls or implicit',
    fieldPath: '.auth',
    reason: 'FieldValueForbidden',
  },
  {
    rule: `(${hasTls('mode')} && self.tls.mode == 'none') || ${hasTls('secretName')}`,
    message: 'tls.secretName (a kubernetes.io/tls Secret) is required unless tls.mode is none',
    fieldPath: '.tls',
    reason: 'FieldValueRequired',
  },
  {
    rule: "!has(self.proxyProtocol) || !self.proxyProtocol.enabled || (has(self.proxyProtocol.trustedCidrs) && self.proxyProtocol.trustedCidrs.size() > 0)",
    message: 'proxyProtocol.enabled needs proxyProtocol.trustedCidrs: the load balancers allowed to send PROXY headers',
    fieldPath: '.proxyProtocol.trustedCidrs',
    reason: 'FieldValueRequired',
  },
  {
    rule: `!has(self.proxyProtocol) || !has(self.proxyProtocol.trustedCidrs) || self.proxyProtocol.trustedCidrs.all(c, !${BROAD_CIDR_CEL})`,
    message: `proxyProtocol.trustedCidrs ${BROAD_PROXY_TRUST_MESSAGE}`,
    fieldPath: '.proxyProtocol.trustedCidrs',
    reason: 'FieldValueForbidden',
  },
  {
    rule: "!has(self.service) || self.service.type != 'ClusterIP' || (!has(self.service.externalTrafficPolicy) && !has(self.service.nodePort) && !has(self.service.loadBalancerSourceRanges))",
    message: 'service.externalTrafficPolicy, nodePort and loadBalancerSourceRanges need service.type NodePort or LoadBalancer',
    fieldPath: '.service.type',
    reason: 'FieldValueForbidden',
  },
  {
    rule: `!has(self.selfCheck) || !has(self.selfCheck.interval) || !${SHORT_INTERVAL_CEL}`,
    message: 'selfCheck.interval must be at least 30s: the probe opens a TLS session to every pod behind the Service',
    fieldPath: '.selfCheck.interval',
    reason: 'FieldValueInvalid',
  },
);

const SmtpListenerFields = z.strictObject({
  role: z.enum(LISTENER_ROLES).describe('relay (25: STARTTLS offered, no AUTH), submission (587: STARTTLS then AUTH, RFC 6409), submissions (465: implicit TLS, RFC 8314) or alternate (2525: as submission). Fills the defaults of port, tls and auth.'),
  address: ipAddress.optional().describe('Address to listen on inside the pod; defaults to every address.'),
  port: port.optional().describe('Defaults from the role: 25, 587, 465 or 2525.'),
  hostname: hostname.optional().describe('Name in the greeting banner; defaults to the pool\'s hostname.'),
  tls: ListenerTls.optional().describe('TLS of the listener: none, STARTTLS or implicit, whether it is required, and the certificate Secret. Defaults from the role.'),
  auth: ListenerAuth.optional().describe('SMTP AUTH: whether it is required, the mechanisms offered, and the lock-out after maxFailures failed attempts within failureWindow (per client address, on every listener). Defaults from the role.'),
  relayPolicyRef: localRef.describe('The RelayPolicy that decides who may relay through this listener.'),
  poolRef: localRef.describe('The VirtualMtaPool whose pods serve this listener.'),
  limits: ListenerLimits.optional().describe('Connection, size, recipient and time limits; omitted ones take the relay defaults (greetingDelay 0s on every role: a pause would slow legitimate bounces on port 25 and catch nothing on submission ports).'),
  proxyProtocol: ProxyProtocol.optional().describe('Accept a PROXY protocol header from trusted load balancers, so relay decisions see the real client address.'),
  service: ListenerService.optional().describe('How the listener is exposed; omitted means a ClusterIP Service.'),
  selfCheck: SelfCheck.optional().describe('The operator\'s probe of the listener through its Service; on by default, every 5m.'),
});

export type SmtpListenerSpec = z.output<typeof SmtpListenerFields>;

export const SmtpListenerSpec = SmtpListenerFields.superRefine(refineListenerSpec).meta(LISTENER_RULES);

/** The listener's settings after role defaults, as the relay will run them. */
export interface ResolvedListener {
  role: ListenerRole;
  address: string;
  port: number;
  tlsMode: TlsMode;
  tlsRequired: boolean;
  authRequired: boolean;
  authMechanisms: AuthMechanism[];
}

export function resolveListener(spec: Pick<SmtpListenerSpec, 'role' | 'address' | 'port' | 'tls' | 'auth'>): ResolvedListener {
  const defaults = ROLE_DEFAULTS[spec.role];
  const tlsMode = spec.tls?.mode ?? defaults.tlsMode;
  return {
    role: spec.role,
    address: spec.address ?? '0.0.0.0',
    port: spec.port ?? defaults.port,
    tlsMode,
    // Implicit TLS is encrypted from the first byte; "none" cannot require what it never offers.
    tlsRequired: tlsMode === 'implicit' ? true : tlsMode === 'none' ? false : (spec.tls?.required ?? defaults.tlsRequired),
    authRequired: spec.auth?.required ?? defaults.authRequired,
    authMechanisms: spec.auth?.mechanisms ?? defaults.authMechanisms,
  };
}

function refineListenerSpec(spec: SmtpListenerSpec, ctx: z.RefinementCtx): void {
  const issue = (path: (string | number)[], input: unknown, message: string) => ctx.addIssue({ code: 'custom', path, input, message });
  const submissionRole = spec.role !== 'relay';
  const mode = spec.tls?.mode;
  if (mode !== undefined) {
    const allowed: TlsMode[] = spec.role === 'submissions' ? ['implicit'] : spec.role === 'relay' ? ['none', 'starttls'] : ['starttls'];
    if (!allowed.includes(mode)) issue(['tls', 'mode'], mode, `role "${spec.role}" takes tls.mode ${allowed.join(' or ')} (relay: none or starttls; submission, alternate: starttls, RFC 6409; submissions: implicit, RFC 8314)`);
  }
  if (spec.port === 25 && resolveListener(spec).tlsMode === 'implicit') issue(['tls', 'mode'], mode ?? 'implicit', 'port 25 cannot use implicit TLS: other MTAs speak plain SMTP and upgrade with STARTTLS (RFC 3207)');
  if (submissionRole && spec.tls?.required === false) issue(['tls', 'required'], false, `role "${spec.role}" carries credentials: tls.required cannot be false (RFC 8314)`);
  if (submissionRole && spec.auth?.required === false) issue(['auth', 'required'], false, `role "${spec.role}" requires AUTH (RFC 6409 §4.3); for trusted networks use role relay with the policy's alwaysAllowRelaying`);
  if (submissionRole && spec.auth?.mechanisms?.length === 0) issue(['auth', 'mechanisms'], [], `role "${spec.role}" requires AUTH, so auth.mechanisms cannot be empty`);
  if (mode === 'none' && ((spec.auth?.mechanisms?.length ?? 0) > 0 || spec.auth?.required === true)) {
    issue(['auth'], spec.auth, 'AUTH without TLS would send credentials in clear: offer AUTH only with tls.mode starttls or implicit');
  }
  if (mode !== 'none' && !spec.tls?.secretName) issue(['tls', 'secretName'], undefined, 'tls.secretName (a kubernetes.io/tls Secret) is required unless tls.mode is none');
  const proxy = spec.proxyProtocol;
  if (proxy?.enabled && (proxy.trustedCidrs?.length ?? 0) === 0) issue(['proxyProtocol', 'trustedCidrs'], proxy.trustedCidrs, 'proxyProtocol.enabled needs proxyProtocol.trustedCidrs: the load balancers allowed to send PROXY headers');
  for (const index of overlyBroadIndexes(proxy?.trustedCidrs ?? [])) issue(['proxyProtocol', 'trustedCidrs', index], proxy?.trustedCidrs?.[index], `proxyProtocol.trustedCidrs ${BROAD_PROXY_TRUST_MESSAGE}`);
  const service = spec.service;
  if (service && service.type === 'ClusterIP' && (service.externalTrafficPolicy || service.nodePort || service.loadBalancerSourceRanges)) {
    issue(['service', 'type'], service.type, 'service.externalTrafficPolicy, nodePort and loadBalancerSourceRanges need service.type NodePort or LoadBalancer');
  }
  const interval = spec.selfCheck?.interval;
  if (interval !== undefined && DURATION_PATTERN.test(interval) && parseDuration(interval) < 30_000) {
    issue(['selfCheck', 'interval'], interval, `selfCheck.interval "${interval}" must be at least 30s: the probe opens a TLS session to every pod behind the Service`);
  }
}

export const SmtpListenerStatus = z.strictObject({
  observedGeneration: z.number().int().min(0).optional(),
  conditions: conditions.optional(),
  port: port.optional().describe('The port the listener serves after role defaults.'),
  checkedAt: z.string().max(64).optional().describe('When the self-check last probed the listener through its Service.'),
  checkedAddress: z.string().max(320).optional().describe('The address the self-check connected to: the listener\'s Service and port.'),
  banner: z.string().max(512).optional().describe('The 220 greeting a client sees, without its code.'),
  tls: z.string().max(32).optional().describe('The TLS version a client negotiates (TLSv1.3), after STARTTLS or at once for implicit TLS.'),
  cipher: z.string().max(128).optional().describe('The cipher suite a client negotiates.'),
  certificateExpires: z.string().max(64).optional().describe('When the certificate the listener presents expires; the SelfCheck condition warns 14 days before.'),
});

export const SmtpListener = z.strictObject({
  apiVersion: z.literal(API_GROUP_VERSION),
  kind: z.literal('SmtpListener'),
  metadata: ObjectMeta,
  spec: SmtpListenerSpec,
  status: SmtpListenerStatus.optional(),
});
export type SmtpListener = z.output<typeof SmtpListener>;
