// SMTP AUTH users of a relay policy, read from a mounted Secret directory: one file per user,
// file name = user name, content = the secret. Dotfiles and the `..data` / `..2024_…`
// entries Kubernetes creates for atomic updates are ignored; only regular files (or symlinks
// to them) count. A trailing newline in a file is ignored.
//
// Secret formats and what makes them usable: mta/config/user-secrets.ts. `hashPassword()` below
// makes a {SCRYPT} one, e.g.
//     `node -e "import('./mta/inbound/credentials.ts').then(m => console.log(m.hashPassword('secret')))"`.
// Comparisons are constant-time.
import crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { parseUserSecret, type UserCount, type UserSecret } from '../config/user-secrets.ts';

function scrypt(password: string, salt: Buffer, keylen: number, options: crypto.ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => crypto.scrypt(password, salt, keylen, options, (error, key) => (error ? reject(error) : resolve(key))));
}

export class CredentialStore {
  private readonly users: Map<string, UserSecret>;

  private constructor(users: Map<string, UserSecret>) {
    this.users = users;
  }

  static empty(): CredentialStore {
    return new CredentialStore(new Map());
  }

  /** Reads every user file of the directory; throws an error naming the file on a bad one. */
  static async load(directory: string, readFile: (path: string) => Promise<Buffer> = (file) => fs.readFile(file)): Promise<CredentialStore> {
    let entries: string[];
    try {
      entries = await fs.readdir(directory);
    } catch (error) {
      throw new Error(`cannot read users directory ${directory}: ${(error as Error).message}`);
    }
    const users = new Map<string, UserSecret>();
    for (const name of entries.sort()) {
      if (name.startsWith('.')) continue;
      const file = path.join(directory, name);
      const stat = await fs.stat(file).catch(() => null);
      if (!stat?.isFile()) continue;
      users.set(name, parseUserSecret((await readFile(file)).toString('utf8'), `user file ${file}`));
    }
    return new CredentialStore(users);
  }

  get size(): number {
    return this.users.size;
  }

  /** How many users, and how many stored in clear (what decides the usable mechanisms). */
  count(): UserCount {
    return { users: this.users.size, clearUsers: [...this.users.values()].filter((secret) => secret.kind === 'clear').length };
  }

  /** Resolves true when the password matches; scrypt runs on the thread pool, not the event loop. */
  async verifyPassword(user: string, password: string): Promise<boolean> {
    const stored = this.users.get(user);
    if (!stored) {
      // Spend the same kind of work for unknown users so timing does not reveal who exists.
      constantTimeEqual(Buffer.from(password), Buffer.from('\0'.repeat(password.length + 1)));
      return false;
    }
    if (stored.kind === 'clear') return constantTimeEqual(Buffer.from(password, 'utf8'), stored.secret);
    const derived = await scrypt(password, stored.salt, stored.key.length, { N: stored.N, r: stored.r, p: stored.p, maxmem: 256 * stored.N * stored.r + 1024 * 1024 });
    return crypto.timingSafeEqual(derived, stored.key);
  }

  /** CRAM-MD5: `validate` computes the HMAC with the clear secret and compares in constant time. */
  verifyCramMd5(user: string, validate: (secret: string) => boolean): boolean {
    const stored = this.users.get(user);
    if (stored?.kind !== 'clear') return false;
    return validate(stored.secret.toString('utf8'));
  }
}

function constantTimeEqual(a: Buffer, b: Buffer): boolean {
  // Hash both sides so the comparison does not leak the stored length.
  const left = crypto.createHash('sha256').update(a).digest();
  const right = crypto.createHash('sha256').update(b).digest();
  return crypto.timingSafeEqual(left, right) && a.length === b.length;
}

/** Makes a `{SCRYPT}` secret for a user file. */
export function hashPassword(password: string, options: { N?: number; r?: number; p?: number } = {}): string {
  const { N = 16384, r = 8, p = 1 } = options;
  const salt = crypto.randomBytes(16);
  const key = crypto.scryptSync(password, salt, 32, { N, r, p });
  return `{SCRYPT}${N}$${r}$${p}$${salt.toString('base64')}$${key.toString('base64')}`;
}
