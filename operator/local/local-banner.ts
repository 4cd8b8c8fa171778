// What `vmta local` prints when a pool is ready: its listeners, users, certificate, the config
// hash its /config reports, where the admin token is, a first-message command that works as
// printed, what becomes of the mail (real MX lookups; each attempt logged with its outcome), and
// warnings about resources that load but cannot send (a user with no sender domain).
import path from 'node:path';
import type { ResolvedListener } from '../api/smtp-listener.ts';
import { DEFAULT_LOCAL_WORK_DIR } from './local-admin-token.ts';
import { localSecretDir } from './local-config.ts';
import type { LocalEndpoint } from './local-mode.ts';
import type { ResourceSet } from './resource-files.ts';

export interface PoolBanner {
  poolName: string;
  adminPort: number;
  /** sha256 of the local relay.yaml (what /config reports). */
  configHash: string;
  /** sha256 of the ConfigMap's relay.yaml (what the operator would report in a cluster). */
  renderedConfigHash: string;
  tokenFile: string | undefined;
  endpoints: LocalEndpoint[];
  workDir: string;
  resources: ResourceSet;
}

/** A path as the user can type it from here: relative when below the current directory. */
function shown(file: string): string {
  const relative = path.relative(process.cwd(), file);
  return relative.startsWith('..') || path.isAbsolute(relative) ? file : relative;
}

function describeListener(resolved: ResolvedListener): string {
  const tls = resolved.tlsMode === 'implicit' ? 'implicit TLS' : resolved.tlsMode === 'none' ? 'no TLS' : resolved.tlsRequired ? 'STARTTLS required' : 'STARTTLS offered';
  const auth = resolved.authMechanisms.length === 0 ? 'no AUTH' : `AUTH ${resolved.authMechanisms.join(' ')}${resolved.authRequired ? ' required' : ''}`;
  return `${resolved.role}: ${tls}, ${auth}`;
}

/** Users of the Secret a policy names, with the sender domains the policy lets them use. */
function policyUsers(resources: ResourceSet): Array<{ user: string; secret: string; file: string; policy: string; domains: string[] }> {
  return resources.policies.flatMap((policy) => {
    const users = policy.spec.users;
    const secret = users && resources.secrets.find((candidate) => candidate.name === users.secretName);
    if (!users || !secret) return [];
    return [...secret.data.keys()].map((user) => ({
      user,
      secret: secret.name,
      file: secret.file,
      policy: policy.metadata.name,
      domains: users.senders?.find((entry) => entry.user === user)?.allowedSenderDomains ?? users.defaultAllowedSenderDomains ?? [],
    }));
  });
}

/** One line per user who can log in but may send from no domain (every MAIL FROM gets 553). */
export function senderWarnings(resources: ResourceSet): string[] {
  return policyUsers(resources)
    .filter((entry) => entry.domains.length === 0)
    .map((entry) => `user "${entry.user}" (Secret ${entry.secret}) may send from no domain under RelayPolicy "${entry.policy}": every message it sends is refused with 553; list it in spec.users.senders or set spec.users.defaultAllowedSenderDomains`);
}

/** vmta queue finds the token of a local relay in the default work dir by itself; elsewhere it is named. */
function queueCommand(admin: string, tokenFile: string, workDir: string): string {
  const found = path.resolve(workDir) === path.resolve(DEFAULT_LOCAL_WORK_DIR);
  return `bin/vmta.js queue list --admin ${admin}${found ? '' : ` --token-file ${shown(tokenFile)}`} (the admin token is in ${shown(tokenFile)}${found ? ', vmta queue finds it by itself' : ''}; pause, resume, retry, bounce and delete need it)`;
}

function resolvers(resources: ResourceSet, poolName: string): string {
  const servers = resources.pools.find((pool) => pool.metadata.name === poolName)?.spec.resolvers ?? [];
  return servers.length > 0 ? `the pool's resolvers (${servers.join(', ')})` : 'this machine\'s DNS';
}

export function describePool(banner: PoolBanner): string {
  const { poolName, adminPort, endpoints, workDir, resources } = banner;
  const width = Math.max(...endpoints.map((endpoint) => endpoint.listener.length), 8);
  const lines = endpoints.map((endpoint) => {
    const clusterNote = endpoint.clusterPort !== endpoint.port ? ` (port ${endpoint.clusterPort} in a cluster)` : '';
    return `  ${endpoint.listener.padEnd(width)}  ${endpoint.url.padEnd(26)} ${describeListener(endpoint.resolved)}${clusterNote}`;
  });
  const tlsSecrets = new Set(resources.listeners.filter((listener) => listener.spec.poolRef.name === poolName).flatMap((listener) => listener.spec.tls?.secretName ?? []));
  const users = policyUsers(resources);
  const submission = endpoints.find((endpoint) => endpoint.resolved.role === 'submission') ?? endpoints.find((endpoint) => endpoint.resolved.tlsMode === 'starttls' && endpoint.resolved.authRequired);
  const sender = users.flatMap((entry) => entry.domains.filter((domain) => !domain.includes('*')).map((domain) => ({ ...entry, domain })))[0];
  const passwordFile = sender && path.join(localSecretDir(workDir, sender.secret), sender.user);
  const firstMessage = submission && sender && passwordFile
    ? [`  first message: python3 -c "import smtplib, ssl; s = smtplib.SMTP('127.0.0.1', ${submission.port}); s.starttls(context=ssl._create_unverified_context()); s.login('${sender.user}', open('${shown(passwordFile)}').read().strip()); s.mail('${sender.user}@${sender.domain}'); s.rcpt('someone@example.net'); print(s.data(b'Subject: hello\\r\\n\\r\\nfirst message\\r\\n')[1].decode())"`]
    : [];
  const admin = `http://127.0.0.1:${adminPort}`;
  return [
    `pool "${poolName}" is ready; admin and metrics at ${admin}`,
    ...lines,
    ...(users.length > 0 ? [`  users: ${[...new Set(users.map((entry) => `${entry.user} (Secret ${entry.secret}, ${path.basename(entry.file)})`))].join(', ')}`] : []),
    ...[...tlsSecrets].map((secret) => `  certificate: ${shown(path.join(localSecretDir(workDir, secret), 'tls.crt'))} (trust it, or skip verification for a self-signed one)`),
    `  configHash: ${banner.configHash} (${admin}/config reports the same; the ConfigMap in a cluster would be ${banner.renderedConfigHash.slice(0, 12)}..., it differs by local paths and ports)`,
    ...(banner.tokenFile ? [`  queue control: ${queueCommand(admin, banner.tokenFile, workDir)}`] : []),
    ...firstMessage,
    `  delivery: for real, to the MX hosts ${resolvers(resources, poolName)} names; each attempt is a line below ("delivered", "deferred" with its retry, "bounced" with the reason: a domain that does not resolve bounces at once, and its DSN to the sender is logged too)`,
  ].join('\n');
}
