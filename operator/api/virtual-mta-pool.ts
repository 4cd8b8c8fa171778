// VirtualMtaPool: a group of VirtualMTAs (PowerMTA `<virtual-mta>` in a `<virtual-mta-pool>`),
// each with its source address, EHLO hostname and per-domain settings, and how the pool runs:
// replicas, spool storage, egress mode for source addresses, image and pod overrides.
import { z } from 'zod';
import { WarmupPlan } from '../../mta/config/warmup-plan.ts';
import { BOUNCE_CATEGORIES } from '../../mta/delivery/reply-classification.ts';
import { dkimKeyList, DkimKeyStatus, DkimSpec } from './dkim.ts';
import { domainSettingsList } from './domain-settings.ts';
import { providerGroupList } from './provider-groups.ts';
import { annotationValue, API_GROUP_VERSION, celRules, conditions, domainPattern, duration, hostname, hostPort, ipAddress, labelKey, labelValue, ObjectMeta, objectName, quantity, resolver, uniqueListBy } from './fields.ts';

export const TlsReportingSpec = z.strictObject({
  enabled: z.boolean().default(false).describe('Count every outbound session\'s TLS outcome per recipient domain and send the daily RFC 8460 report to each domain that publishes a _smtp._tls record.'),
  submitter: hostname.optional().describe('The reporting organisation, a domain (organization-name, TLS-Report-Submitter); mailed reports are DKIM-signed when the pool has a key for it.'),
  contactInfo: z.string().min(3).max(254).optional().describe('contact-info of the reports: an address or URL for questions about them.'),
  from: z.string().max(254).optional().describe('Sender of mailed reports; default noreply-tlsrpt@<submitter>.'),
  interval: duration.default('24h').describe('Reporting period; RFC 8460 expects a UTC day.'),
  virtualMta: objectName.optional().describe('VirtualMTA that sends mailed reports; default: the pool\'s selection.'),
  https: z
    .strictObject({
      caSecretName: z.string().max(253).optional().describe('Secret with key "ca.crt": CA bundle trusted for https: report URIs instead of the system roots.'),
      allowPrivateAddresses: z.boolean().default(false).describe('Let a report URI point at private, loopback or link-local addresses (a recipient domain chooses the URI).'),
    })
    .optional(),
});

export const AccountingSpec = z.strictObject({
  format: z.enum(['jsonl', 'csv', 'both']).default('jsonl').describe('jsonl: accounting/acct.jsonl, one JSON record per line; csv: accounting/acct.csv as PowerMTA\'s acct-file writes it (header line, RFC 4180); both: the two files.'),
  jobHeader: z.string().max(64).regex(/^[!-9;-~]{1,64}$/, 'a header field name such as X-Job').default('X-Job').describe('Header carrying the job or campaign id (PowerMTA X-Job); taken out of the message before signing and sending, kept in the records.'),
  receipts: z.boolean().default(true).describe('Write an r record per recipient of each accepted message, besides the d (delivered), b (bounced) and t (deferred) records.'),
  rotate: z
    .strictObject({
      size: quantity.optional().describe('Start a new file once the current one reaches this size (e.g. 100Mi); at least 1Ki.'),
      interval: duration.optional().describe('Start a new file at each UTC multiple of this interval (e.g. 1h, 1d).'),
    })
    .optional()
    .describe('Rotation: the current file is renamed acct-<start time>.<ext> (names sort by time).'),
  retain: z
    .strictObject({
      files: z.number().int().min(1).max(100_000).optional().describe('Rotated files kept per format; the oldest go first.'),
      maxAge: duration.optional().describe('Rotated files started longer ago than this are deleted.'),
    })
    .optional()
    .describe('Bound on the rotated files kept on the spool volume.'),
  syncInterval: duration.optional().describe('Longest a record waits before its batch is written and fdatasync\'ed (default 200ms).'),
});

export const EgressProxySpec = z.strictObject({
  server: hostPort.describe('"host:port" of a SOCKS5 proxy that sends from this VirtualMTA\'s sourceAddress: reached at the address that it sends from (Dante `external.rotation: same-same`). It must report sourceAddress as the bound address, or nothing is sent through it.'),
  credentialsSecretName: z.string().max(253).optional().describe('Secret with keys "username" and "password" for the proxy (RFC 1929); the relay reads the password at every connection.'),
});

export const VirtualMtaSpec = z.strictObject({
  name: objectName,
  sourceAddress: ipAddress.optional().describe('Source address of outbound connections (PowerMTA `smtp-source-host`); omitted = the pod\'s own address.'),
  hostname: hostname.describe('EHLO name of outbound connections; should match the reverse DNS of sourceAddress.'),
  weight: z.number().int().min(1).max(1000).default(1).describe('Share of mail under `selection: weighted`.'),
  domains: domainSettingsList.optional().describe('Per-domain settings of this VirtualMTA, over the pool\'s domainDefaults.'),
  dkimKeys: dkimKeyList.optional().describe('DKIM keys for mail sent through this VirtualMTA (PowerMTA `domain-key` inside `<virtual-mta>`); used before the pool\'s keys of the same domain.'),
  proxies: z.array(EgressProxySpec).max(16).optional().describe('SOCKS5 egress proxies the VirtualMTA\'s connections leave through, tried in order; one that fails is passed over for 30s, then tried again (docs/source-addresses.md). Health per proxy is in status.virtualMtas[].proxies.'),
  warmup: WarmupPlan.optional().describe('Warm-up plan of a new source address (docs/warmup.md): daily and hourly caps for the whole pool that grow with the days; past a cap mail goes to overflowTo or the pool\'s overflowVirtualMtas, or waits. Day, cap and use are in status.warmup.'),
});

const Toleration = z.strictObject({
  key: z.string().max(317).optional(),
  operator: z.enum(['Exists', 'Equal']).optional(),
  value: z.string().max(63).optional(),
  effect: z.enum(['NoSchedule', 'PreferNoSchedule', 'NoExecute']).optional(),
  tolerationSeconds: z.number().int().optional(),
});

const ResourceList = z.strictObject({ cpu: quantity.optional(), memory: quantity.optional(), 'ephemeral-storage': quantity.optional() });

export const PodOverrides = z.strictObject({
  resources: z.strictObject({ requests: ResourceList.optional(), limits: ResourceList.optional() }).optional(),
  nodeSelector: z.record(labelKey, labelValue).optional(),
  tolerations: z.array(Toleration).max(64).optional(),
  annotations: z.record(labelKey, annotationValue).optional(),
  priorityClassName: z.string().max(253).optional(),
});

export const VirtualMtaPoolSpec = z
  .strictObject({
    hostname: hostname.optional().describe('Name of the relay in greetings and Received headers; defaults to the first VirtualMTA\'s hostname.'),
    virtualMtas: uniqueListBy(z.array(VirtualMtaSpec).min(1).max(1000), 'name').describe('The VirtualMTAs of the pool (PowerMTA `<virtual-mta>`), unique by name.'),
    domainDefaults: domainSettingsList.optional().describe('Per-domain settings shared by every VirtualMTA (PowerMTA `<domain>` blocks outside a virtual-mta).'),
    selection: z.enum(['round-robin', 'weighted']).default('round-robin').describe('How a message without a routing rule picks its VirtualMTA.'),
    replicas: z.number().int().min(0).max(1000).default(1).describe('Relay pods; every pod runs every listener and VirtualMTA of the pool.'),
    spool: z
      .strictObject({
        mode: z.enum(['persistent', 'ephemeral']).default('persistent').describe('persistent: a StatefulSet with a PersistentVolumeClaim per pod (retained on scale-down and delete); ephemeral: a Deployment with an emptyDir, for pass-through use.'),
        size: quantity.default('10Gi').describe('Claim size (persistent) or emptyDir size limit (ephemeral).'),
        storageClassName: z.string().max(253).optional().describe('StorageClass of the spool claims (persistent only); omitted uses the default class.'),
        minFree: quantity.default('100Mi').describe('Free space on the spool volume below which the relay answers MAIL FROM with 452 4.3.1 (Postfix queue_minfree), so clients go elsewhere before a message could not be stored. Hot: no pod restart.'),
        reserve: quantity.default('8Mi').describe('Space the relay holds in a reserve file on the spool volume and releases to record delivery results when the volume is full, so no delivered message is sent again for want of space (8Mi records some 40,000 results). "0" keeps none. Hot: no pod restart.'),
      })
      .superRefine((spool, ctx) => {
        if (spool.mode === 'ephemeral' && spool.storageClassName) ctx.addIssue({ code: 'custom', path: ['storageClassName'], input: spool.storageClassName, message: 'storageClassName needs spool.mode persistent' });
      })
      .meta(celRules({ rule: "self.mode == 'persistent' || !has(self.storageClassName)", message: 'storageClassName needs spool.mode persistent', fieldPath: '.storageClassName', reason: 'FieldValueForbidden' }))
      .prefault({})
      .describe('Where each relay pod keeps accepted mail until it is delivered.'),
    drain: z
      .strictObject({
        timeout: duration.default('10m').describe('How long pods leaving the pool (scale-in, pool deletion) may take to hand their queue to the remaining pods or deliver it; what is left then stays on their claims and is reported in the Draining condition.'),
      })
      .prefault({})
      .describe('Draining the queue of pods before they go away (persistent spool; needs admin.tokenSecretName).'),
    egress: z
      .strictObject({
        mode: z.enum(['podNetwork', 'hostNetwork']).default('podNetwork').describe('podNetwork: connections leave from the pod (source addresses through the CNI / egress gateway); hostNetwork: pods run on the node\'s network so sourceAddress can be a node address.'),
      })
      .prefault({})
      .describe('How delivery connections leave with each VirtualMTA\'s source address (docs/source-addresses.md).'),
    image: z.string().max(512).optional().describe('Relay image; defaults to the operator\'s own.'),
    pod: PodOverrides.optional().describe('Overrides of the relay pods: resources, nodeSelector, tolerations, annotations, priorityClassName. hostNetwork is egress.mode.'),
    admin: z
      .strictObject({
        tokenSecretName: z.string().max(253).optional().describe('Secret with key "token": the full bearer token of the relay admin API, for every call: reading queues and messages, queue changes (vmta queue pause, resume, retry, bounce, delete) and drains. Without it (and readTokenSecretName) those calls are refused (401): only health, readiness, metrics and config status answer on port 8025.'),
        readTokenSecretName: z.string().max(253).optional().describe('Secret with key "token": a read-only bearer token of the relay admin API (list queues, show messages with their recipients; no changes). Must differ from the token of tokenSecretName.'),
      })
      .optional()
      .describe('The relay\'s admin API on port 8025 (health, metrics, queue inspection and control); never exposed by a Service.'),
    accounting: AccountingSpec.optional().describe('Accounting records (docs/accounting.md): one per recipient of each accepted message and of each delivery attempt, with job id, user and tenant (the namespace), in files on the spool volume under accounting/. Hot: no pod restart.'),
    providerGroups: providerGroupList.optional().describe('Named groups of MX hosts (a provider: Google, Microsoft, ...): every domain whose MX matches shares the group\'s connections, rate and backoff per VirtualMTA (docs/provider-groups.md; defaults to start from in examples/provider-groups.yaml).'),
    overflowVirtualMtas: z.array(objectName).max(100).optional().describe('Warm VirtualMTAs of this pool that take a warming VirtualMTA\'s mail once its cap is reached, in turn (a VirtualMTA\'s warmup.overflowTo comes first). Without any, mail past a cap waits for the next hour or day.'),
    mxRollup: z.boolean().optional().describe('Queue by MX host set instead of by recipient domain (PowerMTA `mx-rollup`): domains served by the same MX hosts share one queue\'s connections and limits per VirtualMTA. Off by default.'),
    trackedDomains: z.array(domainPattern).max(100).optional().describe('Recipient domains that get their own metric label; others count as "other".'),
    connectionIdleTimeout: duration.optional().describe('How long a delivery connection with nothing left to send stays open for its destination\'s next message (Postfix\'s connection cache, KumoMTA\'s idle_timeout); "0s" closes it at once. Default 2s.'),
    maxDeliveryConnections: z.number().int().min(1).max(100_000).optional().describe('Open delivery connections per relay pod at most, over every destination and VirtualMTA (as Postfix\'s default_process_limit bounds its smtp agents); a destination waits for a free one in turn. Default 1000.'),
    sessionProcesses: z.number().int().min(0).max(64).optional().describe('Processes per relay pod that serve SMTP sessions (TLS, the SMTP dialogue, DKIM signing) beside the one that owns the spool and delivery (docs/delivery-engine.md); 0 serves them in that one. Default: one per CPU the pod may use beyond the first when it may use three or more, else 0. A change restarts the pods.'),
    dkim: DkimSpec.optional().describe('DKIM signing (RFC 6376, RFC 8463): keys from Secrets and signing defaults.'),
    resolvers: z.array(resolver).max(8).optional().describe('DNS servers for MX lookups ("10.0.0.10" or "10.0.0.10:53"); empty uses the pod\'s resolvers.'),
    suppression: z
      .strictObject({
        mode: z.enum(['refuse', 'bounce']).default('refuse').describe('refuse: a suppressed recipient gets 550 at RCPT TO, which the sending app sees; bounce: the message is accepted and the recipient bounced at once with a DSN to the sender.'),
        hardBounceCategories: z.array(z.enum(BOUNCE_CATEGORIES)).max(BOUNCE_CATEGORIES.length).default(['bad-mailbox']).describe(`Bounce categories whose 5xx replies add the recipient to the list (${BOUNCE_CATEGORIES.join(', ')}); the default is bad-mailbox (5.1.1 "user unknown" and friends).`),
      })
      .optional()
      .describe('The pool\'s suppression list: addresses that hard-bounced or that an operator added (vmta suppression add) get no mail. Kept on each pod\'s spool volume; the pods of a persistent pool send each other their changes through the admin API (needs admin.tokenSecretName). Omitted: nothing is refused or added by bounces.'),
    dsn: z
      .strictObject({
        delayWarningAfter: duration.optional().describe('Send the sender one "delayed" DSN (RFC 3464) per recipient still queued this long after arrival, unless its NOTIFY left DELAY out (Postfix delay_warning_time, e.g. 4h). Omitted: no delay notices.'),
      })
      .optional()
      .describe('Delivery status notifications beyond failures: RET, ENVID, NOTIFY and ORCPT (RFC 3461) are always honoured and passed on.'),
    dnssecResolvers: z.array(resolver).max(8).optional().describe('Validating DNS resolvers whose AD bit DANE trusts ("10.0.0.10" or "10.0.0.10:53"), reached over a trusted path (a node-local or in-cluster resolver); without them `tlsPolicy: dane` falls back to opportunistic TLS and `dane-only` defers.'),
    tlsReporting: TlsReportingSpec.optional().describe('TLS-RPT (RFC 8460): daily reports of TLS outcomes to the recipient domains that ask for them. Each pod reports its own sessions under its own report-id.'),
  });

export type VirtualMtaPoolSpec = z.output<typeof VirtualMtaPoolSpec>;

export const VirtualMtaSummary = z.strictObject({
  name: z.string().max(63),
  sourceAddress: z.string().max(45).optional(),
  hostname: z.string().max(253),
  domains: z.number().int().min(0),
  proxies: z
    .array(
      z.strictObject({
        server: z.string().max(261),
        healthy: z.boolean().optional().describe('False when a ready pod\'s last connection through it failed; absent until one has tried it.'),
        lastError: z.string().max(1024).optional(),
        pod: z.string().max(253).optional().describe('The pod that reported lastError.'),
      }),
    )
    .max(16)
    .optional()
    .describe('Egress proxy health as the ready pods report it (GET /egress-proxies on their admin port).'),
});

export const WarmupSummary = z.strictObject({
  virtualMta: z.string().max(63),
  providerGroup: z.string().max(63).optional().describe('Set when the entry is the caps of one provider group\'s domains (warmup.providerGroups); absent for the plan\'s caps over all destinations.'),
  day: z.number().int().min(0).describe('Day of the plan (1 = its start date; 0 before it, under day 1\'s caps).'),
  dailyCap: z.number().int().min(0).describe('Messages the whole pool may send through the VirtualMTA today, from the plan.'),
  hourlyCap: z.number().int().min(0).optional().describe('Messages the whole pool may send in the current hour; absent when the day\'s step has no hourly cap.'),
  used: z.number().int().min(0).describe('Messages sent today, summed over the pods that reported (podsReporting).'),
  hourlyUsed: z.number().int().min(0).describe('Messages sent in the current hour, summed over the pods that reported.'),
  podsReporting: z.number().int().min(0).describe('Ready pods that answered GET /warmup with today\'s count; when fewer than podsExpected, used leaves the others out.'),
  podsExpected: z.number().int().min(0).describe('Ready pods of the pool.'),
  dayEndsAt: z.string().max(64).describe('When the plan\'s current day ends (local midnight in its timeZone) and the counts start again.'),
});

export const DrainedPod = z.strictObject({
  name: z.string().max(253),
  state: z.enum(['unreachable', 'idle', 'draining', 'drained', 'incomplete']).describe('What the pod reports: unreachable when it does not answer.'),
  queuedAtStart: z.number().int().min(0),
  handedOver: z.number().int().min(0).describe('Messages handed to the remaining pods.'),
  delivered: z.number().int().min(0).describe('Messages delivered by the pod itself (no pod remains).'),
  remaining: z.number().int().min(0).describe('Messages still in the pod\'s spool.'),
});

export const DrainStatus = z.strictObject({
  reason: z.enum(['ScaleIn', 'PoolDeleted']),
  fromReplicas: z.number().int().min(0),
  toReplicas: z.number().int().min(0),
  startedAt: z.string().max(64).describe('When the drain began; the timeout counts from here.'),
  finishedAt: z.string().max(64).optional(),
  outcome: z.enum(['Drained', 'DrainTimedOut', 'Cancelled']).optional(),
  pods: z.array(DrainedPod).max(1000),
});
export type DrainStatus = z.output<typeof DrainStatus>;

export const VirtualMtaPoolStatus = z.strictObject({
  observedGeneration: z.number().int().min(0).optional(),
  conditions: conditions.optional(),
  replicas: z.number().int().min(0).optional(),
  readyReplicas: z.number().int().min(0).optional(),
  selector: z.string().max(1024).optional().describe('Label selector of the pool\'s pods, as a string (for the scale subresource).'),
  configHash: z.string().max(128).optional().describe('sha256 of the rendered relay.yaml; ConfigApplied is True when every ready pod reports it.'),
  podTemplateHash: z.string().max(128).optional().describe('Hash of the cold fields on the pod template.'),
  virtualMtas: z.array(VirtualMtaSummary).max(1000).optional(),
  dkimKeys: z.array(DkimKeyStatus).max(2000).optional().describe('Per DKIM key: whether <selector>._domainkey.<domain> publishes its public key.'),
  drain: DrainStatus.optional().describe('The latest drain of pods leaving the pool, with counts per pod.'),
  warmup: z.array(WarmupSummary).max(10_000).optional().describe('Per VirtualMTA still warming (spec.virtualMtas[].warmup), and per provider group of its plan still warming: the plan\'s day and pool caps, and the use the ready pods report, summed (docs/warmup.md). Absent when none is warming.'),
});

export const VirtualMtaPool = z.strictObject({
  apiVersion: z.literal(API_GROUP_VERSION),
  kind: z.literal('VirtualMtaPool'),
  metadata: ObjectMeta,
  spec: VirtualMtaPoolSpec,
  status: VirtualMtaPoolStatus.optional(),
});
export type VirtualMtaPool = z.output<typeof VirtualMtaPool>;
