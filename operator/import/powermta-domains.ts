// PowerMTA `<domain NAME>` blocks -> DomainSettings: use-starttls / require-starttls -> tlsPolicy,
// retry-after, bounce-after, max-smtp-out, max-msg-per-connection, max-msg-rate, route ->
// smtpHost (with auth-username and auth-password: a smarthost route on the route's port, its login
// in a kubernetes.io/basic-auth Secret, docs/smarthost.md), backoff-* with the reply patterns of the `<smtp-pattern-list>` the block names
// (entries with mode=backoff); `mx-rollup` -> the pool-wide spec.mxRollup. Everything else in a
// domain block is reported, never dropped.
import { BackoffSettings, DomainSettings } from '../api/domain-settings.ts';
import { domainPattern } from '../api/fields.ts';
import type { PmtaNode } from './powermta-config.ts';
import { reportDkimSign } from './powermta-dkim.ts';
import type { ImportReport } from './powermta-report.ts';
import { pmtaBoolean, pmtaDuration, pmtaRate, pmtaRoute } from './powermta-values.ts';

/** `<smtp-pattern-list NAME>` -> its `reply /regex/ mode=backoff` patterns. */
export type PatternLists = Map<string, string[]>;

const NOT_HERE: Record<string, string> = {
  'domain-key': 'a DKIM key signs by From domain, not by destination: put domain-key at the top level or in a <virtual-mta>',
  'dkim-identity': 'signatures carry no i= tag (the identity is the signing domain)',
  'backoff-notify': 'backoff changes are reported by metrics (vmta_delivery_backoff) and logs, not by mail',
  'connect-timeout': 'the relay\'s connection timeouts are fixed',
  'data-send-timeout': 'the relay\'s timeouts are fixed',
  'queue-priority': 'queues have no priorities',
  'deliver-local-dsn': 'DSNs are always delivered',
  'dsn-return-default': 'RET handling is not configurable',
  'ignore-8bitmime': 'the relay follows what the next hop advertises',
  'smtp-421-means-mx-unavailable': 'a 421 defers the destination; it is not configurable',
};

/** Settings a domain block may hold that are the pool's as a whole in the resources. */
export interface PoolWideSettings {
  mxRollup?: boolean;
  /** The login Secrets (kubernetes.io/basic-auth) the smarthost routes of the domain blocks name. */
  smarthostLogins?: SmarthostLogin[];
}

export interface SmarthostLogin {
  secretName: string;
  username: string;
  password: string;
}

/** A Secret name for the login of a domain's smarthost: "*" -> default, "*.example.com" -> any.example.com; a second login for one name gets a suffix. */
function loginSecretName(domain: string, logins: readonly SmarthostLogin[]): string {
  const base = `smarthost-login-${domain === '*' ? 'default' : domain.replace(/^\*\./, 'any.')}`;
  let name = base;
  for (let suffix = 2; logins.some((login) => login.secretName === name); suffix += 1) name = `${base}-${suffix}`;
  return name;
}

/** Converts one domain block; the block's own note is written by the caller. `inVirtualMta` when it is inside a <virtual-mta>. */
export function convertDomainBlock(block: PmtaNode, patternLists: PatternLists, report: ImportReport, poolWide: PoolWideSettings, inVirtualMta: boolean): DomainSettings | undefined {
  const name = block.args[0] ?? '';
  if (block.args.length !== 1 || !domainPattern.safeParse(name).success) {
    report.refused(block, `"${block.value}" is not a domain, "*.domain" or "*" (macros and address literals have no equivalent); the block is left out`);
    return undefined;
  }
  const settings: Record<string, unknown> = { domain: name.toLowerCase() };
  const backoff: Record<string, unknown> = {};
  let useStarttls: boolean | undefined;
  let requireStarttls: boolean | undefined;
  const tlsNodes: PmtaNode[] = [];
  const authNodes: Partial<Record<'auth-username' | 'auth-password', PmtaNode>> = {};
  for (const node of block.children ?? []) {
    try {
      switch (node.name) {
        case 'use-starttls':
          useStarttls = pmtaBoolean(node.value);
          tlsNodes.push(node);
          break;
        case 'require-starttls':
          requireStarttls = pmtaBoolean(node.value);
          tlsNodes.push(node);
          break;
        case 'retry-after':
          settings.retryAfter = pmtaDuration(node.value);
          report.mapped(node, `retryAfter: ${String(settings.retryAfter)}`);
          break;
        case 'bounce-after':
          settings.bounceAfter = pmtaDuration(node.value);
          report.mapped(node, `bounceAfter: ${String(settings.bounceAfter)}`);
          break;
        case 'max-smtp-out':
          settings.maxSmtpOut = positiveInteger(node.value);
          report.mapped(node, `maxSmtpOut: ${String(settings.maxSmtpOut)}`);
          break;
        case 'max-msg-per-connection': {
          const count = Number(node.value);
          if (count === 0) {
            report.approximated(node, '0 (unlimited) leaves maxMessagesPerConnection unset: the relay\'s default applies');
          } else {
            settings.maxMessagesPerConnection = positiveInteger(node.value);
            report.mapped(node, `maxMessagesPerConnection: ${String(settings.maxMessagesPerConnection)}`);
          }
          break;
        }
        case 'max-msg-rate':
        case 'backoff-max-msg-rate': {
          const { rate, approximation } = pmtaRate(node.value);
          const target = node.name === 'max-msg-rate' ? settings : backoff;
          if (rate !== undefined) target.maxMessageRate = rate;
          const field = node.name === 'max-msg-rate' ? 'maxMessageRate' : 'backoff.maxMessageRate';
          if (approximation) report.approximated(node, `${field}: ${approximation}`);
          else report.mapped(node, rate === undefined ? `${field} unset (unlimited)` : `${field}: ${rate}`);
          break;
        }
        case 'route':
        case 'smtp-hosts':
          settings.smtpHost = pmtaRoute(node.args[0] ?? '');
          if (node.args.length > 1) report.approximated(node, `smtpHost: ${String(settings.smtpHost)}; the other hosts (${node.args.slice(1).join(' ')}) are left out: one smarthost per domain`);
          else report.mapped(node, `smtpHost: ${String(settings.smtpHost)}`);
          break;
        case 'auth-username':
        case 'auth-password':
          authNodes[node.name] = node;
          break;
        case 'backoff-retry-after':
          backoff.retryAfter = pmtaDuration(node.value);
          report.mapped(node, `backoff.retryAfter: ${String(backoff.retryAfter)}`);
          break;
        case 'backoff-to-normal-after':
          backoff.returnAfter = pmtaDuration(node.value);
          report.mapped(node, `backoff.returnAfter: ${String(backoff.returnAfter)}`);
          break;
        case 'backoff-max-smtp-out':
          backoff.maxSmtpOut = positiveInteger(node.value);
          report.mapped(node, `backoff.maxSmtpOut: ${String(backoff.maxSmtpOut)}`);
          break;
        case 'backoff-to-normal-after-delivery':
          if (pmtaBoolean(node.value)) report.mapped(node, 'a successful delivery always ends backoff');
          else report.approximated(node, 'a successful delivery always ends backoff here; it cannot be turned off');
          break;
        case 'smtp-pattern-list': {
          const patterns = patternLists.get(node.value);
          if (!patterns) {
            report.refused(node, `no <smtp-pattern-list ${node.value}> is defined`);
          } else if (patterns.length === 0) {
            report.approximated(node, `<smtp-pattern-list ${node.value}> has no reply pattern with mode=backoff; only those are imported`);
          } else {
            backoff.replyPatterns = [...((backoff.replyPatterns as string[] | undefined) ?? []), ...patterns];
            report.mapped(node, `backoff.replyPatterns: ${patterns.join(', ')}`);
          }
          break;
        }
        case 'dkim-sign':
          reportDkimSign(node, report);
          break;
        case 'mx-rollup': {
          const on = pmtaBoolean(node.value);
          poolWide.mxRollup = (poolWide.mxRollup ?? false) || on;
          if (!on) report.mapped(node, 'no MX rollup (the default)');
          else if (name === '*' && !inVirtualMta) report.mapped(node, 'spec.mxRollup: true');
          else report.approximated(node, `spec.mxRollup: true is the pool's as a whole: every domain of every VirtualMTA is queued by MX host set, not only ${name}${inVirtualMta ? ' of this VirtualMTA' : ''}`);
          break;
        }
        default:
          report.refused(node, NOT_HERE[node.name] ?? 'no equivalent in a domain block of the resources');
      }
    } catch (error) {
      report.refused(node, (error as Error).message);
    }
  }
  if (authNodes['auth-username'] || authNodes['auth-password']) smarthostFromRoute(settings, authNodes, report, poolWide);
  const tlsPolicy = requireStarttls ? 'required' : useStarttls === true ? 'opportunistic' : useStarttls === false ? 'none' : undefined;
  if (tlsPolicy) settings.tlsPolicy = tlsPolicy;
  for (const node of tlsNodes) report.mapped(node, tlsPolicy ? `tlsPolicy: ${tlsPolicy} (use-starttls and require-starttls together)` : 'require-starttls no without use-starttls: the default TLS policy applies');
  if (Object.keys(backoff).length > 0) {
    if (!backoff.replyPatterns) {
      report.refused(block, 'backoff-* settings without an <smtp-pattern-list> of mode=backoff replies: nothing would start the backoff, so they are left out');
    } else {
      const parsed = BackoffSettings.safeParse(backoff);
      // The input, not parsed.data: the resource keeps PowerMTA's values and no filled-in defaults.
      if (parsed.success) settings.backoff = backoff;
      else report.refused(block, `backoff: ${parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; ')}`);
    }
  }
  const parsed = DomainSettings.safeParse(settings);
  if (!parsed.success) {
    report.refused(block, parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('; '));
    return undefined;
  }
  return settings as DomainSettings;
}

/**
 * A route with auth-username and auth-password becomes a smarthost route: the route's host and
 * port (465 implicit TLS, any other STARTTLS), TLS always, the login in a Secret. PowerMTA may
 * send AUTH without TLS; the resources never do.
 */
function smarthostFromRoute(settings: Record<string, unknown>, nodes: Partial<Record<'auth-username' | 'auth-password', PmtaNode>>, report: ImportReport, poolWide: PoolWideSettings): void {
  const [user, password] = [nodes['auth-username'], nodes['auth-password']];
  const route = settings.smtpHost as string | undefined;
  const refuse = (why: string) => {
    for (const node of [user, password]) if (node) report.refused(node, why);
  };
  if (!route) return refuse('AUTH applies to a smarthost: this block has no route or smtp-hosts');
  if (!user || !password || user.value === '' || password.value === '') return refuse('auth-username and auth-password go together, each with a value');
  const separator = route.lastIndexOf(':');
  const port = Number(route.slice(separator + 1));
  const logins = (poolWide.smarthostLogins ??= []);
  const secretName = loginSecretName(String(settings.domain), logins);
  logins.push({ secretName, username: user.value, password: password.value });
  delete settings.smtpHost;
  settings.smarthost = { hosts: [route.slice(0, separator).replace(/^\[(.*)\]$/, '$1')], ports: [{ port, tls: port === 465 ? 'implicit' : 'starttls' }], tlsPolicy: 'required', auth: { secretName } };
  report.approximated(user, `smarthost.auth.secretName: ${secretName} (a kubernetes.io/basic-auth Secret written beside the resources); the route becomes a smarthost on port ${port} with ${port === 465 ? 'implicit TLS' : 'STARTTLS'} required (AUTH is never sent in clear) and the certificate not checked (tlsPolicy: required; set verify when the host's certificate names it)`);
  report.mapped(password, `the password of Secret ${secretName}`);
}

/** `<smtp-pattern-list NAME>`: `reply /regex/ mode=backoff` lines; other modes are reported. */
export function readPatternList(block: PmtaNode, report: ImportReport): string[] {
  const patterns: string[] = [];
  for (const node of block.children ?? []) {
    const match = /^\/(.*)\/([a-z]*)\s+mode=(\S+)$/.exec(node.value);
    if (node.name !== 'reply' || !match) {
      report.refused(node, 'only `reply /regex/ mode=backoff` entries are imported');
      continue;
    }
    if (match[3] !== 'backoff') {
      report.refused(node, `mode=${match[3]} has no equivalent; only mode=backoff is imported`);
      continue;
    }
    if (match[2]!.includes('i')) {
      report.approximated(node, `backoff pattern ${match[1]} is matched case-sensitively (replyPatterns take no flags)`);
    } else {
      report.mapped(node, `backoff pattern ${match[1]}`);
    }
    patterns.push(match[1]!);
  }
  return patterns;
}

function positiveInteger(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new Error(`"${value}" is not a positive whole number`);
  return Number(value);
}
