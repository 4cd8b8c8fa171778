// Every listener limit with real sockets: total and per-client connections, SIZE (advertised,
// MAIL FROM SIZE= and DATA), recipients per message, idle and command timeouts, errors before
// disconnect, many idle connections not starving others, and a spool failure answered 451.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { RuntimeConfigInput } from '../../mta/config/schema.ts';
import { RawSmtpClient, smtplibSend } from '../fixtures/smtp-clients.ts';
import { expectCode, openSession, startHarness, type Harness } from './harness.ts';

type Limits = NonNullable<RuntimeConfigInput['listeners'][number]['limits']>;

function relayLimits(limits: Limits) {
  return (input: RuntimeConfigInput) => {
    input.listeners[0]!.limits = limits;
  };
}

describe('connection limits', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness({ mutate: relayLimits({ maxConnections: 4, maxConnectionsPerClient: 2 }) });
  });
  after(() => harness.close());

  test('a third connection from one client gets 421 4.7.0; another client still gets in; the fifth overall gets 421', async () => {
    const first = await openSession(harness, 'relay');
    const second = await openSession(harness, 'relay');
    const clients = [first, second];
    try {
      const third = await RawSmtpClient.connect(harness.port('relay'));
      clients.push(third);
      assert.equal((await third.read()).text, '421 4.7.0 relay.test Too many connections from your address, try again later');
      await third.waitClosed();
      const other = await openSession(harness, 'relay', { localAddress: '127.0.0.4' });
      const other2 = await openSession(harness, 'relay', { localAddress: '127.0.0.5' });
      clients.push(other, other2);
      const fifth = await RawSmtpClient.connect(harness.port('relay'), { localAddress: '127.0.0.6' });
      clients.push(fifth);
      assert.equal((await fifth.read()).text, '421 4.7.0 relay.test Too many connections, try again later');
      await fifth.waitClosed();
    } finally {
      clients.forEach((client) => client.close());
    }
    const metric = await harness.metric('vmta_inbound_rejections_total');
    assert.match(metric, /reason="too_many_connections_per_client"\} 1/);
    assert.match(metric, /reason="too_many_connections"\} 1/);
  });
});

describe('connection slots after STARTTLS', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness({ mutate: relayLimits({ maxConnections: 2, maxConnectionsPerClient: 2 }) });
  });
  after(() => harness.close());

  test('sessions upgraded with STARTTLS give their slots back when they end', async () => {
    for (let round = 0; round < 3; round++) {
      const clients = [await openSession(harness, 'relay', { starttls: true }), await openSession(harness, 'relay', { starttls: true })];
      for (const client of clients) {
        client.write('QUIT\r\n');
        await client.waitClosed();
      }
    }
    for (let tries = 0; tries < 50 && !/listener="relay"\} 0/.test(await harness.metric('vmta_inbound_connections_active')); tries++) await new Promise((resolve) => setTimeout(resolve, 20));
    const last = await openSession(harness, 'relay');
    last.close();
  });
});

describe('message limits', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness({ mutate: relayLimits({ maxMessageSize: 2048, maxRecipients: 2, maxErrors: 100 }) });
  });
  after(() => harness.close());

  test('SIZE is advertised and a larger MAIL FROM SIZE= gets 552 5.3.4', async () => {
    const client = await RawSmtpClient.connect(harness.port('relay'));
    try {
      expectCode(await client.read(), 220);
      assert.match((await client.command('EHLO client.test')).text, /^250 SIZE 2048$/m);
      assert.match((await client.command('MAIL FROM:<a@outside.example> SIZE=5000')).text, /^552 5\.3\.4 /);
    } finally {
      client.close();
    }
  });

  test('a message over the size limit gets 552 5.3.4 after DATA and is not accepted', async () => {
    const client = await openSession(harness, 'relay');
    try {
      expectCode(await client.command('MAIL FROM:<a@outside.example>'), 250);
      expectCode(await client.command('RCPT TO:<x@allowed.example>'), 250);
      expectCode(await client.command('DATA'), 354);
      const reply = await client.command(`Subject: big\r\n\r\n${'x'.repeat(78)}\r\n`.repeat(40) + '.');
      assert.match(reply.text, /^552 5\.3\.4 /);
      assert.equal(harness.collected.length, 0);
      // The session is still usable.
      expectCode(await client.command('NOOP'), 250);
    } finally {
      client.close();
    }
    assert.match(await harness.metric('vmta_inbound_rejections_total'), /reason="message_too_large"\} 2/);
  });

  test('the third recipient gets 452 4.5.3; a repeated recipient does not count', async () => {
    const client = await openSession(harness, 'relay');
    try {
      expectCode(await client.command('MAIL FROM:<a@outside.example>'), 250);
      expectCode(await client.command('RCPT TO:<one@allowed.example>'), 250);
      expectCode(await client.command('RCPT TO:<two@allowed.example>'), 250);
      expectCode(await client.command('RCPT TO:<two@allowed.example>'), 250);
      assert.equal((await client.command('RCPT TO:<three@allowed.example>')).text, '452 4.5.3 Too many recipients');
      expectCode(await client.command('DATA'), 354);
      expectCode(await client.command('Subject: two\r\n\r\nx\r\n.'), 250);
      assert.deepEqual(harness.collected.at(-1)?.transaction.recipients.map((rcpt) => rcpt.address), ['one@allowed.example', 'two@allowed.example']);
    } finally {
      client.close();
    }
  });

  test('when the acceptor fails the client gets 451 4.3.0 and spool_failure is counted', async () => {
    harness.failAccept = true;
    const client = await openSession(harness, 'relay');
    try {
      expectCode(await client.command('MAIL FROM:<a@outside.example>'), 250);
      expectCode(await client.command('RCPT TO:<one@allowed.example>'), 250);
      expectCode(await client.command('DATA'), 354);
      assert.equal((await client.command('Subject: x\r\n\r\nx\r\n.')).text, '451 4.3.0 Local error, message not queued; try again later');
    } finally {
      harness.failAccept = false;
      client.close();
    }
    assert.match(await harness.metric('vmta_inbound_rejections_total'), /reason="spool_failure"\} 1/);
  });
});

describe('timeouts and errors', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness({
      mutate: (input) => {
        input.listeners[0]!.limits = { idleTimeout: '1s', commandTimeout: '1m', maxErrors: 3 };
        input.listeners[1]!.limits = { idleTimeout: '1m', commandTimeout: '1500ms' };
      },
    });
  });
  after(() => harness.close());

  test('an idle session is closed with 421 after idleTimeout', async () => {
    const client = await openSession(harness, 'relay');
    try {
      const reply = await client.read(10_000);
      assert.equal(reply.code, 421);
      await client.waitClosed();
    } finally {
      client.close();
    }
  });

  test('a client trickling a command byte by byte is closed with 421 4.4.2 after commandTimeout', async () => {
    const client = await openSession(harness, 'submission');
    try {
      const started = Date.now();
      const trickle = setInterval(() => client.write('N'), 200);
      try {
        const reply = await client.read(15_000);
        assert.equal(reply.text, '421 4.4.2 Command timeout, closing connection');
        assert.ok(Date.now() - started >= 1000);
      } finally {
        clearInterval(trickle);
      }
      await client.waitClosed();
    } finally {
      client.close();
    }
  });

  test('a slow spool does not trip the command timeout: the client waits for its 250', async () => {
    harness.acceptDelayMs = 2500;
    const client = await openSession(harness, 'submission', { starttls: true, auth: { user: 'alice', password: 'alice-secret' } });
    try {
      expectCode(await client.command('MAIL FROM:<alice@alice.example>'), 250);
      expectCode(await client.command('RCPT TO:<x@anywhere.example>'), 250);
      expectCode(await client.command('DATA'), 354);
      assert.match((await client.command('Subject: slow\r\n\r\nx\r\n.')).text, /^250 2\.0\.0 Ok: queued as /);
    } finally {
      harness.acceptDelayMs = 0;
      client.close();
    }
  });

  test('after maxErrors error replies the session gets 421 4.7.0 and is closed', async () => {
    const client = await openSession(harness, 'relay');
    try {
      assert.match((await client.command('BOGUS one')).text, /^500 /);
      assert.match((await client.command('RCPT TO:<x@allowed.example>')).text, /^503 /);
      assert.match((await client.command('MAIL FROM:<bad address>')).text, /^501 /);
      assert.equal((await client.read()).text, '421 4.7.0 Too many errors, closing connection');
      await client.waitClosed();
    } finally {
      client.close();
    }
    assert.match(await harness.metric('vmta_inbound_rejections_total'), /reason="too_many_errors"\} 1/);
  });
});

describe('many idle connections', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness({ mutate: relayLimits({ maxConnections: 2000, maxConnectionsPerClient: 1000 }) });
  });
  after(() => harness.close());

  test('320 idle connections do not stop a real client from being served', async () => {
    const idle: net.Socket[] = [];
    try {
      for (let index = 0; index < 320; index++) {
        const socket = net.connect({ host: '127.0.0.1', port: harness.port('relay'), localAddress: `127.0.1.${(index % 200) + 1}` });
        socket.on('error', () => undefined);
        idle.push(socket);
      }
      await Promise.all(idle.map((socket) => new Promise((resolve) => (socket.readyState === 'open' ? resolve(null) : socket.once('connect', resolve)))));
      const result = await smtplibSend({ host: '127.0.0.1', port: harness.port('relay'), mode: 'plain', from: 'a@outside.example', to: ['x@allowed.example'], message: 'Subject: busy\r\n\r\nx\r\n' });
      assert.match(result.stdout, /^OK 250 /, result.stdout + result.stderr);
      assert.match(await harness.metric('vmta_inbound_connections_active'), /listener="relay"\} 32[01]/);
    } finally {
      idle.forEach((socket) => socket.destroy());
    }
  });
});
