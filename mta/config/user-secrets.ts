// What makes SMTP AUTH credentials usable, shared by the relay (which reads the user files of a
// mounted Secret) and the operator (which sees the Secret's keys in its cache): the format of one
// user secret, and whether a listener that requires AUTH has any user a client could log in as
// with a mechanism it offers. A listener that requires AUTH without usable credentials would
// accept nobody and offer no AUTH: the relay refuses such a config (the previous one keeps
// serving) and the operator reports it on the listener.
//
// Secret formats (one user per file or Secret key; the name is the user name):
//   - clear text: any one line not starting with "{SCRYPT}". Allows PLAIN, LOGIN and CRAM-MD5.
//   - `{SCRYPT}N$r$p$<salt base64>$<key base64>`: node:crypto scrypt(password, salt, keylen,
//     {N, r, p}) where keylen is the decoded key length (16..128 bytes). Allows PLAIN and LOGIN
//     only (CRAM-MD5 needs the clear secret).
// One trailing newline is ignored; a secret of more lines is refused (two secrets pasted into one
// file, or a password with a line break no client can type).
import type { z } from 'zod';
import type { AuthMechanism as AuthMechanismSchema } from './schema.ts';

type AuthMechanism = z.output<typeof AuthMechanismSchema>;

export type UserSecret = { kind: 'clear'; secret: Buffer } | { kind: 'scrypt'; N: number; r: number; p: number; salt: Buffer; key: Buffer };

/** Parses one user secret (one trailing newline ignored); throws an error naming `where` ("user file /path", "key \"bob\""). */
export function parseUserSecret(text: string, where: string): UserSecret {
  const content = text.replace(/\r?\n$/, '');
  if (content.length === 0) throw new Error(`${where} is empty`);
  if (/[\r\n]/.test(content)) throw new Error(`${where}: holds more than one line; a user secret is one line (a clear password or one {SCRYPT} hash)`);
  if (!content.startsWith('{SCRYPT}')) return { kind: 'clear', secret: Buffer.from(content, 'utf8') };
  const match = /^\{SCRYPT\}(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(content);
  if (!match) throw new Error(`${where}: expected {SCRYPT}N$r$p$salt$key (base64 salt and key)`);
  const [N, r, p] = [Number(match[1]), Number(match[2]), Number(match[3])];
  const salt = Buffer.from(match[4] ?? '', 'base64');
  const key = Buffer.from(match[5] ?? '', 'base64');
  if (N < 2 || (N & (N - 1)) !== 0 || N > 2 ** 20 || r < 1 || r > 32 || p < 1 || p > 16) {
    throw new Error(`${where}: scrypt parameters N=${N} r=${r} p=${p} out of range (N a power of two up to 2^20, r 1..32, p 1..16)`);
  }
  if (salt.length < 8 || key.length < 16 || key.length > 128) throw new Error(`${where}: scrypt salt must be >= 8 bytes and key 16..128 bytes`);
  return { kind: 'scrypt', N, r, p, salt, key };
}

/** What a user secret is, without its value: how it is stored, or why it is unusable (what the operator keeps of a Secret's keys). */
export type UserSecretVerdict = { kind: UserSecret['kind'] } | { problem: string };

export function userSecretVerdict(value: Buffer, where: string): UserSecretVerdict {
  try {
    return { kind: parseUserSecret(value.toString('utf8'), where).kind };
  } catch (error) {
    return { problem: (error as Error).message };
  }
}

/** What is known of a listener's users: how many, and how many are stored in clear (CRAM-MD5 needs all of them). */
export interface UserCount {
  users: number;
  clearUsers: number;
}

/** The mechanisms a listener can really offer with these users: CRAM-MD5 only when every secret is clear. */
export function usableMechanisms(mechanisms: readonly AuthMechanism[], users: UserCount): AuthMechanism[] {
  return mechanisms.filter((mechanism) => mechanism !== 'CRAM-MD5' || (users.users > 0 && users.clearUsers === users.users));
}

/** The names of the fields a credential problem points at: the runtime config's (default) or the custom resources'. */
export interface CredentialFields {
  required: string;
  mechanisms: string;
  users: string;
}

export const RUNTIME_CREDENTIAL_FIELDS: CredentialFields = { required: 'auth.required', mechanisms: 'auth.mechanisms', users: 'users.secretPath' };

/**
 * Why a listener that requires AUTH has no usable credentials, starting with the field to fix;
 * undefined when it has some or does not require AUTH. `where` says where the users are read
 * from (a directory, a Secret).
 */
export function missingCredentialsProblem(auth: { required: boolean; mechanisms: readonly AuthMechanism[] }, policy: { name: string; users?: unknown }, users: UserCount, where: string, fields: CredentialFields = RUNTIME_CREDENTIAL_FIELDS): string | undefined {
  if (!auth.required) return undefined;
  const prefix = `${fields.required}: no client can authenticate`;
  if (policy.users === undefined) return `${prefix}: relay policy "${policy.name}" has no users (${fields.users})`;
  if (users.users === 0) return `${prefix}: relay policy "${policy.name}" ${fields.users} ${where} holds no user`;
  if (auth.mechanisms.length === 0) return `${prefix}: ${fields.mechanisms} is empty`;
  if (usableMechanisms(auth.mechanisms, users).length === 0) return `${prefix}: ${fields.mechanisms} offers only CRAM-MD5, which needs clear-text secrets, and ${users.users - users.clearUsers} of the ${users.users} users in ${where} are {SCRYPT} hashes`;
  return undefined;
}
