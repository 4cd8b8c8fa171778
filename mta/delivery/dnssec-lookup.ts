// DNS queries whose answers say whether they are DNSSEC-validated: node:dns hides the AD bit, so
// DANE speaks DNS itself (dns-packet over UDP, TCP when the answer is truncated) to validating
// resolvers that the configuration trusts (`delivery.dnssecResolvers`: on the same host or a
// trusted network path, RFC 6698 §4.1 / RFC 7672 §2.1.1). A query sets DO and AD (RFC 6840 §5.7)
// and is answered with the rcode, the AD bit and the answer records of the asked type.
import dgram from 'node:dgram';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import dnsPacket, { type Answer, type DecodedPacket, type RecordType } from 'dns-packet';

export interface ValidatedAnswer {
  rcode: string;
  /** The resolver validated the whole answer (the AD bit). */
  authenticated: boolean;
  records: Answer[];
}

export class DnssecLookupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DnssecLookupError';
  }
}

interface Server {
  address: string;
  port: number;
}

/** "127.0.0.1", "127.0.0.1:5353", "[::1]:53" -> address and port. */
export function parseResolverAddress(text: string): Server {
  const bracketed = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(text);
  if (bracketed) return { address: bracketed[1]!, port: Number(bracketed[2] ?? 53) };
  if (net.isIP(text) === 6) return { address: text, port: 53 };
  const [address = '', port] = text.split(':');
  return { address, port: Number(port ?? 53) };
}

export class DnssecLookup {
  readonly #servers: Server[];
  readonly #timeoutMs: number;

  constructor(options: { servers: readonly string[]; timeoutMs?: number }) {
    this.#servers = options.servers.map(parseResolverAddress);
    this.#timeoutMs = options.timeoutMs ?? 5_000;
  }

  get configured(): boolean {
    return this.#servers.length > 0;
  }

  /** Asks each resolver in turn until one answers; throws DnssecLookupError when none does. */
  async query(name: string, type: RecordType): Promise<ValidatedAnswer> {
    const problems: string[] = [];
    for (const server of this.#servers) {
      try {
        const response = await this.#ask(server, name, type);
        const records = (response.answers ?? []).filter((answer) => answer.type === type && answer.name.toLowerCase() === name.toLowerCase().replace(/\.$/, ''));
        return { rcode: (response as DecodedPacket & { rcode?: string }).rcode ?? 'NOERROR', authenticated: response.flag_ad, records };
      } catch (error) {
        problems.push(`${server.address}:${server.port}: ${(error as Error).message}`);
      }
    }
    throw new DnssecLookupError(`${type} ${name}: no validating resolver answered (${problems.join('; ') || 'none configured'})`);
  }

  async #ask(server: Server, name: string, type: RecordType): Promise<DecodedPacket> {
    const id = randomInt(0, 65_536);
    const packet = {
      type: 'query' as const,
      id,
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.AUTHENTIC_DATA,
      questions: [{ type, name }],
      additionals: [{ type: 'OPT' as const, name: '.', udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: dnsPacket.DNSSEC_OK, flag_do: true, options: [] }],
    };
    const udp = await this.#udp(server, dnsPacket.encode(packet), id);
    if (!udp.flag_tc) return udp;
    return this.#tcp(server, dnsPacket.streamEncode(packet), id);
  }

  #udp(server: Server, message: Buffer, id: number): Promise<DecodedPacket> {
    return new Promise((resolve, reject) => {
      const socket = dgram.createSocket(net.isIP(server.address) === 6 ? 'udp6' : 'udp4');
      const timer = setTimeout(() => finish(new DnssecLookupError('timed out')), this.#timeoutMs);
      const finish = (error: Error | undefined, answer?: DecodedPacket) => {
        clearTimeout(timer);
        socket.close();
        if (error) reject(error);
        else resolve(answer!);
      };
      socket.on('error', (error) => finish(error));
      socket.on('message', (data, from) => {
        // Only the resolver asked, with the id asked, may answer (no off-path spoofing on this socket).
        if (from.address !== server.address || from.port !== server.port) return;
        let decoded: DecodedPacket;
        try {
          decoded = dnsPacket.decode(data);
        } catch {
          return;
        }
        if (decoded.id === id) finish(undefined, decoded);
      });
      socket.send(message, server.port, server.address);
    });
  }

  #tcp(server: Server, message: Buffer, id: number): Promise<DecodedPacket> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(server.port, server.address);
      const chunks: Buffer[] = [];
      const timer = setTimeout(() => socket.destroy(new DnssecLookupError('timed out over TCP')), this.#timeoutMs);
      socket.on('connect', () => socket.end(message));
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.on('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      socket.on('end', () => {
        clearTimeout(timer);
        try {
          const decoded = dnsPacket.streamDecode(Buffer.concat(chunks)) as DecodedPacket;
          if (decoded.id !== id) return reject(new DnssecLookupError('answer over TCP with another id'));
          resolve(decoded);
        } catch (error) {
          reject(error as Error);
        }
      });
    });
  }
}
