// The operator's one door to the API server: typed REST calls (list, get, create, update,
// server-side apply, merge patch, delete) over node:http(s) with the credentials of a
// @kubernetes/client-node KubeConfig, and watches through the library's Watch. Every request is
// checked against OPERATOR_PERMISSIONS, so the RBAC Role is exactly what the code uses.
import http from 'node:http';
import https from 'node:https';
import { KubeConfig, Watch } from '@kubernetes/client-node';
import { apiVersionOf, isPermitted, resourcePath, resourceTypeOf, type ResourceType, type Verb } from './resources.ts';
import type { KubeList, KubeObject } from './types.ts';
import { FIELD_MANAGER } from '../render/layout.ts';

export class KubeApiError extends Error {
  readonly statusCode: number;
  readonly reason: string;
  constructor(statusCode: number, reason: string, message: string) {
    super(message);
    this.name = 'KubeApiError';
    this.statusCode = statusCode;
    this.reason = reason;
  }
}

export function isNotFound(error: unknown): boolean {
  return error instanceof KubeApiError && error.statusCode === 404;
}

export function isConflict(error: unknown): boolean {
  return error instanceof KubeApiError && error.statusCode === 409;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface WatchHandle {
  abort(): void;
}

export interface ListOptions {
  namespace?: string;
  labelSelector?: string;
}

/** Loads in-cluster config when running in a pod, else KUBECONFIG / ~/.kube/config. */
export function loadKubeConfig(kubeconfigPath?: string): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfigPath) kc.loadFromFile(kubeconfigPath);
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new Error('no Kubernetes cluster configured: set KUBECONFIG or run in a pod with a service account');
  return kc;
}

export class KubeClient {
  readonly config: KubeConfig;
  private readonly server: URL;
  private readonly watcher: Watch;
  private agent: http.Agent | undefined;
  private readonly userAgent: string;

  /** `userAgent` names this instance in the API server's audit log (e.g. the leader identity). */
  constructor(config: KubeConfig, options: { userAgent?: string } = {}) {
    this.config = config;
    this.userAgent = options.userAgent ?? FIELD_MANAGER;
    const cluster = config.getCurrentCluster();
    if (!cluster) throw new Error('KubeConfig has no current cluster');
    this.server = new URL(cluster.server);
    this.watcher = new Watch(config);
  }

  async list<T extends KubeObject>(type: ResourceType, options: ListOptions = {}): Promise<KubeList<T>> {
    const query = new URLSearchParams();
    if (options.labelSelector) query.set('labelSelector', options.labelSelector);
    const items: T[] = [];
    let resourceVersion: string | undefined;
    let continueToken: string | undefined;
    do {
      if (continueToken) query.set('continue', continueToken);
      query.set('limit', '500');
      const page = await this.request<KubeList<T>>(type, 'list', 'GET', resourcePath(type, options.namespace), query);
      const apiVersion = apiVersionOf(type);
      for (const item of page.items) items.push({ ...item, apiVersion, kind: type.kind });
      resourceVersion = page.metadata.resourceVersion;
      continueToken = page.metadata.continue || undefined;
    } while (continueToken);
    return { metadata: { resourceVersion }, items };
  }

  async get<T extends KubeObject>(type: ResourceType, namespace: string | undefined, name: string): Promise<T> {
    return this.request<T>(type, 'get', 'GET', resourcePath(type, namespace, name));
  }

  async create<T extends KubeObject>(object: T): Promise<T> {
    const type = resourceTypeOf(object.apiVersion, object.kind);
    return this.request<T>(type, 'create', 'POST', resourcePath(type, object.metadata.namespace), undefined, { contentType: 'application/json', body: object });
  }

  /** PUT with the object's resourceVersion: fails with 409 when someone else wrote first. */
  async update<T extends KubeObject>(object: T): Promise<T> {
    const type = resourceTypeOf(object.apiVersion, object.kind);
    return this.request<T>(type, 'update', 'PUT', resourcePath(type, object.metadata.namespace, object.metadata.name), undefined, { contentType: 'application/json', body: object });
  }

  /** Server-side apply as FIELD_MANAGER; `force` takes over fields another manager owns. */
  async apply<T extends KubeObject>(object: KubeObject, options: { force?: boolean; subresource?: 'status' } = {}): Promise<T> {
    const type = resourceTypeOf(object.apiVersion, object.kind);
    const query = new URLSearchParams({ fieldManager: FIELD_MANAGER });
    if (options.force) query.set('force', 'true');
    const path = resourcePath(type, object.metadata.namespace, object.metadata.name, options.subresource);
    // An apply of an object that does not exist creates it: the API server checks `create` then.
    if (!options.subresource) this.permit(type, 'create');
    return this.request<T>(type, 'patch', 'PATCH', path, query, { contentType: 'application/apply-patch+yaml', body: object }, options.subresource);
  }

  /** JSON merge patch (RFC 7386), e.g. of a status through the /status subresource. */
  async mergePatch<T extends KubeObject>(type: ResourceType, namespace: string | undefined, name: string, patch: object, subresource?: 'status'): Promise<T> {
    const query = new URLSearchParams({ fieldManager: FIELD_MANAGER });
    return this.request<T>(type, 'patch', 'PATCH', resourcePath(type, namespace, name, subresource), query, { contentType: 'application/merge-patch+json', body: patch }, subresource);
  }

  async delete(type: ResourceType, namespace: string | undefined, name: string): Promise<void> {
    const body = { kind: 'DeleteOptions', apiVersion: 'v1', propagationPolicy: 'Background' };
    await this.request(type, 'delete', 'DELETE', resourcePath(type, namespace, name), undefined, { contentType: 'application/json', body });
  }

  /**
   * Opens a watch from `resourceVersion` with bookmarks. `onEvent` gets each event; `onDone`
   * gets called once when the stream ends (null) or fails (the error).
   */
  async watch(
    type: ResourceType,
    options: ListOptions & { resourceVersion: string },
    onEvent: (type: WatchEventType, object: KubeObject) => void,
    onDone: (error: unknown) => void,
  ): Promise<WatchHandle> {
    this.permit(type, 'watch');
    const query: Record<string, string> = { resourceVersion: options.resourceVersion, allowWatchBookmarks: 'true' };
    if (options.labelSelector) query.labelSelector = options.labelSelector;
    const controller = await this.watcher.watch(
      resourcePath(type, options.namespace),
      query,
      (phase: string, object: KubeObject) => onEvent(phase as WatchEventType, object),
      onDone,
    );
    return { abort: () => controller.abort() };
  }

  private permit(type: ResourceType, verb: Verb, subresource?: string): void {
    const resource = subresource ? `${type.plural}/${subresource}` : type.plural;
    if (!isPermitted(type.group, resource, verb)) {
      throw new Error(`operator RBAC does not grant "${verb}" on ${type.group || 'core'}/${resource}: declare it in OPERATOR_PERMISSIONS`);
    }
  }

  private async request<T>(
    type: ResourceType,
    verb: Verb,
    method: string,
    path: string,
    query?: URLSearchParams,
    payload?: { contentType: string; body: unknown },
    subresource?: string,
  ): Promise<T> {
    this.permit(type, verb, subresource);
    const options: https.RequestOptions = { method, headers: { accept: 'application/json', 'user-agent': this.userAgent } };
    await this.config.applyToHTTPSOptions(options);
    const isHttps = this.server.protocol === 'https:';
    this.agent ??= isHttps
      ? new https.Agent({ keepAlive: true, ca: options.ca, cert: options.cert, key: options.key, rejectUnauthorized: options.rejectUnauthorized, servername: options.servername })
      : new http.Agent({ keepAlive: true });
    options.agent = this.agent;
    options.hostname = this.server.hostname.replace(/^\[|\]$/g, '');
    options.port = this.server.port || (isHttps ? 443 : 80);
    const prefix = this.server.pathname.replace(/\/$/, '');
    options.path = `${prefix}${path}${query && [...query.keys()].length > 0 ? `?${query}` : ''}`;
    const bodyText = payload === undefined ? undefined : JSON.stringify(payload.body);
    if (payload) options.headers = { ...options.headers, 'content-type': payload.contentType, 'content-length': Buffer.byteLength(bodyText!) };
    const { statusCode, text } = await new Promise<{ statusCode: number; text: string }>((resolve, reject) => {
      const req = (isHttps ? https : http).request(options, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ statusCode: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      req.setTimeout(30_000, () => req.destroy(new Error(`${method} ${path}: no answer within 30 s`)));
      req.on('error', reject);
      req.end(bodyText);
    });
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (statusCode < 200 || statusCode >= 300) {
      const status = (parsed ?? {}) as { reason?: string; message?: string };
      throw new KubeApiError(statusCode, status.reason ?? 'Unknown', `${method} ${path}: ${statusCode} ${status.message ?? text.slice(0, 200)}`);
    }
    return parsed as T;
  }
}
