// A pool's DKIM fields -> the relay's `pool.dkim` and `virtualMtas[].dkimKeys`: each key's
// Secret becomes the path of its mounted file, the signing defaults are copied as they are.
// Which Secrets and keys must exist is `dkimSecretReferences`, checked by runtime-config.ts. Pure.
import type { RuntimeConfigInput } from '../../mta/config/schema.ts';
import type { DkimKeySpec } from '../api/dkim.ts';
import type { VirtualMtaPool } from '../api/virtual-mta-pool.ts';
import { secretDir } from './layout.ts';
import { compact } from './runtime-config.ts';

type DkimInput = NonNullable<RuntimeConfigInput['pool']['dkim']>;
type DkimKeyInput = NonNullable<DkimInput['keys']>[number];

export function dkimKeyConfig(key: DkimKeySpec): DkimKeyInput {
  return compact({
    domain: key.domain,
    selector: key.selector,
    algorithm: key.algorithm,
    keyFile: `${secretDir(key.secretName)}/${key.secretKey}`,
    canonicalization: key.canonicalization,
  }) as DkimKeyInput;
}

/** `pool.dkim` of relay.yaml, or undefined when the pool declares no DKIM at all. */
export function dkimConfig(pool: VirtualMtaPool): DkimInput | undefined {
  const dkim = pool.spec.dkim;
  if (!dkim) return undefined;
  return compact({
    keys: (dkim.keys ?? []).map(dkimKeyConfig),
    canonicalization: dkim.canonicalization,
    headers: dkim.headers,
    oversignHeaders: dkim.oversignHeaders,
    expireAfter: dkim.expireAfter,
    organizationalDomain: dkim.organizationalDomain,
  }) as DkimInput;
}

/** Every DKIM key of the pool with the field that declares it, pool keys first. */
export function dkimKeysWithFields(pool: VirtualMtaPool): { key: DkimKeySpec; field: string; virtualMta?: string }[] {
  return [
    ...(pool.spec.dkim?.keys ?? []).map((key, index) => ({ key, field: `spec.dkim.keys[${index}]` })),
    ...pool.spec.virtualMtas.flatMap((vmta, vmtaIndex) => (vmta.dkimKeys ?? []).map((key, index) => ({ key, field: `spec.virtualMtas[${vmtaIndex}].dkimKeys[${index}]`, virtualMta: vmta.name }))),
  ];
}
