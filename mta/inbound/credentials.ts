// SMTP AUTH users of a relay policy, read from a mounted Secret directory: one file per user,
// file name = user name, content = the secret. Dotfiles and the `..data` / `..2024_…`
// entries Kubernetes creates for atomic updates are ignored; only regular files (or symlinks
// to them) count. A trailing newline in a file is ignored.
//
// Secret formats:
//   - clear text: any content not starting with "{SCRYPT}". Allows PLAIN, LOGIN and CRAM-MD5.
//   - `{SCRYPT}N$r$p$<salt base64>$<key base64>`: node:crypto scrypt(password, salt, keylen,
//     {N, r, p}) where keylen is the decoded key length (16..128 bytes). Allows PLAIN and LOGIN
//     only (CRAM-MD5 needs the clear secret). `hashPassword()` below makes one, e.g.
//     `node -e "import('./mta/inbound/credentials.ts').then(m => console.log(m.hashPassword('secret')))"`.
// Comparisons are constant-time.
import crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';

function scrypt(password: string, salt: Buffer, keylen: number, options: crypto.ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => crypto.scrypt(password, salt, keylen, options, (error, key) => (error ? reject(error) : resolve(key))));
}

type StoredSecret = { kind: 'clear'; secret: Buffer } | { kind: 'scrypt'; N: number; r: number; p: number; salt: Buffer; key: Buffer };

export class CredentialStore {
  private readonly users: Map<string, StoredSecret>;

  private constructor(users: Map<string, StoredSecret>) {
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
    const users = new Map<string, StoredSecret>();
    for (const name of entries.sort()) {
      if (name.startsWith('.')) continue;
      const file = path.join(directory, name);
      const stat = await fs.stat(file).catch(() => null);
      if (!stat?.isFile()) continue;
      const content = (await readFile(file)).toString('utf8').replace(/\r?\n$/, '');
      users.set(name, parseSecret(content, file));
    }
    return new CredentialStore(users);
  }

  get size(): number {
    return this.users.size;
  }

  /** CRAM-MD5 can be offered only when every user's secret is stored in clear. */
  allowsCramMd5(): boolean {
    return this.users.size > 0 && [...this.users.values()].every((secret) => secret.kind === 'clear');
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

function parseSecret(content: string, file: string): StoredSecret {
  if (!content.startsWith('{SCRYPT}')) {
    if (content.length === 0) throw new Error(`user file ${file} is empty`);
    return { kind: 'clear', secret: Buffer.from(content, 'utf8') };
  }
  const match = /^\{SCRYPT\}(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(content);
  if (!match) throw new Error(`user file ${file}: expected {SCRYPT}N$r$p$salt$key (base64 salt and key)`);
  const [N, r, p] = [Number(match[1]), Number(match[2]), Number(match[3])];
  const salt = Buffer.from(match[4] ?? '', 'base64');
  const key = Buffer.from(match[5] ?? '', 'base64');
  if (N < 2 || (N & (N - 1)) !== 0 || N > 2 ** 20 || r < 1 || r > 32 || p < 1 || p > 16) {
    throw new Error(`user file ${file}: scrypt parameters N=${N} r=${r} p=${p} out of range (N a power of two up to 2^20, r 1..32, p 1..16)`);
  }
  if (salt.length < 8 || key.length < 16 || key.length > 128) throw new Error(`user file ${file}: scrypt salt must be >= 8 bytes and key 16..128 bytes`);
  return { kind: 'scrypt', N, r, p, salt, key };
}

/** Makes a `{SCRYPT}` secret for a user file. */
export function hashPassword(password: string, options: { N?: number; r?: number; p?: number } = {}): string {
  const { N = 16384, r = 8, p = 1 } = options;
  const salt = crypto.randomBytes(16);
  const key = crypto.scryptSync(password, salt, 32, { N, r, p });
  return `{SCRYPT}${N}$${r}$${p}$${salt.toString('base64')}$${key.toString('base64')}`;
}
