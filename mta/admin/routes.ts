// The admin API's route table: every endpoint is a method, a path (":name" stands for one path
// segment of [A-Za-z0-9._-]) and who may call it. The server finds the route, checks the caller's
// token against the route's access before anything else runs, and only then calls the handler,
// so an endpoint cannot be added without saying who may reach it.
import type { IncomingMessage } from 'node:http';

/**
 * open: anyone who reaches the port (kubelet probes, Prometheus, the operator's config-hash check);
 * read: the read-only token or the full admin token; write: the full admin token only.
 */
export type AdminAccess = 'open' | 'read' | 'write';

export type AdminMethod = 'GET' | 'POST' | 'DELETE';

export interface AdminRequest {
  method: string;
  /** Path without the query string, e.g. "/api/v1/queues". */
  path: string;
  /** The values of the route's ":name" segments, by name. */
  params: Record<string, string>;
  query: URLSearchParams;
  /** Parsed JSON body (undefined when none). */
  body: unknown;
}

export interface AdminResponse {
  status: number;
  /** Sent as JSON, or as is (a string) when `contentType` is given. */
  body: unknown;
  contentType?: string;
}

interface RouteBase {
  method: AdminMethod;
  /** e.g. "/api/v1/messages/:id" */
  path: string;
  access: AdminAccess;
}

/** An endpoint answering JSON to a parsed request. */
export interface JsonAdminRoute extends RouteBase {
  handle: (request: AdminRequest) => Promise<AdminResponse>;
}

/** An endpoint that reads the (non-JSON, possibly large) request body itself. */
export interface StreamedAdminRoute extends RouteBase {
  stream: (request: IncomingMessage) => Promise<AdminResponse>;
}

export type AdminRoute = JsonAdminRoute | StreamedAdminRoute;

/** What the caller's bearer token is: the full admin token, the read-only one, or why it is neither. */
export type AdminCredentials = 'full' | 'read' | 'wrong' | 'missing' | 'unconfigured';

const SEGMENT = '[A-Za-z0-9._-]{1,128}';

/** The route's path as a pattern whose named groups are its ":name" segments. */
function pathPattern(path: string): RegExp {
  const source = path
    .split('/')
    .map((segment) => (segment.startsWith(':') ? `(?<${segment.slice(1)}>${SEGMENT})` : segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('/');
  return new RegExp(`^${source}$`);
}

export type RouteMatch = { route: AdminRoute; params: Record<string, string> } | { status: 404 | 405; error: string };

/** The route for a request, or why there is none (404 no such path, 405 path known but not this method). HEAD is served as GET. */
export function matchRoute(routes: readonly AdminRoute[], method: string, path: string): RouteMatch {
  const wanted = method === 'HEAD' ? 'GET' : method;
  const onPath = routes.flatMap((route) => {
    const match = pathPattern(route.path).exec(path);
    return match ? [{ route, params: { ...match.groups } }] : [];
  });
  const found = onPath.find(({ route }) => route.method === wanted);
  if (found) return found;
  if (onPath.length === 0) return { status: 404, error: `no such endpoint: ${method} ${path}` };
  return { status: 405, error: `${path} takes ${[...new Set(onPath.map(({ route }) => route.method))].join(', ')}` };
}

export interface AccessRefusal {
  status: 401 | 403;
  error: string;
  /** For clients: token-missing, token-wrong, token-unconfigured or token-read-only. */
  reason: string;
}

const TOKEN_FIELDS = 'admin.tokenFile / admin.readTokenFile; in a cluster spec.admin.tokenSecretName / readTokenSecretName of the pool';

/** Why these credentials may not call a route of this access, or undefined when they may. */
export function accessRefusal(access: AdminAccess, credentials: AdminCredentials): AccessRefusal | undefined {
  if (access === 'open' || credentials === 'full' || (access === 'read' && credentials === 'read')) return undefined;
  const needs = access === 'read' ? 'the admin bearer token (or the admin read token)' : 'the admin bearer token';
  switch (credentials) {
    case 'read':
      return { status: 403, error: 'the read-only admin token cannot change anything; this call needs the admin token', reason: 'token-read-only' };
    case 'missing':
      return { status: 401, error: `this call needs ${needs}`, reason: 'token-missing' };
    case 'wrong':
      return { status: 401, error: `the bearer token given is not this relay's ${access === 'read' ? 'admin read token nor its admin token' : 'admin token'}`, reason: 'token-wrong' };
    case 'unconfigured':
      return { status: 401, error: `this relay has no admin token configured (${TOKEN_FIELDS}), so it refuses every call but health, readiness, metrics and config status`, reason: 'token-unconfigured' };
  }
}
