// Makes what examples/relay-config needs at run time and must not live in git: a self-signed
// TLS certificate for the listeners (openssl CLI) and an admin bearer token, under .state/.
// Idempotent: existing files are kept. Run by `npm start` before the relay.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const state = fileURLToPath(new URL('.state/', import.meta.url));
const certFile = `${state}tls/relay.crt`;
const keyFile = `${state}tls/relay.key`;
const tokenFile = `${state}admin-token`;

mkdirSync(`${state}tls`, { recursive: true });
if (!existsSync(certFile) || !existsSync(keyFile)) {
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', keyFile, '-out', certFile, '-days', '365', '-subj', '/CN=relay.localhost',
      '-addext', 'subjectAltName=DNS:relay.localhost,DNS:localhost,IP:127.0.0.1',
    ], { stdio: ['ignore', 'ignore', 'inherit'] });
  } catch (error) {
    console.error(`cannot make the example TLS certificate with openssl (install it, e.g. apt-get install openssl): ${(error as Error).message}`);
    process.exit(1);
  }
  console.error(`made a self-signed certificate for relay.localhost in ${certFile}`);
}
if (!existsSync(tokenFile)) {
  writeFileSync(tokenFile, `${randomBytes(24).toString('base64url')}\n`, { mode: 0o600 });
  console.error(`made an admin API token in ${tokenFile}`);
}
