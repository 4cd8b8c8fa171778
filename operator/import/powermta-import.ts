// A PowerMTA configuration (read by powermta-config.ts) -> the equivalent SmtpListener, RelayPolicy
// and VirtualMtaPool resources plus the Secrets they name, and a report of every directive:
//   smtp-listener            one SmtpListener per port, its role from the port (25 relay, 587
//                            submission, 465 submissions, 2525 alternate)
//   <smtp-user>              a key of the users Secret; `default-virtual-mta` a routing rule
//   <source>                 require-auth / require-starttls-before-auth / always-allow-relaying /
//                            process-x-virtual-mta / default-virtual-mta on the RelayPolicies
//   relay-domain/-address    relayDomains / relayAddresses of the port-25 policy
//   <virtual-mta>            a VirtualMTA (smtp-source-host = source address + EHLO name)
//   <domain> outside a vmta  domainDefaults; inside one, that VirtualMTA's domains
//   domain-key, dkim-sign    spec.dkim.keys or a VirtualMTA's dkimKeys (powermta-dkim.ts)
// An open relay is never imported: a broad always-allow-relaying source is refused, not acknowledged.
import { DEFAULT_DKIM_SECRET_KEY } from '../api/dkim.ts';
import { RelayPolicy } from '../api/relay-policy.ts';
import { SmtpListener } from '../api/smtp-listener.ts';
import { VirtualMtaPool } from '../api/virtual-mta-pool.ts';
import { isOverlyBroad, parseAddressRange } from '../../mta/config/address-range.ts';
import { checkRelayAddress } from '../../mta/config/field-checks.ts';
import { API_GROUP_VERSION, domainPattern, objectName } from '../api/fields.ts';
import { importAcctFile } from './powermta-accounting.ts';
import type { PmtaNode } from './powermta-config.ts';
import { convertDomainKey, reportDkimSign, type DkimScope, type ImportedDkimKey, type ReadKeyFile } from './powermta-dkim.ts';
import { convertDomainBlock, readPatternList, type PatternLists, type PoolWideSettings } from './powermta-domains.ts';
import { ImportReport } from './powermta-report.ts';
import { pmtaBoolean, pmtaCidr, pmtaListenAddress } from './powermta-values.ts';

export interface ImportOptions {
  /** Name of the VirtualMtaPool (and the prefix of the other objects' names). */
  poolName: string;
  /** Reads the key files of `domain-key`; without it their Secrets are left for the user to fill. */
  readKeyFile?: ReadKeyFile;
}

export interface ImportResult {
  /** SmtpListeners, RelayPolicies, the VirtualMtaPool and the Secrets, in apply order. */
  resources: Record<string, unknown>[];
  report: ImportReport;
}

const ROLE_BY_PORT: Record<number, string> = { 25: 'relay', 587: 'submission', 465: 'submissions', 2525: 'alternate' };

/** Top-level directives whose job something else does here, with what differs. */
const DONE_OTHERWISE: Record<string, string> = {
  spool: 'the queue lives on the pool\'s spool volume (spec.spool: a PersistentVolumeClaim per pod, 10Gi unless set)',
  'log-file': 'the relay logs JSON lines to stdout (kubectl logs)',
  'http-mgmt-port': 'the relay\'s admin API is on port 8025, protected by spec.admin.tokenSecretName of the pool',
  'http-access': 'the relay\'s admin API is on port 8025, protected by spec.admin.tokenSecretName of the pool',
  'run-as-root': 'the relay runs unprivileged in its pod',
  'sync-msg-create': 'the relay always syncs a message before answering 250',
  'sync-msg-update': 'the relay always syncs delivery results',
  'smtp-server-tls-allow-tlsv1': 'the listeners speak TLS 1.2 and 1.3 only',
  'smtp-server-tls-allow-tlsv1.1': 'the listeners speak TLS 1.2 and 1.3 only',
};

const NOT_HERE: Record<string, string> = {
  postmaster: 'DSNs come from the pool\'s hostname; there is no postmaster setting',
  'http-redirect-to-https': 'the admin API is reached through the cluster network',
  'total-max-smtp-out': 'limits are per domain (maxSmtpOut), not for the whole process',
  'total-max-smtp-in': 'inbound limits are per listener (limits.maxConnections)',
  'dkim-identity': 'signatures carry no i= tag (the identity is the signing domain)',
};

interface Collected {
  listeners: { node: PmtaNode; address: string | undefined; port: number; implicitTls: boolean }[];
  certificate?: PmtaNode;
  users: Map<string, { password?: string; mechanisms: Set<string>; defaultVirtualMta?: string }>;
  relayDomains: string[];
  relayAddresses: string[];
  allowRelaying: string[];
  honorHeader: boolean;
  defaultVirtualMta?: { name: string; node: PmtaNode; scope: string | undefined };
  hostname?: string;
  defaultSource?: { address?: string; hostname?: string; node: PmtaNode };
  domainDefaults: Record<string, unknown>[];
  virtualMtas: Record<string, unknown>[];
  pools: Map<string, string[]>;
  dkimKeys: ImportedDkimKey['key'][];
  dkimScope: DkimScope;
  dkimSecrets: ImportedDkimKey['secret'][];
  poolWide: PoolWideSettings;
  accounting?: ReturnType<typeof importAcctFile>;
  options: ImportOptions;
}

export function importPowerMta(nodes: PmtaNode[], options: ImportOptions): ImportResult {
  const report = new ImportReport();
  const patternLists: PatternLists = new Map();
  // Pattern lists may be defined after the domain blocks that use them.
  for (const node of nodes) if (node.name === 'smtp-pattern-list' && node.children) patternLists.set(node.value, readPatternList(node, report));
  const collected: Collected = { listeners: [], users: new Map(), relayDomains: [], relayAddresses: [], allowRelaying: [], honorHeader: false, domainDefaults: [], virtualMtas: [], pools: new Map(), dkimKeys: [], dkimScope: { name: 'spec.dkim.keys', secretPrefix: `${options.poolName}-dkim`, seen: new Set() }, dkimSecrets: [], poolWide: {}, options };
  for (const node of nodes) {
    try {
      collect(node, collected, patternLists, report);
    } catch (error) {
      report.refused(node, (error as Error).message);
    }
  }
  return { resources: buildResources(collected, options, report), report };
}

function collect(node: PmtaNode, out: Collected, patternLists: PatternLists, report: ImportReport): void {
  switch (node.name) {
    case 'smtp-listener': {
      const listen = pmtaListenAddress(node.args[0] ?? '');
      const implicitTls = node.args.slice(1).some((option) => /^tls=(yes|true)$/i.test(option));
      out.listeners.push({ node, ...listen, implicitTls });
      return;
    }
    case 'smtp-server-tls-certificate':
      out.certificate = node;
      return;
    case 'smtp-user':
      return collectUser(node, out, report);
    case 'source':
      return collectSource(node, out, report);
    case 'relay-domain':
      for (const domain of node.args) {
        if (!domainPattern.safeParse(domain).success) throw new Error(`"${domain}" is not a domain or "*.domain"`);
        out.relayDomains.push(domain.toLowerCase());
      }
      report.mapped(node, 'relayDomains of the port-25 RelayPolicy');
      return;
    case 'relay-address': {
      const problem = checkRelayAddress(node.value);
      if (problem !== undefined) throw new Error(problem);
      const regex = /^\/(.*)\/([a-z]*)$/.exec(node.value);
      if (!regex) {
        out.relayAddresses.push(node.value);
        report.mapped(node, 'relayAddresses of the port-25 RelayPolicy');
        return;
      }
      // PowerMTA searches the address for the pattern; the relay matches a pattern against the
      // whole address (so /a@b\.com/ cannot match a@b.com.evil). Wrapping keeps PowerMTA's meaning.
      const whole = `/.*(?:${regex[1]}).*/${regex[2]}`;
      out.relayAddresses.push(whole);
      report.mapped(node, `relayAddresses of the port-25 RelayPolicy as ${whole}: the relay matches patterns against the whole address, PowerMTA searches within it`);
      return;
    }
    case 'host-name':
      out.hostname = node.value;
      report.mapped(node, 'hostname of the pool (greeting banners and Received headers)');
      return;
    case 'smtp-source-host': {
      const [address, hostname] = node.args;
      out.defaultSource = { address, hostname, node };
      return;
    }
    case 'domain': {
      const settings = convertDomainBlock(node, patternLists, report, out.poolWide, false);
      if (settings) {
        out.domainDefaults.push(settings);
        report.mapped(node, 'domainDefaults of the pool: the defaults of every VirtualMTA');
      }
      return;
    }
    case 'virtual-mta':
      return collectVirtualMta(node, out, patternLists, report);
    case 'virtual-mta-pool': {
      const members = (node.children ?? []).filter((child) => child.name === 'virtual-mta').map((child) => child.value);
      out.pools.set(node.value, members);
      for (const child of node.children ?? []) {
        if (child.name === 'virtual-mta') report.approximated(child, `a VirtualMTA of pool "${node.value}"; every VirtualMTA of the import is in one VirtualMtaPool`);
        else report.refused(child, 'no equivalent in a virtual-mta-pool');
      }
      report.approximated(node, 'its VirtualMTAs are members of the one imported VirtualMtaPool; route to them by name (a pool name in default-virtual-mta picks its first member)');
      return;
    }
    case 'smtp-pattern-list':
      report.mapped(node, 'read for the domain blocks that name it');
      return;
    case 'domain-key': {
      const imported = convertDomainKey(node, out.dkimScope, out.options.readKeyFile, report);
      if (imported) {
        out.dkimKeys.push(imported.key);
        out.dkimSecrets.push(imported.secret);
      }
      return;
    }
    case 'acct-file':
      out.accounting = importAcctFile(node, report);
      return;
    case 'dkim-sign':
      return reportDkimSign(node, report);
    default:
      if (DONE_OTHERWISE[node.name]) report.approximated(node, DONE_OTHERWISE[node.name]!);
      else report.refused(node, NOT_HERE[node.name] ?? 'no equivalent in the resources');
  }
}

function collectUser(node: PmtaNode, out: Collected, report: ImportReport): void {
  const name = node.args[0] ?? '';
  const user: { password?: string; mechanisms: Set<string>; defaultVirtualMta?: string } = { mechanisms: new Set(['PLAIN', 'LOGIN']) };
  for (const child of node.children ?? []) {
    if (child.name === 'password') {
      user.password = child.value;
      report.mapped(child, `the value of key "${name}" in the users Secret`);
    } else if (child.name === 'authentication-method') {
      const method = child.value.toLowerCase();
      if (method === 'password') report.mapped(child, 'AUTH PLAIN and LOGIN');
      else if (method === 'cram-md5') {
        user.mechanisms.add('CRAM-MD5');
        report.mapped(child, 'AUTH CRAM-MD5 offered on the submission listeners');
      } else report.refused(child, `authentication-method ${child.value} has no equivalent: users are checked against the Secret's passwords`);
    } else if (child.name === 'default-virtual-mta') {
      user.defaultVirtualMta = child.value;
      report.mapped(child, `a routing rule: user ${name} -> VirtualMTA ${child.value}`);
    } else if (child.name === 'source') {
      report.approximated(child, 'users authenticate on the submission listeners; per-user source rules have no equivalent');
    } else {
      report.refused(child, 'no equivalent for a user');
    }
  }
  if (!/^[-._a-zA-Z0-9@+]+$/.test(name)) throw new Error(`user name "${name}" cannot be a Secret key (letters, digits and . _ - @ +)`);
  if (user.password === undefined) throw new Error(`user "${name}" has no password; it is left out`);
  out.users.set(name, user);
  report.approximated(node, `user "${name}" in the users Secret; PowerMTA does not limit sender domains, so defaultAllowedSenderDomains is "*": narrow it per user in users.senders`);
}

function collectSource(node: PmtaNode, out: Collected, report: ImportReport): void {
  const spec = node.args[0] ?? '';
  const special = /^\{.*\}$/.test(spec);
  const range = special ? undefined : pmtaCidr(spec);
  const everyone = range !== undefined && /^(0\.0\.0\.0|::)\/0$/.test(range);
  for (const child of node.children ?? []) {
    try {
      collectSourceDirective(child, node, range, everyone, out, report);
    } catch (error) {
      report.refused(child, (error as Error).message);
    }
  }
  report.mapped(node, special ? `the special source ${spec}` : `clients in ${range}`);
}

function collectSourceDirective(child: PmtaNode, source: PmtaNode, range: string | undefined, everyone: boolean, out: Collected, report: ImportReport): void {
  const scope = everyone ? 'every client' : `clients of ${source.value} (approximated: the setting is the policy's, for every client)`;
  switch (child.name) {
    case 'always-allow-relaying':
      if (!pmtaBoolean(child.value)) return report.mapped(child, 'no relaying without AUTH (the default)');
      if (range === undefined) return report.refused(child, `${source.value} is not an address range`);
      const parsedRange = parseAddressRange(range);
      if (parsedRange.ok && isOverlyBroad(parsedRange.value)) return report.refused(child, `${range} is wider than a /8 (IPv4) or /16 (IPv6): relaying for it without AUTH is an open relay, so it is not imported`);
      out.allowRelaying.push(range);
      return report.mapped(child, `alwaysAllowRelaying: ${range} on the port-25 RelayPolicy`);
    case 'require-auth':
      if (pmtaBoolean(child.value)) return report.mapped(child, 'AUTH is required on the submission listeners (587, 465, 2525); port 25 relays only for relay-domain, relay-address and always-allow-relaying');
      return report.approximated(child, 'submission listeners always require AUTH; without AUTH, relaying is only for relay domains, relay addresses and alwaysAllowRelaying');
    case 'allow-starttls':
      if (pmtaBoolean(child.value)) return report.mapped(child, 'STARTTLS offered on every listener but 465 (implicit TLS)');
      return report.refused(child, 'STARTTLS cannot be turned off where AUTH is offered: credentials would cross in clear');
    case 'require-starttls-before-auth':
      if (pmtaBoolean(child.value)) return report.mapped(child, 'requireTlsForAuth: true');
      return report.refused(child, 'AUTH before TLS would read credentials in clear; requireTlsForAuth stays true');
    case 'allow-unencrypted-plain-auth':
      if (!pmtaBoolean(child.value)) return report.mapped(child, 'requireTlsForAuth: true');
      return report.refused(child, 'plain AUTH without TLS reads credentials in clear; it is never allowed');
    case 'process-x-virtual-mta':
      out.honorHeader = out.honorHeader || pmtaBoolean(child.value);
      return everyone || !pmtaBoolean(child.value) ? report.mapped(child, `routing.honorVirtualMtaHeader: ${child.value}`) : report.approximated(child, `routing.honorVirtualMtaHeader for ${scope}`);
    case 'default-virtual-mta':
      out.defaultVirtualMta = { name: child.value, node: child, scope: everyone ? undefined : scope };
      return;
    case 'smtp-service':
      if (pmtaBoolean(child.value)) return report.mapped(child, 'clients may connect');
      return report.approximated(child, 'refusing connections by address belongs to the Service (loadBalancerSourceRanges) or a NetworkPolicy');
    default:
      return report.refused(child, 'no equivalent for a source');
  }
}

function collectVirtualMta(node: PmtaNode, out: Collected, patternLists: PatternLists, report: ImportReport): void {
  const name = node.value;
  if (!objectName.safeParse(name).success) throw new Error(`"${name}" is not a lower-case name of letters, digits and "-"; rename it to import it`);
  const vmta: Record<string, unknown> = { name };
  const domains: Record<string, unknown>[] = [];
  const dkimKeys: ImportedDkimKey['key'][] = [];
  const dkimScope: DkimScope = { name: `dkimKeys of VirtualMTA ${name}`, secretPrefix: `${out.options.poolName}-dkim-${name}`, seen: new Set() };
  for (const child of node.children ?? []) {
    if (child.name === 'smtp-source-host') {
      const [address, hostname] = child.args;
      if (!address || !hostname) {
        report.refused(child, 'smtp-source-host needs an address and an EHLO name');
        continue;
      }
      vmta.sourceAddress = address;
      vmta.hostname = hostname;
      report.mapped(child, `sourceAddress: ${address}, hostname: ${hostname}`);
    } else if (child.name === 'domain') {
      const settings = convertDomainBlock(child, patternLists, report, out.poolWide, true);
      if (settings) {
        domains.push(settings);
        report.mapped(child, `domains of VirtualMTA ${name}, over the pool's domainDefaults`);
      }
    } else if (child.name === 'domain-key') {
      const imported = convertDomainKey(child, dkimScope, out.options.readKeyFile, report);
      if (imported) {
        dkimKeys.push(imported.key);
        out.dkimSecrets.push(imported.secret);
      }
    } else if (child.name === 'dkim-sign') {
      reportDkimSign(child, report);
    } else {
      report.refused(child, NOT_HERE[child.name] ?? 'no equivalent for a VirtualMTA');
    }
  }
  if (domains.length > 0) vmta.domains = domains;
  if (dkimKeys.length > 0) vmta.dkimKeys = dkimKeys;
  if (vmta.hostname === undefined) throw new Error(`virtual-mta ${name} has no smtp-source-host (address and EHLO name); it is left out`);
  out.virtualMtas.push(vmta);
  report.mapped(node, `VirtualMTA ${name}`);
}

function buildResources(c: Collected, options: ImportOptions, report: ImportReport): Record<string, unknown>[] {
  const pool = options.poolName;
  const tlsSecret = `${pool}-tls`;
  const usersSecret = `${pool}-users`;
  const meta = (name: string) => ({ name });
  const virtualMtas = [...c.virtualMtas];
  if (c.defaultSource) {
    const { address, hostname, node } = c.defaultSource;
    if (!hostname || virtualMtas.some((vmta) => vmta.name === 'default')) report.refused(node, 'the default source needs an address and an EHLO name, and a VirtualMTA named "default" must not exist');
    else {
      virtualMtas.unshift({ name: 'default', sourceAddress: address, hostname });
      report.approximated(node, 'VirtualMTA "default" (mail that names no VirtualMTA uses it, as PowerMTA uses its default source)');
    }
  }
  const names = new Set(virtualMtas.map((vmta) => vmta.name as string));
  const resolveVmta = (name: string | undefined): string | undefined => (name === undefined ? undefined : names.has(name) ? name : c.pools.get(name)?.find((member) => names.has(member)));
  const chosen = c.defaultVirtualMta;
  const defaultVirtualMta = (chosen && resolveVmta(chosen.name)) ?? (names.has('default') ? 'default' : undefined);
  if (chosen) {
    if (!resolveVmta(chosen.name)) report.refused(chosen.node, `no virtual-mta or virtual-mta-pool named "${chosen.name}"`);
    else if (!names.has(chosen.name)) report.approximated(chosen.node, `routing.defaultVirtualMta: ${defaultVirtualMta} (the first member of pool "${chosen.name}"; a default names one VirtualMTA)`);
    else if (chosen.scope) report.approximated(chosen.node, `routing.defaultVirtualMta for ${chosen.scope}`);
    else report.mapped(chosen.node, `routing.defaultVirtualMta: ${chosen.name}`);
  }
  const routing = {
    ...(c.honorHeader ? { honorVirtualMtaHeader: true } : {}),
    ...(defaultVirtualMta ? { defaultVirtualMta } : {}),
  };
  const rules = [...c.users].flatMap(([user, spec]) => {
    const virtualMta = resolveVmta(spec.defaultVirtualMta);
    return virtualMta ? [{ user, virtualMta }] : [];
  });
  const resources: Record<string, unknown>[] = [];
  const mechanisms = [...new Set([...c.users.values()].flatMap((user) => [...user.mechanisms]))].sort();

  const ports = new Map<number, Collected['listeners']>();
  for (const listener of c.listeners) ports.set(listener.port, [...(ports.get(listener.port) ?? []), listener]);
  let submissionPolicy = false;
  let relayPolicy = false;
  for (const [port, group] of [...ports].sort((a, b) => a[0] - b[0])) {
    const implicit = group.some((listener) => listener.implicitTls);
    const role = implicit ? 'submissions' : (ROLE_BY_PORT[port] ?? (c.users.size > 0 ? 'alternate' : 'relay'));
    const submission = role !== 'relay';
    const spec: Record<string, unknown> = { role, tls: { secretName: tlsSecret }, relayPolicyRef: { name: `${pool}-${submission ? 'submission' : 'relay'}` }, poolRef: { name: pool } };
    if (ROLE_BY_PORT[port] !== role) spec.port = port;
    if (submission && mechanisms.length > 0) spec.auth = { mechanisms };
    submissionPolicy ||= submission;
    relayPolicy ||= !submission;
    resources.push({ apiVersion: API_GROUP_VERSION, kind: 'SmtpListener', metadata: meta(`${pool}-smtp-${port}`), spec });
    for (const listener of group) {
      const where = listener.address ? ` on ${listener.address}` : '';
      if (group.length > 1 || listener.address) report.approximated(listener.node, `SmtpListener ${pool}-smtp-${port} (${role}); pods listen on every address and the Service decides where clients reach it${where ? ` (was${where})` : ''}`);
      else report.mapped(listener.node, `SmtpListener ${pool}-smtp-${port} (${role})`);
    }
  }
  if (c.certificate) report.approximated(c.certificate, `Secret ${tlsSecret} (kubernetes.io/tls): create it from the file with kubectl create secret tls ${tlsSecret} --cert=${c.certificate.args[0] ?? 'CERT'} --key=KEY`);

  if (relayPolicy) {
    resources.push({ apiVersion: API_GROUP_VERSION, kind: 'RelayPolicy', metadata: meta(`${pool}-relay`), spec: compact({ relayDomains: c.relayDomains, relayAddresses: c.relayAddresses, alwaysAllowRelaying: c.allowRelaying, routing: compact(routing) }) });
  }
  if (submissionPolicy) {
    const users = c.users.size > 0 ? { secretName: usersSecret, defaultAllowedSenderDomains: ['*'] } : undefined;
    resources.push({ apiVersion: API_GROUP_VERSION, kind: 'RelayPolicy', metadata: meta(`${pool}-submission`), spec: compact({ requireTlsForAuth: true, users, routing: compact({ ...routing, rules }) }) });
  }
  resources.push({ apiVersion: API_GROUP_VERSION, kind: 'VirtualMtaPool', metadata: meta(pool), spec: compact({ hostname: c.hostname ?? c.defaultSource?.hostname, virtualMtas, domainDefaults: c.domainDefaults, mxRollup: c.poolWide.mxRollup === true ? true : undefined, accounting: c.accounting, dkim: c.dkimKeys.length > 0 ? { keys: c.dkimKeys } : undefined }) });
  resources.push({ apiVersion: 'v1', kind: 'Secret', metadata: meta(tlsSecret), type: 'kubernetes.io/tls', stringData: { 'tls.crt': '', 'tls.key': '' } });
  if (c.users.size > 0) {
    resources.push({ apiVersion: 'v1', kind: 'Secret', metadata: meta(usersSecret), type: 'Opaque', stringData: Object.fromEntries([...c.users].map(([name, user]) => [name, user.password])) });
  }
  for (const login of c.poolWide.smarthostLogins ?? []) {
    resources.push({ apiVersion: 'v1', kind: 'Secret', metadata: meta(login.secretName), type: 'kubernetes.io/basic-auth', stringData: { username: login.username, password: login.password } });
  }
  for (const secret of c.dkimSecrets) {
    resources.push({ apiVersion: 'v1', kind: 'Secret', metadata: meta(secret.name), type: 'Opaque', stringData: { [DEFAULT_DKIM_SECRET_KEY]: secret.pem } });
  }
  for (const vmta of virtualMtas) {
    const name = vmta.name as string;
    if (name !== defaultVirtualMta && !c.honorHeader && !rules.some((rule) => rule.virtualMta === name)) {
      report.warnings.push(`VirtualMTA ${name} gets no mail: nothing routes to it (process-x-virtual-mta, default-virtual-mta of a source or user), as in the original; add a routing rule to the RelayPolicies`);
    }
  }
  validate(resources);
  return resources;
}

/** Every imported resource must pass the same schema as the API server; anything else is a bug here. */
function validate(resources: Record<string, unknown>[]): void {
  const schemas = { SmtpListener, RelayPolicy, VirtualMtaPool } as const;
  for (const resource of resources) {
    const schema = schemas[resource.kind as keyof typeof schemas];
    const parsed = schema?.safeParse(resource);
    if (parsed && !parsed.success) {
      const name = (resource.metadata as { name: string }).name;
      throw new Error(`the imported ${String(resource.kind)} "${name}" is not valid: ${parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; ')}`);
    }
  }
}

function compact(object: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined && !(Array.isArray(value) && value.length === 0) && !(typeof value === 'object' && value !== null && !Array.isArray(value) && Object.keys(value).length === 0)));
}
