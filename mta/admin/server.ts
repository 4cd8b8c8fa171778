// The relay's admin HTTP server (node:http): liveness, readiness, Prometheus metrics, the
// config version in use, and the routes features mount (queue control, drain under /api/v1).
// Every request is matched against the route table (routes.ts) and its bearer token checked
// against the route's access (open, read, write) before the body is read or a handler runs.
// JSON bodies are parsed here with a size limit; a streamed route (the drain hand-over) reads its own.
import { createHash, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ConfigStatus } from '../config/loader.ts';
import type { Logger } from '../observe/log.ts';
import type { RelayMetrics } from '../observe/metrics.ts';
import { accessRefusal, matchRoute, type AdminCredentials, type AdminResponse, type AdminRoute, type JsonAdminRoute } from './routes.ts';

export interface Readiness {
  ready: boolean;
  /** Why not ready, e.g. "shutting down", "listeners not bound". */
  reason?: string;
}

export interface AdminServerOptions {
  address: string;
  port: number;
  metrics: RelayMetrics;
  logger: Logger;
  readiness: () => Readiness;
  configStatus: () => ConfigStatus;
  /** The full admin token (reads and changes); undefined admits none. */
  token?: string;
  /** The read-only admin token (GET routes of access "read"); undefined admits none. */
  readToken?: string;
  /** The /metrics text when more than `metrics` makes it (the session processes' registries merged in); omitted or undefined: `metrics` alone. */
  metricsText?: () => Promise<string> | undefined;
  /** Largest JSON body accepted (default 1 MiB). */
  maxBodyBytes?: number;
}

const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** The token in a mounted Secret file (trailing newline trimmed), or undefined without a file; errors name `field`. */
export async function readAdminToken(file: string | undefined, field: 'admin.tokenFile' | 'admin.readTokenFile' = 'admin.tokenFile'): Promise<string | undefined> {
  if (file === undefined) return undefined;
  let token: string;
  try {
    token = (await readFile(file, 'utf8')).trim();
  } catch (error) {
    throw new Error(`${field}: cannot read ${file}: ${(error as Error).message}`);
  }
  if (token === '') throw new Error(`${field}: ${file} is empty`);
  return token;
}

/** Both admin tokens of a config; the read token may not be the full one (it would grant changes to whoever holds "read-only"). */
export async function readAdminTokens(admin: { tokenFile?: string; readTokenFile?: string }): Promise<{ token: string | undefined; readToken: string | undefined }> {
  const token = await readAdminToken(admin.tokenFile, 'admin.tokenFile');
  const readToken = await readAdminToken(admin.readTokenFile, 'admin.readTokenFile');
  if (token !== undefined && token === readToken) throw new Error(`admin.readTokenFile: ${admin.readTokenFile} holds the same token as admin.tokenFile; a read-only token must differ from the full one`);
  return { token, readToken };
}

export class AdminServer {
  readonly #server: http.Server;
  readonly #options: AdminServerOptions;
  readonly #routes: AdminRoute[];
  #tokenDigest: Buffer | undefined;
  #readTokenDigest: Buffer | undefined;

  private constructor(options: AdminServerOptions) {
    this.#options = options;
    this.#routes = [...this.#builtInRoutes()];
    this.setTokens({ token: options.token, readToken: options.readToken });
    this.#server = http.createServer((request, response) => void this.#handle(request, response));
    // Probes and scrapers reconnect often; idle keep-alive sockets should not hold shutdown.
    this.#server.keepAliveTimeout = 5000;
  }

  static async start(options: AdminServerOptions): Promise<AdminServer> {
    const admin = new AdminServer(options);
    admin.#server.listen(options.port, options.address);
    await Promise.race([once(admin.#server, 'listening'), once(admin.#server, 'error').then(([error]) => Promise.reject(error as Error))]);
    return admin;
  }

  address(): AddressInfo {
    return this.#server.address() as AddressInfo;
  }

  /** Add a feature's endpoints; a method and path already in the table is a programming error. */
  mount(routes: readonly AdminRoute[]): void {
    for (const route of routes) {
      if (this.#routes.some((known) => known.method === route.method && known.path === route.path)) throw new Error(`admin route ${route.method} ${route.path} mounted twice`);
      this.#routes.push(route);
    }
  }

  /** Every endpoint with who may call it (the table requests are checked against). */
  routes(): readonly AdminRoute[] {
    return this.#routes;
  }

  /** Replace the tokens (on config reload); an undefined one admits no request. */
  setTokens(tokens: { token: string | undefined; readToken: string | undefined }): void {
    this.#tokenDigest = tokens.token === undefined ? undefined : digest(tokens.token);
    this.#readTokenDigest = tokens.readToken === undefined ? undefined : digest(tokens.readToken);
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeAllConnections();
    await closed;
  }

  async #handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://admin');
    try {
      const match = matchRoute(this.#routes, request.method ?? 'GET', url.pathname);
      if (!('route' in match)) return sendJson(response, { status: match.status, body: { error: match.error } });
      const { route, params } = match;
      // Access is decided before the body is read or the handler runs.
      const refusal = accessRefusal(route.access, this.#credentials(request.headers.authorization));
      if (refusal) return sendJson(response, { status: refusal.status, body: { error: refusal.error, reason: refusal.reason } });
      if ('stream' in route) return sendJson(response, await route.stream(request));
      const answer = await route.handle({ method: route.method, path: url.pathname, params, query: url.searchParams, body: await this.#readJsonBody(request) });
      sendJson(response, answer);
    } catch (error) {
      if (error instanceof HttpError) return sendJson(response, { status: error.status, body: { error: error.message } });
      this.#options.logger.error({ err: error, path: url.pathname }, 'admin request failed');
      sendJson(response, { status: 500, body: { error: 'internal error' } });
    }
  }

  /** Health, readiness, metrics and config status: open, so kubelet probes, Prometheus and the operator reach them without a token. */
  #builtInRoutes(): AdminRoute[] {
    const get = (path: string, handle: JsonAdminRoute['handle']): JsonAdminRoute => ({ method: 'GET', path, access: 'open', handle });
    return [
      get('/healthz', async () => ({ status: 200, body: { status: 'alive', pid: process.pid } })),
      get('/readyz', async () => {
        const readiness = this.#options.readiness();
        // The pid lets a supervisor tell its own relay from another one that holds the port.
        return readiness.ready ? { status: 200, body: { status: 'ready', pid: process.pid } } : { status: 503, body: { status: 'not ready', reason: readiness.reason, pid: process.pid } };
      }),
      get('/metrics', async () => {
        const registry = this.#options.metrics.registry;
        return { status: 200, contentType: registry.contentType, body: await (this.#options.metricsText?.() ?? registry.metrics()) };
      }),
      get('/config', async () => ({ status: 200, body: this.#options.configStatus() })),
    ];
  }

  #credentials(header: string | undefined): AdminCredentials {
    // Closed by default: without a configured token only the open routes answer.
    if (this.#tokenDigest === undefined && this.#readTokenDigest === undefined) return 'unconfigured';
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    if (!match?.[1]) return header === undefined ? 'missing' : 'wrong';
    const given = digest(match[1]);
    // Both comparisons always run, so timing does not tell which token a guess was closer to.
    const full = this.#tokenDigest !== undefined && timingSafeEqual(given, this.#tokenDigest);
    const read = this.#readTokenDigest !== undefined && timingSafeEqual(given, this.#readTokenDigest);
    return full ? 'full' : read ? 'read' : 'wrong';
  }

  async #readJsonBody(request: http.IncomingMessage): Promise<unknown> {
    const limit = this.#options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
    const declared = Number(request.headers['content-length'] ?? 0);
    if (declared > limit) throw new HttpError(413, `request body over ${limit} bytes`);
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of request as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) throw new HttpError(413, `request body over ${limit} bytes`);
      chunks.push(chunk);
    }
    if (size === 0) return undefined;
    try {
      return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
    } catch (error) {
      throw new HttpError(400, `request body is not valid JSON: ${(error as Error).message}`);
    }
  }
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

/** JSON, or the body as is when the answer names its own content type. */
function sendJson(response: http.ServerResponse, answer: AdminResponse): void {
  const text = answer.contentType === undefined ? JSON.stringify(answer.body ?? null) : String(answer.body);
  response.writeHead(answer.status, { 'content-type': answer.contentType ?? 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}
