// Turning untrusted objects (from YAML files or the API server) into typed vmta.dev resources,
// with the same rules the CRDs give the API server and errors naming the field and the value.
import { describeIssue } from '../../mta/config/parse.ts';
import { API_GROUP_VERSION } from './fields.ts';
import type { RelayPolicy } from './relay-policy.ts';
import { KINDS, type VmtaKind } from './resources.ts';
import type { SmtpListener } from './smtp-listener.ts';
import type { VirtualMtaPool } from './virtual-mta-pool.ts';

export type VmtaResource = SmtpListener | RelayPolicy | VirtualMtaPool;

export type ParseResult<T> = { ok: true; value: T } | { ok: false; problems: string[] };

/** True when the object claims to be one of the vmta.dev kinds (whatever its content). */
export function isVmtaObject(raw: unknown): raw is { apiVersion: string; kind: VmtaKind } {
  if (raw === null || typeof raw !== 'object') return false;
  const { apiVersion, kind } = raw as Record<string, unknown>;
  return apiVersion === API_GROUP_VERSION && KINDS.some((definition) => definition.kind === kind);
}

/** Validate one vmta.dev object; problems read "spec.tls.mode: ... (got "implicit")". */
export function parseVmtaResource(raw: unknown): ParseResult<VmtaResource> {
  if (!isVmtaObject(raw)) return { ok: false, problems: [`(root): not a ${API_GROUP_VERSION} SmtpListener, RelayPolicy or VirtualMtaPool`] };
  const definition = KINDS.find((entry) => entry.kind === raw.kind);
  if (!definition) return { ok: false, problems: [`kind: unknown kind "${raw.kind}"`] };
  const result = definition.schema.safeParse(raw, { reportInput: true });
  if (!result.success) return { ok: false, problems: result.error.issues.map((issue) => describeIssue(issue, raw)) };
  const value = result.data as VmtaResource;
  if (value.metadata.name.length > definition.maxNameLength) {
    return { ok: false, problems: [`metadata.name: at most ${definition.maxNameLength} characters for a ${definition.kind} (got "${value.metadata.name}")`] };
  }
  return { ok: true, value };
}
