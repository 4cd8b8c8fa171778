// How `vmta queue` reaches a relay's admin API: the base URL (a scheme is added when left out),
// the bearer token sent on every call, reads included (--token-file, $VMTA_ADMIN_TOKEN, or the
// one local mode made for that admin port; a read-only token does for list and show), and one call that turns every failure into a CliError with one line saying what failed
// and what to do, and the exit code of its kind.
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_LOCAL_WORK_DIR, findLocalAdminTokenFile } from '../operator/local/local-admin-token.ts';
import { CliError } from './exit-codes.ts';

export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:8025';
const PACKAGE_ROOT = fileURLToPath(new URL('..', import.meta.url));
const REQUEST_TIMEOUT_MS = 15_000;

/** `localhost:8025`, `8025` and `http://host:8025/` all name the same kind of base URL. */
export function adminBaseUrl(value: string): URL {
  const withScheme = /^\d+$/.test(value) ? `http://127.0.0.1:${value}` : /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new CliError('usage', `--admin: "${value}" is not a URL; give one like http://127.0.0.1:8025 or 127.0.0.1:8025`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new CliError('usage', `--admin: "${value}" is not an http or https URL; give one like http://127.0.0.1:8025`);
  url.pathname = url.pathname.replace(/\/+$/, '');
  return url;
}

export interface AdminToken {
  token: string;
  /** Where it came from, for messages: a file name or $VMTA_ADMIN_TOKEN. */
  source: string;
}

/** The token to send, or undefined when none is given and no local relay's token matches. */
export async function adminToken(tokenFile: string | undefined, base: URL): Promise<AdminToken | undefined> {
  if (tokenFile !== undefined) return { token: await readTokenFile(tokenFile, '--token-file'), source: tokenFile };
  const fromEnvironment = process.env.VMTA_ADMIN_TOKEN?.trim();
  if (fromEnvironment) return { token: fromEnvironment, source: '$VMTA_ADMIN_TOKEN' };
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(base.hostname)) return undefined;
  const port = Number(base.port || (base.protocol === 'https:' ? 443 : 80));
  for (const workDir of new Set([path.resolve(DEFAULT_LOCAL_WORK_DIR), path.join(PACKAGE_ROOT, DEFAULT_LOCAL_WORK_DIR)])) {
    const file = await findLocalAdminTokenFile(workDir, port);
    if (file) return { token: await readTokenFile(file, `local mode's token file`), source: file };
  }
  return undefined;
}

async function readTokenFile(file: string, what: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (error as Error).message;
    throw new CliError('usage', `${what} ${file}: cannot read it (${why}); give the file holding the pool's admin token (Secret spec.admin.tokenSecretName, or readTokenSecretName for list and show; key "token")`);
  }
  const token = text.trim();
  if (token === '') throw new CliError('usage', `${what} ${file} is empty; it should hold the pool's admin token`);
  return token;
}

export interface AdminCall {
  method?: 'GET' | 'POST';
  path: string;
  body?: unknown;
  token?: AdminToken;
}

/** One admin API call; the JSON answer of a 2xx, otherwise a CliError of the right kind. */
export async function callAdmin(base: URL, call: AdminCall): Promise<unknown> {
  const url = `${base.href.replace(/\/$/, '')}${call.path}`;
  let response: Response;
  try {
    response = await fetch(url, {
      method: call.method ?? 'GET',
      headers: { accept: 'application/json', ...(call.body === undefined ? {} : { 'content-type': 'application/json' }), ...(call.token ? { authorization: `Bearer ${call.token.token}` } : {}) },
      body: call.body === undefined ? undefined : JSON.stringify(call.body),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch (error) {
    throw new CliError('unreachable', `cannot reach the admin API at ${base.origin} (${networkReason(error)}); is the relay running there? Start it, forward its port (kubectl port-forward pod/POD 8025:8025) or pass --admin URL`);
  }
  const text = await response.text();
  let answer: unknown;
  try {
    answer = JSON.parse(text);
  } catch {
    throw new CliError('unreachable', `${base.origin} answered HTTP ${response.status} with a body that is not JSON: it is not a vmta relay's admin API; check --admin`);
  }
  if (response.ok) return answer;
  const { error = `HTTP ${response.status}`, reason } = (answer ?? {}) as { error?: string; reason?: string };
  throw refusal(response.status, error, reason, call.token);
}

function refusal(status: number, message: string, reason: string | undefined, token: AdminToken | undefined): CliError {
  switch (reason) {
    case 'token-missing':
      return new CliError('refused', `${message}: pass --token-file FILE (the pool's admin token Secret, or its read token Secret for list and show; key "token") or set VMTA_ADMIN_TOKEN`);
    case 'token-read-only':
      return new CliError('refused', `${message} (the token from ${token?.source ?? 'the request'} is the pool's read token); use spec.admin.tokenSecretName's Secret`);
    case 'token-wrong':
      return new CliError('refused', `${message} (the token from ${token?.source ?? 'the request'}); use the pool's current admin token (or read token) Secret`);
    case 'token-unconfigured':
      return new CliError('refused', `${message}; give the pool spec.admin.tokenSecretName, then pass that token with --token-file`);
    case 'not-found':
      return new CliError('notFound', message);
  }
  if (status === 401 || status === 403) return new CliError('refused', message);
  if (status === 404) return new CliError('unreachable', `${message}: the server at --admin is not a vmta relay's admin API (or an older one); check --admin`);
  if (status === 400) return new CliError('usage', message);
  return new CliError('failed', `the relay answered HTTP ${status}: ${message}`);
}

function networkReason(error: unknown): string {
  const name = (error as Error).name;
  if (name === 'TimeoutError' || name === 'AbortError') return `no answer within ${REQUEST_TIMEOUT_MS / 1000}s`;
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  switch (cause?.code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'no such host';
    case 'ECONNRESET':
      return 'connection reset';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'host unreachable';
    default:
      return cause?.message ?? (error as Error).message;
  }
}

/** The flags every admin command takes: where the admin API is, its token, JSON output, help. */
const ADMIN_COMMAND_OPTIONS = {
  admin: { type: 'string' },
  'token-file': { type: 'string' },
  json: { type: 'boolean', default: false },
  output: { type: 'string', short: 'o' },
  help: { type: 'boolean', short: 'h', default: false },
} as const satisfies ParseArgsOptionsConfig;

/**
 * Parse an admin command's arguments (its own flags plus the shared ones); a bad flag is a usage
 * error naming `vmta COMMAND --help`. Returns the values with `json` folded from `-o json` and
 * `admin` defaulted from $VMTA_ADMIN_URL.
 */
export function parseAdminCommand<T extends ParseArgsOptionsConfig>(command: string, argv: string[], options: T) {
  type Config = { args: string[]; allowPositionals: true; strict: true; options: T & typeof ADMIN_COMMAND_OPTIONS };
  let parsed: ReturnType<typeof parseArgs<Config>>;
  try {
    parsed = parseArgs<Config>({ args: argv, allowPositionals: true, strict: true, options: { ...options, ...ADMIN_COMMAND_OPTIONS } });
  } catch (error) {
    // node:util's message goes on about positional arguments; its first sentence is the news.
    throw new CliError('usage', `${(error as Error).message.split('. ')[0]}; vmta ${command} --help lists the options`);
  }
  const { values, positionals } = parsed;
  const shared = values as { output?: string; help?: boolean; json?: boolean; admin?: string; 'token-file'?: string };
  if (shared.output !== undefined && shared.output !== 'json') throw new CliError('usage', `-o: only "json" is supported (got "${shared.output}")`);
  return {
    values,
    positionals,
    help: shared.help === true,
    json: shared.json === true || shared.output === 'json',
    admin: shared.admin ?? process.env.VMTA_ADMIN_URL ?? DEFAULT_ADMIN_URL,
    tokenFile: shared['token-file'],
  };
}
