// How features plug HTTP endpoints into the admin server without knowing about it: a handler
// gets a parsed request and answers JSON, or undefined when the path is not its own.
import type { IncomingMessage } from 'node:http';

export interface AdminRequest {
  method: string;
  /** Path without the query string, e.g. "/api/v1/queues". */
  path: string;
  query: URLSearchParams;
  /** Parsed JSON body (undefined when none). */
  body: unknown;
  /** True when the request carried the admin bearer token; always false when none is configured. */
  authorized: boolean;
  /** Why a request is not authorized, so a refusal can say what to fix. */
  credentials: AdminCredentials;
}

/** valid: the configured token; wrong: a bearer token that is not it; missing: none given; unconfigured: the relay has no token. */
export type AdminCredentials = 'valid' | 'wrong' | 'missing' | 'unconfigured';

export interface AdminResponse {
  status: number;
  body: unknown;
}

export type AdminHandler = (request: AdminRequest) => Promise<AdminResponse | undefined>;

/** An endpoint that reads the request body itself; `authorized` as for AdminRequest. */
export type StreamedAdminHandler = (request: IncomingMessage, authorized: boolean) => Promise<AdminResponse>;
