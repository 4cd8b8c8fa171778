// A listener's TLS material: the default certificate and the SNI certificates, read from their
// files into secure contexts (TLS 1.2 minimum unless the listener asks for 1.3), with the
// expiry of every certificate for the `vmta_listener_certificate_expiry_timestamp_seconds` gauge.
// Read again on every reload, so a rotated certificate needs no restart.
import crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import tls from 'node:tls';
import type { ListenerConfig } from '../config/schema.ts';

export type ReadFile = (path: string) => Promise<Buffer>;

export interface TlsCredentials {
  defaultContext: tls.SecureContext;
  /** Lower-case server name to context. */
  sniContexts: Map<string, tls.SecureContext>;
  /** server_name label ("default" or the SNI name) to the expiry in Unix seconds. */
  expiries: Map<string, number>;
  minVersion: tls.SecureVersion;
}

export async function loadTlsCredentials(listener: ListenerConfig, readFile: ReadFile = fs.readFile): Promise<TlsCredentials | null> {
  const settings = listener.tls;
  if (settings.mode === 'none' || !settings.certFile || !settings.keyFile) return null;
  const minVersion = settings.minVersion;
  const expiries = new Map<string, number>();
  const load = async (certFile: string, keyFile: string, label: string): Promise<tls.SecureContext> => {
    let cert: Buffer;
    let key: Buffer;
    try {
      [cert, key] = await Promise.all([readFile(certFile), readFile(keyFile)]);
    } catch (error) {
      throw new Error(`listener "${listener.name}": cannot read TLS certificate or key (${certFile}, ${keyFile}): ${(error as Error).message}`);
    }
    try {
      const context = tls.createSecureContext({ cert, key, minVersion });
      expiries.set(label, Math.floor(new crypto.X509Certificate(cert).validToDate.getTime() / 1000));
      return context;
    } catch (error) {
      throw new Error(`listener "${listener.name}": invalid TLS certificate or key (${certFile}, ${keyFile}): ${(error as Error).message}`);
    }
  };
  const defaultContext = await load(settings.certFile, settings.keyFile, 'default');
  const sniContexts = new Map<string, tls.SecureContext>();
  for (const entry of settings.sni) {
    sniContexts.set(entry.serverName.toLowerCase(), await load(entry.certFile, entry.keyFile, entry.serverName.toLowerCase()));
  }
  return { defaultContext, sniContexts, expiries, minVersion };
}
