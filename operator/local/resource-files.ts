// Reading resources from a folder of YAML files (multi-document), as `kubectl apply -f DIR`
// would: vmta.dev kinds are validated with the same schemas as the CRDs, Secrets are kept with
// their decoded values for local mode. Errors name the file, the object and the field.
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { parseVmtaResource } from '../api/parse.ts';
import type { RelayPolicy } from '../api/relay-policy.ts';
import type { SmtpListener } from '../api/smtp-listener.ts';
import type { VirtualMtaPool } from '../api/virtual-mta-pool.ts';
import type { SecretSummary } from '../render/runtime-config.ts';
import { userSecretVerdict } from '../../mta/config/user-secrets.ts';

export interface LocalSecret {
  name: string;
  type: string;
  /** Values decoded from `data` (base64) and `stringData`, as the kubelet would write them to files. */
  data: Map<string, Buffer>;
  file: string;
}

export interface ResourceSet {
  pools: VirtualMtaPool[];
  listeners: SmtpListener[];
  policies: RelayPolicy[];
  secrets: LocalSecret[];
}

export interface LoadedResources {
  resources: ResourceSet;
  /** "examples/listeners.yaml: SmtpListener "submission": spec.tls.mode: ... (got "implicit")". */
  errors: string[];
  files: string[];
}

export function secretSummaries(secrets: LocalSecret[]): SecretSummary[] {
  return secrets.map((secret) => ({ name: secret.name, keys: [...secret.data.keys()], userSecrets: Object.fromEntries([...secret.data].map(([key, value]) => [key, userSecretVerdict(value, `key "${key}"`)])) }));
}

/** Every *.yaml / *.yml / *.json file directly in `dir`, sorted (like kubectl apply -f DIR). */
export async function loadResourceDir(dir: string): Promise<LoadedResources> {
  const names = (await readdir(dir)).filter((name) => /\.(ya?ml|json)$/.test(name)).sort();
  const files = names.map((name) => path.join(dir, name));
  const loaded: LoadedResources = { resources: { pools: [], listeners: [], policies: [], secrets: [] }, errors: [], files };
  for (const file of files) addFile(loaded, file, await readFile(file, 'utf8'));
  checkDuplicates(loaded);
  return loaded;
}

function addFile(loaded: LoadedResources, file: string, text: string): void {
  parseAllDocuments(text).forEach((document, index) => {
    const where = `${file} (document ${index + 1})`;
    if (document.errors.length > 0) {
      loaded.errors.push(`${where}: not valid YAML: ${yamlErrorWithExcerpt(document.errors[0]!.message)}`);
      return;
    }
    const raw: unknown = document.toJS();
    if (raw === null || raw === undefined) return;
    if (typeof raw !== 'object' || Array.isArray(raw)) {
      loaded.errors.push(`${where}: expected a Kubernetes object`);
      return;
    }
    const object = raw as Record<string, unknown>;
    const metadata = (object.metadata ?? {}) as Record<string, unknown>;
    const label = `${String(object.kind ?? '(no kind)')} "${String(metadata.name ?? '(no name)')}"`;
    if (object.apiVersion === 'v1' && object.kind === 'Secret') {
      const secret = parseSecret(object, file);
      if (typeof secret === 'string') loaded.errors.push(`${file}: ${label}: ${secret}`);
      else loaded.resources.secrets.push(secret);
      return;
    }
    const result = parseVmtaResource(raw);
    if (!result.ok) {
      for (const problem of result.problems) loaded.errors.push(`${file}: ${label}: ${problem}`);
      return;
    }
    const resource = result.value;
    if (resource.kind === 'VirtualMtaPool') loaded.resources.pools.push(resource);
    else if (resource.kind === 'SmtpListener') loaded.resources.listeners.push(resource);
    else loaded.resources.policies.push(resource);
  });
}

/** The yaml library's message is "what at line L, column C:" then the lines around it with a caret; keep both, the excerpt indented under the error. */
function yamlErrorWithExcerpt(message: string): string {
  const [headline = '', ...excerpt] = message.split('\n');
  const lines = excerpt.filter((line) => line.trim() !== '');
  return lines.length > 0 ? `${headline}\n      | ${lines.join('\n      | ')}` : headline;
}

function parseSecret(object: Record<string, unknown>, file: string): LocalSecret | string {
  const metadata = (object.metadata ?? {}) as Record<string, unknown>;
  if (typeof metadata.name !== 'string' || metadata.name === '') return 'metadata.name: a Secret needs a name';
  const data = new Map<string, Buffer>();
  for (const [field, encoding] of [['data', 'base64'], ['stringData', 'utf8']] as const) {
    const values = object[field] ?? {};
    if (typeof values !== 'object' || values === null) return `${field}: expected a map of key to value`;
    for (const [key, value] of Object.entries(values)) {
      if (!/^[-._a-zA-Z0-9]+$/.test(key)) return `${field}.${key}: a Secret key is letters, digits, "-", "_" and "." (got "${key}")`;
      if (typeof value !== 'string' && value !== null) return `${field}.${key}: expected a string (got ${JSON.stringify(value)})`;
      data.set(key, Buffer.from(value ?? '', encoding));
    }
  }
  return { name: metadata.name, type: typeof object.type === 'string' ? object.type : 'Opaque', data, file };
}

function checkDuplicates(loaded: LoadedResources): void {
  const { pools, listeners, policies, secrets } = loaded.resources;
  const groups: [string, { metadata?: { name: string }; name?: string }[]][] = [
    ['VirtualMtaPool', pools],
    ['SmtpListener', listeners],
    ['RelayPolicy', policies],
    ['Secret', secrets],
  ];
  for (const [kind, items] of groups) {
    const seen = new Set<string>();
    for (const item of items) {
      const name = item.metadata?.name ?? item.name ?? '';
      if (seen.has(name)) loaded.errors.push(`${kind} "${name}" is defined twice; names are unique per kind`);
      seen.add(name);
    }
  }
}
