// The SMTP AUTH credentials a pool's listeners would have, judged before anything is rendered,
// with the same rules the relay applies on (re)load (mta/config/user-secrets.ts): a users Secret
// key the relay cannot parse (empty, more than one line, a malformed {SCRYPT} hash) would make it
// refuse the whole config, and a listener that requires AUTH without a usable user (no users, an
// empty Secret, CRAM-MD5 only with hashed secrets) would accept nobody. Both are render problems,
// so the pool keeps what it has and the object says why, with an Event. Pure: no I/O.
import { missingCredentialsProblem, type CredentialFields, type UserCount } from '../../mta/config/user-secrets.ts';
import type { RelayPolicy } from '../api/relay-policy.ts';
import type { SmtpListener } from '../api/smtp-listener.ts';
import type { ListenerPlan, SecretSummary } from './runtime-config.ts';

const RESOURCE_FIELDS: CredentialFields = { required: 'spec.auth.required', mechanisms: 'spec.auth.mechanisms', users: 'spec.users.secretName' };

export interface CredentialProblem {
  object: SmtpListener | RelayPolicy;
  reason: 'InvalidCredentials' | 'NoCredentials';
  /** Without the object's kind and name (the caller adds them). */
  message: string;
}

/** The user keys of a Secret as the relay would see them: dotfiles are not users; keys without a verdict count as clear (nothing known against them). */
function userCount(secret: SecretSummary): UserCount {
  const users = secret.keys.filter((key) => !key.startsWith('.'));
  const clear = users.filter((key) => {
    const verdict = secret.userSecrets?.[key];
    return verdict === undefined || ('kind' in verdict && verdict.kind === 'clear');
  });
  return { users: users.length, clearUsers: clear.length };
}

export function credentialProblems(listeners: readonly ListenerPlan[], policies: ReadonlyMap<string, RelayPolicy>, secrets: readonly SecretSummary[]): CredentialProblem[] {
  const problems: CredentialProblem[] = [];
  const secretByName = new Map(secrets.map((secret) => [secret.name, secret]));
  const usable = new Map<string, UserCount>();
  for (const policy of policies.values()) {
    const secret = policy.spec.users ? secretByName.get(policy.spec.users.secretName) : undefined;
    if (!secret) continue;
    for (const key of secret.keys.filter((name) => !name.startsWith('.')).sort()) {
      const verdict = secret.userSecrets?.[key];
      if (verdict && 'problem' in verdict) problems.push({ object: policy, reason: 'InvalidCredentials', message: `spec.users.secretName: Secret "${secret.name}" ${verdict.problem}` });
    }
    usable.set(policy.metadata.name, userCount(secret));
  }
  for (const { listener, resolved } of listeners) {
    const policy = policies.get(listener.spec.relayPolicyRef.name);
    if (!policy) continue;
    const secretName = policy.spec.users?.secretName;
    // A users Secret that does not exist is already a SecretNotFound problem.
    if (secretName !== undefined && !secretByName.has(secretName)) continue;
    const count = usable.get(policy.metadata.name) ?? { users: 0, clearUsers: 0 };
    const problem = missingCredentialsProblem({ required: resolved.authRequired, mechanisms: resolved.authMechanisms }, { name: policy.metadata.name, users: policy.spec.users }, count, `Secret "${secretName}"`, RESOURCE_FIELDS);
    if (problem) problems.push({ object: listener, reason: 'NoCredentials', message: problem });
  }
  return problems;
}
