// Reading the PROXY protocol header (v1 text and v2 binary) that a trusted load balancer puts
// before the SMTP session, so every policy decision uses the real client address. Framing is
// done here (v1: one line of at most 107 bytes; v2: 16-byte preamble + length); the header
// itself is decoded by proxy-protocol-js. Strict: anything else is an error, and the caller
// refuses the connection. A v2 LOCAL command (health checks) keeps the peer's own address.
import net from 'node:net';
import { V1ProxyProtocol, V2ProxyProtocol, IPv4ProxyAddress, IPv6ProxyAddress, Command } from 'proxy-protocol-js';

export interface ProxiedPeer {
  address: string;
  port: number;
}

const V1_PREFIX = Buffer.from('PROXY ');
const V1_MAX_LENGTH = 107;
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V2_MAX_LENGTH = 16 + 536;

type FrameResult = { state: 'incomplete' } | { state: 'error'; error: string } | { state: 'done'; peer: ProxiedPeer | null; headerLength: number };

/** Decodes a header at the start of `data`; `peer` null means "use the connection's address" (v2 LOCAL). */
export function decodeProxyHeader(data: Buffer): FrameResult {
  if (data.length === 0) return { state: 'incomplete' };
  if (data[0] === 0x0d) {
    const signatureLength = Math.min(data.length, V2_SIGNATURE.length);
    if (!data.subarray(0, signatureLength).equals(V2_SIGNATURE.subarray(0, signatureLength))) return { state: 'error', error: 'not a PROXY protocol header' };
    // Version 2 with command LOCAL (0) or PROXY (1): refuse anything else as soon as it shows.
    const versionCommand = data[12];
    if (versionCommand !== undefined && (versionCommand >> 4 !== 2 || (versionCommand & 0x0f) > 1)) return { state: 'error', error: 'unsupported PROXY protocol version or command' };
    if (data.length < 16) return { state: 'incomplete' };
    const length = 16 + data.readUInt16BE(14);
    if (length > V2_MAX_LENGTH) return { state: 'error', error: 'PROXY v2 header too long' };
    if (data.length < length) return { state: 'incomplete' };
    return decodeV2(data.subarray(0, length));
  }
  const prefixLength = Math.min(data.length, V1_PREFIX.length);
  if (!data.subarray(0, prefixLength).equals(V1_PREFIX.subarray(0, prefixLength))) return { state: 'error', error: 'not a PROXY protocol header' };
  const end = data.indexOf('\r\n');
  if (end < 0) return data.length >= V1_MAX_LENGTH ? { state: 'error', error: 'PROXY v1 header too long' } : { state: 'incomplete' };
  if (end + 2 > V1_MAX_LENGTH) return { state: 'error', error: 'PROXY v1 header too long' };
  return decodeV1(data.subarray(0, end + 2));
}

function decodeV1(header: Buffer): FrameResult {
  const text = header.toString('latin1');
  let parsed: V1ProxyProtocol;
  try {
    parsed = V1ProxyProtocol.parse(text);
  } catch (error) {
    return { state: 'error', error: `invalid PROXY v1 header: ${(error as Error).message}` };
  }
  const family = parsed.inetProtocol as string;
  const expected = family === 'TCP4' ? 4 : family === 'TCP6' ? 6 : 0;
  const address = parsed.source.ipAddress;
  const port = Number(parsed.source.port);
  if (expected === 0 || net.isIP(address) !== expected || net.isIP(parsed.destination.ipAddress) !== expected || !validPort(port) || !validPort(Number(parsed.destination.port))) {
    return { state: 'error', error: 'invalid PROXY v1 header: bad family, address or port' };
  }
  return { state: 'done', peer: { address, port }, headerLength: header.length };
}

function decodeV2(header: Buffer): FrameResult {
  if ((header[12] ?? 0) >> 4 !== 2) return { state: 'error', error: 'unsupported PROXY protocol version' };
  let parsed: V2ProxyProtocol;
  try {
    parsed = V2ProxyProtocol.parse(new Uint8Array(header));
  } catch (error) {
    return { state: 'error', error: `invalid PROXY v2 header: ${(error as { message?: string }).message ?? String(error)}` };
  }
  if (parsed.command === Command.LOCAL) return { state: 'done', peer: null, headerLength: header.length };
  const proxyAddress = parsed.proxyAddress;
  if (proxyAddress instanceof IPv4ProxyAddress) {
    return { state: 'done', peer: { address: proxyAddress.sourceAddress.address.join('.'), port: proxyAddress.sourcePort }, headerLength: header.length };
  }
  if (proxyAddress instanceof IPv6ProxyAddress) {
    const bytes = proxyAddress.sourceAddress.address;
    const groups: string[] = [];
    for (let index = 0; index < 16; index += 2) groups.push((((bytes[index] ?? 0) << 8) | (bytes[index + 1] ?? 0)).toString(16));
    return { state: 'done', peer: { address: groups.join(':'), port: proxyAddress.sourcePort }, headerLength: header.length };
  }
  return { state: 'error', error: 'PROXY v2 header without an IPv4 or IPv6 source address' };
}

function validPort(port: number): boolean {
  return Number.isInteger(port) && port >= 0 && port <= 65535;
}

/**
 * Reads the header from the socket. Resolves with the client's peer (or null for v2 LOCAL);
 * rejects when the header is missing, invalid, or does not arrive within `timeoutMs`. Bytes after
 * the header are pushed back into the socket for the SMTP session.
 */
export function readProxyHeader(socket: net.Socket, timeoutMs: number): Promise<ProxiedPeer | null> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const finish = (error: Error | null, peer?: ProxiedPeer | null) => {
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('close', onClose);
      socket.removeListener('error', onError);
      socket.pause();
      if (error) reject(error);
      else resolve(peer ?? null);
    };
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const result = decodeProxyHeader(buffered);
      if (result.state === 'incomplete') return;
      if (result.state === 'error') return finish(new Error(result.error));
      const rest = buffered.subarray(result.headerLength);
      finish(null, result.peer);
      if (rest.length > 0) socket.unshift(rest);
    };
    const onClose = () => finish(new Error('connection closed before the PROXY header'));
    const onError = (error: Error) => finish(error);
    const timer = setTimeout(() => finish(new Error('no PROXY header in time')), timeoutMs);
    timer.unref();
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.once('error', onError);
  });
}
