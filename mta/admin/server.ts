// The relay's admin HTTP server (node:http): liveness, readiness, Prometheus metrics, the
// config version in use, and whatever AdminHandlers features mount (queue control under
// /api/v1). Requests carrying the configured bearer token are marked `authorized`; handlers
// decide what needs it. JSON bodies are parsed here with a size limit; a streamed endpoint (the
// drain hand-over) reads its own body.
import { createHash, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ConfigStatus } from '../config/loader.ts';
import type { Logger } from '../observe/log.ts';
import type { RelayMetrics } from '../observe/metrics.ts';
import type { AdminHandler, AdminRequest, AdminResponse, StreamedAdminHandler } from './routes.ts';

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
  /** Bearer token for `authorized` requests; undefined authorizes none (reads still work). */
  token?: string;
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

/** The token in a mounted Secret file (trailing newline trimmed), or undefined without a file. */
export async function readAdminToken(file: string | undefined): Promise<string | undefined> {
  if (file === undefined) return undefined;
  let token: string;
  try {
    token = (await readFile(file, 'utf8')).trim();
  } catch (error) {
    throw new Error(`admin.tokenFile: cannot read ${file}: ${(error as Error).message}`);
  }
  if (token === '') throw new Error(`admin.tokenFile: ${file} is empty`);
  return token;
}

export class AdminServer {
  readonly #server: http.Server;
  readonly #options: AdminServerOptions;
  readonly #handlers: AdminHandler[] = [];
  readonly #streamed = new Map<string, StreamedAdminHandler>();
  #tokenDigest: Buffer | undefined;

  private constructor(options: AdminServerOptions) {
    this.#options = options;
    this.setToken(options.token);
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

  /** Add a feature's endpoints; handlers are asked in mount order after the built-in ones. */
  mount(handler: AdminHandler): void {
    this.#handlers.push(handler);
  }

  /** A POST endpoint that reads its own (non-JSON, possibly large) body. */
  mountStreamed(path: string, handler: StreamedAdminHandler): void {
    this.#streamed.set(path, handler);
  }

  /** Replace the bearer token (on config reload); undefined authorizes no request. */
  setToken(token: string | undefined): void {
    this.#tokenDigest = token === undefined ? undefined : digest(token);
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeAllConnections();
    await closed;
  }

  async #handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://admin');
    try {
      const builtIn = await this.#builtIn(request.method ?? 'GET', url.pathname, response);
      if (builtIn) return;
      const streamed = this.#streamed.get(url.pathname);
      if (streamed && request.method === 'POST') return sendJson(response, await streamed(request, this.#credentials(request.headers.authorization).authorized));
      const adminRequest: AdminRequest = {
        method: request.method ?? 'GET',
        path: url.pathname,
        query: url.searchParams,
        body: await this.#readJsonBody(request),
        ...this.#credentials(request.headers.authorization),
      };
      for (const handler of this.#handlers) {
        const answer = await handler(adminRequest);
        if (answer) return sendJson(response, answer);
      }
      sendJson(response, { status: 404, body: { error: `no such endpoint: ${request.method} ${url.pathname}` } });
    } catch (error) {
      if (error instanceof HttpError) return sendJson(response, { status: error.status, body: { error: error.message } });
      this.#options.logger.error({ err: error, path: url.pathname }, 'admin request failed');
      sendJson(response, { status: 500, body: { error: 'internal error' } });
    }
  }

  /** Health, readiness, metrics and config; true when the request was one of them. */
  async #builtIn(method: string, path: string, response: http.ServerResponse): Promise<boolean> {
    if (method !== 'GET' && method !== 'HEAD') return false;
    switch (path) {
      case '/healthz':
        sendJson(response, { status: 200, body: { status: 'alive', pid: process.pid } });
        return true;
      case '/readyz': {
        const readiness = this.#options.readiness();
        // The pid lets a supervisor tell its own relay from another one that holds the port.
        sendJson(response, readiness.ready ? { status: 200, body: { status: 'ready', pid: process.pid } } : { status: 503, body: { status: 'not ready', reason: readiness.reason, pid: process.pid } });
        return true;
      }
      case '/metrics': {
        const registry = this.#options.metrics.registry;
        const text = await registry.metrics();
        response.writeHead(200, { 'content-type': registry.contentType });
        response.end(text);
        return true;
      }
      case '/config':
        sendJson(response, { status: 200, body: this.#options.configStatus() });
        return true;
      default:
        return false;
    }
  }

  #credentials(header: string | undefined): Pick<AdminRequest, 'authorized' | 'credentials'> {
    // Closed by default: without a configured token no request may change the queues.
    if (this.#tokenDigest === undefined) return { authorized: false, credentials: 'unconfigured' };
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    if (!match?.[1]) return { authorized: false, credentials: header === undefined ? 'missing' : 'wrong' };
    const authorized = timingSafeEqual(digest(match[1]), this.#tokenDigest);
    return { authorized, credentials: authorized ? 'valid' : 'wrong' };
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

function sendJson(response: http.ServerResponse, answer: AdminResponse): void {
  const text = JSON.stringify(answer.body ?? null);
  response.writeHead(answer.status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}
