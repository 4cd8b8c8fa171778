// Posting a TLS report to an https: rua (RFC 8460 §5.2): POST of the gzipped JSON with
// Content-Type application/tlsrpt+gzip; any 2xx is success, anything else (redirects included,
// which are not followed) a failure to retry later. The host is resolved with the relay's own
// resolvers and the certificate checked against its name (system roots, or the CA file of
// tlsReporting.https). A rua is chosen by the recipient domain, so by default it may not point
// at loopback, private or link-local addresses (the relay must not be made to POST into its
// own network); tlsReporting.https.allowPrivateAddresses lifts that for closed networks and tests.
import https from 'node:https';
import { isIP } from 'node:net';
import { checkServerIdentity } from 'node:tls';
import ipaddr from 'ipaddr.js';
import { TLSRPT_GZIP_MEDIA_TYPE, type TlsReport } from './tls-rpt-report.ts';

export interface ReportPostOptions {
  resolveHost(host: string): Promise<string[]>;
  ca?: Buffer;
  allowPrivateAddresses: boolean;
  timeoutMs: number;
}

function isPublicAddress(address: string): boolean {
  return ipaddr.process(address).range() === 'unicast';
}

export async function postReport(url: URL, report: TlsReport, options: ReportPostOptions): Promise<void> {
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const addresses = isIP(host) ? [host] : await options.resolveHost(host);
  const address = addresses.find((candidate) => options.allowPrivateAddresses || isPublicAddress(candidate));
  if (!address) throw new Error(`${host} resolves only to private or loopback addresses (${addresses.join(', ')}); tlsReporting.https.allowPrivateAddresses allows them`);
  await new Promise<void>((resolve, reject) => {
    const request = https.request(
      {
        host: address,
        port: url.port || 443,
        path: `${url.pathname}${url.search}`,
        method: 'POST',
        ...(isIP(host) ? {} : { servername: host }),
        headers: { host: url.host, 'content-type': TLSRPT_GZIP_MEDIA_TYPE, 'content-length': report.gzip.length },
        timeout: options.timeoutMs,
        agent: false,
        ...(options.ca ? { ca: options.ca } : {}),
        checkServerIdentity: (_name, certificate) => checkServerIdentity(host, certificate),
      },
      (response) => {
        response.resume();
        const status = response.statusCode ?? 0;
        if (status >= 200 && status < 300) resolve();
        else reject(new Error(`POST ${url.href}: HTTP ${status}`));
      },
    );
    request.on('timeout', () => request.destroy(new Error(`POST ${url.href}: no answer within ${options.timeoutMs} ms`)));
    request.on('error', (error) => reject(new Error(`POST ${url.href}: ${error.message}`)));
    request.end(report.gzip);
  });
}
