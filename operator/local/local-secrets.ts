// Secrets as the kubelet would mount them, but in the local work dir: one directory per
// Secret, one file per key. A kubernetes.io/tls Secret left empty in the YAML (no private key
// belongs in a repository) gets a self-signed certificate for localhost, made once with the
// openssl CLI and kept in the work dir so clients can pin it across restarts.
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { LocalSecret } from './resource-files.ts';
import { localSecretDir } from './local-config.ts';

const run = promisify(execFile);

/** Writes every Secret under workDir/secrets/<name>/; returns notes such as generated certificates. */
export async function writeLocalSecrets(workDir: string, secrets: LocalSecret[]): Promise<string[]> {
  const notes: string[] = [];
  for (const secret of secrets) {
    const data = new Map(secret.data);
    if (secret.type === 'kubernetes.io/tls' && isEmpty(data.get('tls.crt')) && isEmpty(data.get('tls.key'))) {
      const generated = await selfSignedCertificate(workDir, secret.name);
      if (generated.created) notes.push(`Secret "${secret.name}": made a self-signed certificate for localhost (${generated.certFile})`);
      data.set('tls.crt', await readFile(generated.certFile));
      data.set('tls.key', await readFile(generated.keyFile));
    }
    await writeSecretDir(localSecretDir(workDir, secret.name), data);
  }
  return notes;
}

function isEmpty(value: Buffer | undefined): boolean {
  return value === undefined || value.length === 0;
}

/** Replaces the directory's files with `data`, writing each through a temporary name so readers never see half a file. */
async function writeSecretDir(dir: string, data: Map<string, Buffer>): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  for (const name of await readdir(dir)) {
    if (!data.has(name)) await rm(path.join(dir, name), { force: true, recursive: true });
  }
  for (const [key, value] of data) {
    const file = path.join(dir, key);
    const current = await readFile(file).catch(() => undefined);
    if (current?.equals(value)) continue;
    const temporary = path.join(dir, `.${key}.tmp`);
    await writeFile(temporary, value, { mode: 0o600 });
    await rename(temporary, file);
  }
}

async function selfSignedCertificate(workDir: string, secretName: string): Promise<{ certFile: string; keyFile: string; created: boolean }> {
  const dir = path.join(workDir, 'generated-tls', secretName);
  const certFile = path.join(dir, 'tls.crt');
  const keyFile = path.join(dir, 'tls.key');
  const existing = await Promise.all([readFile(certFile).catch(() => undefined), readFile(keyFile).catch(() => undefined)]);
  if (existing.every((content) => content && content.length > 0)) return { certFile, keyFile, created: false };
  await mkdir(dir, { recursive: true, mode: 0o700 });
  try {
    await run('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', keyFile, '-out', certFile, '-days', '365', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1',
    ]);
  } catch (error) {
    throw new Error(`Secret "${secretName}" has no certificate and openssl could not make one (install openssl, or fill tls.crt and tls.key): ${(error as Error).message}`);
  }
  return { certFile, keyFile, created: true };
}
