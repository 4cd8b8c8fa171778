// PROXY protocol v1 and v2, honoured only from trusted CIDRs: the listener on 127.0.0.1 trusts
// 127.0.0.2/32; connections from 127.0.0.3 are refused, and so is a trusted peer that sends no
// or an invalid header. Relay decisions and the handed-over transaction use the real client.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Command, IPv4Address, IPv4ProxyAddress, IPv6Address, IPv6ProxyAddress, TransportProtocol, V2ProxyProtocol } from 'proxy-protocol-js';
import { decodeProxyHeader } from '../../mta/inbound/proxy-header.ts';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';
import { expectCode, startHarness, type Harness } from './harness.ts';

function v2Header(source: string, command: Command = Command.PROXY): Buffer {
  if (source.includes(':')) {
    const bytes = Buffer.alloc(16);
    const groups = source.split(':').map((group) => parseInt(group || '0', 16));
    groups.forEach((group, index) => bytes.writeUInt16BE(group, index * 2));
    return Buffer.from(new V2ProxyProtocol(command, TransportProtocol.STREAM, new IPv6ProxyAddress(IPv6Address.createFrom([...bytes]), 4444, IPv6Address.createWithEmptyAddress(), 25)).build());
  }
  const octets = source.split('.').map(Number);
  return Buffer.from(new V2ProxyProtocol(command, TransportProtocol.STREAM, new IPv4ProxyAddress(IPv4Address.createFrom(octets), 4444, IPv4Address.createFrom([127, 0, 0, 1]), 25)).build());
}

describe('PROXY protocol', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness({
      mutate: (input) => {
        input.listeners[0]!.proxyProtocol = { enabled: true, trustedCidrs: ['127.0.0.2/32'] };
      },
    });
  });
  after(() => harness.close());

  async function relayThroughProxy(header: Buffer | string, localAddress: string, recipient: string): Promise<{ client: RawSmtpClient; rcptCode: number }> {
    const client = await RawSmtpClient.connect(harness.port('relay'), { localAddress });
    client.write(header);
    expectCode(await client.read(), 220);
    expectCode(await client.command('EHLO proxied.test'), 250);
    expectCode(await client.command('MAIL FROM:<someone@outside.example>'), 250);
    const rcpt = await client.command(`RCPT TO:<${recipient}>`);
    return { client, rcptCode: rcpt.code };
  }

  test('v1 from the trusted proxy: the real client 192.0.2.5 is in allowedCidrs and may relay', async () => {
    const { client, rcptCode } = await relayThroughProxy('PROXY TCP4 192.0.2.5 127.0.0.1 5555 25\r\n', '127.0.0.2', 'x@evil.example');
    try {
      assert.equal(rcptCode, 250);
      expectCode(await client.command('DATA'), 354);
      expectCode(await client.command('Subject: proxied\r\n\r\nx\r\n.'), 250);
      assert.equal(harness.collected.at(-1)?.transaction.clientAddress, '192.0.2.5');
    } finally {
      client.close();
    }
  });

  test('v1 from the trusted proxy: a client outside allowedCidrs is denied relaying', async () => {
    const { client, rcptCode } = await relayThroughProxy('PROXY TCP4 198.51.100.7 127.0.0.1 5555 25\r\n', '127.0.0.2', 'x@evil.example');
    client.close();
    assert.equal(rcptCode, 550);
  });

  test('v2 (IPv4) from the trusted proxy carries the real client address', async () => {
    const { client, rcptCode } = await relayThroughProxy(v2Header('192.0.2.77'), '127.0.0.2', 'x@evil.example');
    try {
      assert.equal(rcptCode, 250);
      expectCode(await client.command('DATA'), 354);
      expectCode(await client.command('Subject: v2\r\n\r\nx\r\n.'), 250);
      assert.equal(harness.collected.at(-1)?.transaction.clientAddress, '192.0.2.77');
    } finally {
      client.close();
    }
  });

  test('v2 (IPv6) from the trusted proxy: an outside IPv6 client is denied relaying', async () => {
    const { client, rcptCode } = await relayThroughProxy(v2Header('2001:db8:0:0:0:0:0:9'), '127.0.0.2', 'x@evil.example');
    client.close();
    assert.equal(rcptCode, 550);
  });

  test('v2 LOCAL (health check) keeps the proxy’s own address, which may not relay', async () => {
    const { client, rcptCode } = await relayThroughProxy(v2Header('0.0.0.0', Command.LOCAL), '127.0.0.2', 'x@evil.example');
    client.close();
    assert.equal(rcptCode, 550);
  });

  for (const [name, header] of [['v1', 'PROXY TCP4 192.0.2.5 127.0.0.1 5555 25\r\n'], ['v2', v2Header('192.0.2.5')]] as const) {
    test(`${name} from an untrusted peer (127.0.0.3) is refused with 421 and closed`, async () => {
      const client = await RawSmtpClient.connect(harness.port('relay'), { localAddress: '127.0.0.3' });
      try {
        client.write(header);
        const reply = await client.read();
        assert.equal(reply.code, 421);
        assert.match(reply.text, /PROXY protocol accepted only from trusted proxies/);
        await client.waitClosed();
      } finally {
        client.close();
      }
    });
  }

  for (const [name, data] of [
    ['no header (SMTP straight away)', 'EHLO direct.test\r\n'],
    ['a malformed v1 header', 'PROXY TCP4 not-an-ip 127.0.0.1 5555 25\r\n'],
    ['a v1 header with a mismatched family', 'PROXY TCP6 192.0.2.5 127.0.0.1 5555 25\r\n'],
    ['a truncated v2 header followed by garbage', Buffer.concat([v2Header('192.0.2.5').subarray(0, 12), Buffer.from([0x99, 0x11, 0, 12, 1, 2, 3])])],
  ] as const) {
    test(`a trusted peer that sends ${name} is refused`, async () => {
      const client = await RawSmtpClient.connect(harness.port('relay'), { localAddress: '127.0.0.2' });
      try {
        client.write(data);
        const reply = await client.read();
        assert.equal(reply.text, '421 4.7.0 relay.test Invalid PROXY header');
        await client.waitClosed();
      } finally {
        client.close();
      }
    });
  }

  test('refusals are counted as proxy_untrusted and proxy_invalid', async () => {
    const metric = await harness.metric('vmta_inbound_rejections_total');
    assert.match(metric, /reason="proxy_untrusted"\} 2/);
    assert.match(metric, /reason="proxy_invalid"\} 4/);
  });

  test('the header parser waits for a complete header and leaves the bytes after it', () => {
    const header = Buffer.from('PROXY TCP4 192.0.2.5 127.0.0.1 5555 25\r\n');
    assert.deepEqual(decodeProxyHeader(header.subarray(0, 20)), { state: 'incomplete' });
    assert.deepEqual(decodeProxyHeader(Buffer.concat([header, Buffer.from('EHLO')])), { state: 'done', peer: { address: '192.0.2.5', port: 5555 }, headerLength: header.length });
    assert.equal(decodeProxyHeader(Buffer.from(`PROXY TCP4 ${'1'.repeat(120)}\r\n`)).state, 'error');
    assert.equal(decodeProxyHeader(v2Header('192.0.2.5').subarray(0, 20)).state, 'incomplete');
  });
});
