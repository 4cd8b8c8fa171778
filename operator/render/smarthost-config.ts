// Smarthost routes of a VirtualMtaPool -> the relay's runtime config: the login and CA Secrets
// become the paths where the pods mount them (never their values), and each Secret the routes
// name is listed with its field and the keys it must hold, for render to check and mount. Pure.
import { SMARTHOST_SECRET_KEYS, type RuntimeConfigInput } from '../../mta/config/schema.ts';
import type { DomainSettings } from '../api/domain-settings.ts';
import type { VirtualMtaPool } from '../api/virtual-mta-pool.ts';
import { secretDir } from './layout.ts';

type Smarthost = NonNullable<DomainSettings['smarthost']>;
type SmarthostConfigInput = NonNullable<RuntimeConfigInput['pool']['domainDefaults'] extends (infer T)[] | undefined ? T : never>['smarthost'];

export const SMARTHOST_CA_KEY = 'ca.crt';

export function smarthostConfig(smarthost: Smarthost): SmarthostConfigInput {
  const { auth, caSecretName, ...rest } = smarthost;
  return {
    ...rest,
    ...(caSecretName ? { caFile: `${secretDir(caSecretName)}/${SMARTHOST_CA_KEY}` } : {}),
    ...(auth ? { auth: { secretPath: secretDir(auth.secretName), ...(auth.mechanism ? { mechanism: auth.mechanism } : {}) } } : {}),
  };
}

/** Every Secret the pool's smarthost routes name: its field path, name and required keys. */
export function smarthostSecrets(pool: VirtualMtaPool): { field: string; secretName: string; keys: string[] }[] {
  const blocks = [
    ...(pool.spec.domainDefaults ?? []).map((block, index) => ({ block, field: `spec.domainDefaults[${index}].smarthost` })),
    ...pool.spec.virtualMtas.flatMap((vmta, vmtaIndex) => (vmta.domains ?? []).map((block, index) => ({ block, field: `spec.virtualMtas[${vmtaIndex}].domains[${index}].smarthost` }))),
  ];
  return blocks.flatMap(({ block, field }) => {
    const smarthost = block.smarthost;
    if (!smarthost) return [];
    return [
      ...(smarthost.auth ? [{ field: `${field}.auth.secretName`, secretName: smarthost.auth.secretName, keys: [...SMARTHOST_SECRET_KEYS] }] : []),
      ...(smarthost.caSecretName ? [{ field: `${field}.caSecretName`, secretName: smarthost.caSecretName, keys: [SMARTHOST_CA_KEY] }] : []),
    ];
  });
}
