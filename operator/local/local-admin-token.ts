// Local mode's admin token: a pool without spec.admin.tokenSecretName gets a random token made
// once in its work dir (a pod would have none, and queue control would be refused), and
// `vmta queue` finds the token of a local relay by itself from the admin port it is asked to
// talk to, reading the pools' local relay.yaml files.
import { randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parse } from 'yaml';
import { RUNTIME_CONFIG_FILE } from '../../mta/config/schema.ts';
import { localPoolDir } from './local-config.ts';

/** Where `vmta local` keeps its state unless given --work-dir (relative to where it runs). */
export const DEFAULT_LOCAL_WORK_DIR = path.join('.tmp', 'local');

/** The generated token file of a pool (made on first use, kept across restarts). */
export async function ensureLocalAdminToken(workDir: string, poolName: string): Promise<string> {
  const file = path.join(localPoolDir(workDir, poolName), 'admin-token');
  const existing = await readFile(file, 'utf8').catch(() => '');
  if (existing.trim() === '') await writeFile(file, `${randomBytes(24).toString('base64url')}\n`, { mode: 0o600 });
  return file;
}

/** The admin token file of the local relay whose admin API listens on `port`, or undefined. */
export async function findLocalAdminTokenFile(workDir: string, port: number): Promise<string | undefined> {
  const pools = await readdir(path.join(workDir, 'pools')).catch(() => [] as string[]);
  for (const pool of pools) {
    const text = await readFile(path.join(localPoolDir(workDir, pool), 'config', RUNTIME_CONFIG_FILE), 'utf8').catch(() => undefined);
    if (text === undefined) continue;
    let admin: { port?: unknown; tokenFile?: unknown } | undefined;
    try {
      admin = (parse(text) as { admin?: typeof admin } | null)?.admin;
    } catch {
      continue;
    }
    if (admin?.port === port && typeof admin.tokenFile === 'string') return admin.tokenFile;
  }
  return undefined;
}
