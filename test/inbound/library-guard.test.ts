// Guards for the library internals the relay relies on. mta/inbound/smtp-connection.ts overrides
// methods of smtp-server's SMTPConnection and reads its private state (`_ready`, `_upgrading`,
// `_nextHandler`, `_handlerPending`, `_closing`, `_closed`, `_server`, `_socket`; `_upgrading`
// through upgrade(), _onError() and _onClose() of a failed STARTTLS handshake); mta/delivery/
// outbound-connection.ts reads nodemailer's EHLO reply at 'connect' (`lastServerResponse`) and
// its `_socket`, and replaces `_getDsnRcptToArgs` (reading `_recipientQueue`) to give each
// recipient its own DSN parameters. Each one is checked here for the behaviour the relay assumes, on a real session
// over a real socket, and the versions are pinned: an upgrade fails the first test until someone
// has re-read these members in the new version and updated CHECKED_VERSIONS.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type net from 'node:net';
import { TLSSocket } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import SMTPConnectionClient from 'nodemailer/lib/smtp-connection';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { SMTPConnection, type SMTPConnectionOptions } from 'smtp-server/lib/smtp-connection.js';
import { ehloKeywords, OutboundConnection } from '../../mta/delivery/outbound-connection.ts';
import { OVERRIDDEN_METHODS } from '../../mta/inbound/smtp-connection.ts';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';
import { createTestCa, type TestCa } from '../fixtures/tls.ts';

const CHECKED_VERSIONS = { 'smtp-server': '3.21.6', nodemailer: '10.6.0' } as const;

/** Arity of every SMTPConnection method smtp-connection.ts overrides or calls through super. */
const METHOD_ARITY: Record<(typeof OVERRIDDEN_METHODS)[number], number> = {
  init: 0, connectionReady: 1, send: 3, close: 0, upgrade: 2, _onClose: 0, _onError: 1, _onCommand: 2, _createParser: 0,
  handler_EHLO: 2, handler_AUTH: 2, handler_MAIL: 2, handler_RCPT: 2,
};

/** Records what the relay's overrides depend on: parser writes, command dispatch and its callbacks. */
class ProbeConnection extends SMTPConnection {
  bytesThroughParser = 0;
  commands: { line: string; callback: string; unfinished: number }[] = [];
  closeCalls = 0;
  #unfinished = 0;

  override _createParser(): ReturnType<SMTPConnection['_createParser']> {
    const parser = super._createParser();
    const write = parser.write.bind(parser) as (chunk: Buffer, callback?: (error?: Error | null) => void) => boolean;
    parser.write = ((chunk: Buffer, encodingOrCallback?: unknown, callback?: (error?: Error | null) => void) => {
      this.bytesThroughParser = (this.bytesThroughParser ?? 0) + chunk.length;
      return write(chunk, typeof encodingOrCallback === 'function' ? (encodingOrCallback as typeof callback) : callback);
    }) as typeof parser.write;
    return parser;
  }

  override _onCommand(command: Buffer, callback?: () => void): void {
    this.commands.push({ line: command.toString(), callback: typeof callback, unfinished: this.#unfinished });
    this.#unfinished += 1;
    // The callback is held back a little: the parser must not dispatch the next line before it runs.
    super._onCommand(command, () => setTimeout(() => {
      this.#unfinished -= 1;
      callback?.();
    }, 20));
  }

  override _onClose(): void {
    this.closeCalls += 1;
    this.upgradingAt.push(`close:${this._upgrading}`);
    super._onClose();
  }

  /** `_upgrading` at each upgrade(), _onError() and _onClose(): how the relay tells a failed STARTTLS handshake. */
  upgradingAt: string[] = [];

  override upgrade(callback: () => void, secureCallback?: () => void): void {
    super.upgrade(callback, secureCallback);
    this.upgradingAt.push(`upgrade:${this._upgrading}`);
  }

  override _onError(error: Error & { code?: string }): void {
    this.upgradingAt.push(`error:${this._upgrading}`);
    super._onError(error);
  }
}

class ProbeServer extends SMTPServer {
  override connect(socket: net.Socket, socketOptions?: SMTPConnectionOptions | null): void {
    const connection = new ProbeConnection(this, socket, socketOptions ?? undefined);
    this.connections.add(connection);
    connection.on('error', () => undefined);
    connection.init();
  }
}

function installedVersion(name: string): string {
  const require = createRequire(import.meta.url);
  return (JSON.parse(readFileSync(require.resolve(`${name}/package.json`), 'utf8')) as { version: string }).version;
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

async function listen(options: SMTPServerOptions, Server: typeof SMTPServer = SMTPServer): Promise<{ server: SMTPServer; port: number }> {
  const server = new Server({ logger: false, disableReverseLookup: true, ...options });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.server.address() as net.AddressInfo).port };
}

test('the installed smtp-server and nodemailer are the versions these guards were checked against', () => {
  const pinned = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { dependencies: Record<string, string> }).dependencies;
  for (const [name, version] of Object.entries(CHECKED_VERSIONS)) {
    assert.equal(pinned[name], version, `package.json pins ${name} ${pinned[name]}: re-check the members listed in this file's header, then update CHECKED_VERSIONS`);
    assert.equal(installedVersion(name), version, `${name} ${installedVersion(name)} is installed, ${version} was checked`);
  }
});

test('every SMTPConnection method the relay overrides exists with the arity it is called with', () => {
  assert.deepEqual(Object.keys(METHOD_ARITY).sort(), [...OVERRIDDEN_METHODS].sort(), 'each overridden method has a guard here');
  for (const [method, arity] of Object.entries(METHOD_ARITY)) {
    const member = (SMTPConnection.prototype as unknown as Record<string, unknown>)[method];
    assert.equal(typeof member, 'function', `SMTPConnection.${method}`);
    assert.equal((member as (...args: unknown[]) => unknown).length, arity, `SMTPConnection.${method} takes ${arity} arguments`);
  }
});

describe('smtp-server private state on a real session', () => {
  let ca: TestCa;
  let server: SMTPServer;
  let port: number;
  let releaseMailFrom: (() => void) | undefined;
  let pendingInsideHandler: boolean | undefined;

  before(async () => {
    ca = createTestCa();
    const certificate = ca.issue(['localhost']);
    ({ server, port } = await listen({
      key: certificate.key,
      cert: certificate.cert,
      authOptional: true,
      authMethods: ['LOGIN'],
      onAuth: (auth, _session, callback) => callback(null, { user: auth.username }),
      onMailFrom(_address, _session, callback) {
        pendingInsideHandler = connectionOf(server)._handlerPending;
        releaseMailFrom = () => callback();
      },
    }, ProbeServer));
  });
  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    ca.cleanup();
  });

  function connectionOf(of: SMTPServer): ProbeConnection {
    const [connection] = [...of.connections];
    assert.ok(connection instanceof ProbeConnection, 'the server made its connection through connect()');
    return connection;
  }

  test('greeting, STARTTLS, AUTH continuation, a pending handler and close move the fields the relay reads', async () => {
    const client = await RawSmtpClient.connect(port);
    assert.equal((await client.read()).code, 220);
    const connection = connectionOf(server);
    assert.equal(connection._server, server);
    assert.deepEqual([connection._ready, connection._upgrading, connection._nextHandler, connection._handlerPending, connection._closing, connection._closed], [true, false, false, false, false, false]);

    client.write('NOOP\r\nNOOP\r\n');
    assert.deepEqual([(await client.read()).code, (await client.read()).code], [250, 250]);
    assert.deepEqual(connection.commands.map(({ line, callback, unfinished }) => [line, callback, unfinished]), [['NOOP', 'function', 0], ['NOOP', 'function', 0]], 'one line per call, without CRLF, the next only after the callback');
    assert.ok(connection.bytesThroughParser >= 'NOOP\r\nNOOP\r\n'.length, 'socket bytes pass through parser.write()');

    assert.equal((await client.command('EHLO guard.test')).code, 250);
    assert.equal((await client.command('STARTTLS')).code, 220);
    assert.equal(connection._upgrading, true, 'upgrading between the 220 and the handshake');
    await client.startTls(ca.ca);
    await until(() => connection.secure, 'the server side of the handshake');
    assert.equal(connection._upgrading, false);

    connection.session.disabledCommands = ['AUTH'];
    assert.doesNotMatch((await client.command('EHLO guard.test')).text, /AUTH/, 'EHLO honours session.disabledCommands');
    connection.session.disabledCommands = [];
    assert.match((await client.command('EHLO guard.test')).text, /AUTH LOGIN/);
    assert.equal((await client.command('AUTH LOGIN')).code, 334);
    assert.equal(typeof connection._nextHandler, 'function', 'an AUTH continuation is a queued handler');
    assert.equal((await client.command(Buffer.from('user').toString('base64'))).code, 334);
    assert.equal((await client.command(Buffer.from('secret').toString('base64'))).code, 235);
    assert.equal(connection._nextHandler, false);

    client.write('MAIL FROM:<a@guard.test>\r\n');
    await until(() => releaseMailFrom !== undefined, 'onMailFrom');
    assert.equal(pendingInsideHandler, true);
    assert.equal(connection._handlerPending, true, 'pending while the application handler has not called back');
    releaseMailFrom!();
    assert.equal((await client.read()).code, 250);
    assert.equal(connection._handlerPending, false);

    connection.send(550, '5.7.1 guard text', false);
    assert.equal((await client.read()).text, '550 5.7.1 guard text', 'context false adds no enhanced code');

    assert.deepEqual(connection.upgradingAt, ['upgrade:true'], 'STARTTLS goes through upgrade(), which sets _upgrading until the handshake completes');
    connection.close();
    assert.deepEqual([connection._closing, connection._closed], [true, false], 'closing until the socket has closed');
    await client.waitClosed();
    await until(() => connection._closed, 'the close event');
    assert.deepEqual([connection._closing, connection.closeCalls], [false, 1]);
  });
});

test('a failed STARTTLS handshake reaches _onError, and then _onClose, while _upgrading is still set', async () => {
  const ca = createTestCa();
  const certificate = ca.issue(['localhost']);
  const { server, port } = await listen({ key: certificate.key, cert: certificate.cert, authOptional: true }, ProbeServer);
  try {
    const client = await RawSmtpClient.connect(port);
    assert.equal((await client.read()).code, 220);
    assert.equal((await client.command('EHLO guard.test')).code, 250);
    assert.equal((await client.command('STARTTLS')).code, 220);
    const [connection] = [...server.connections] as ProbeConnection[];
    client.write('not a ClientHello\r\n');
    await client.waitClosed();
    await until(() => connection!.upgradingAt.some((entry) => entry.startsWith('close:')), 'the close of the failed session');
    assert.deepEqual(connection!.upgradingAt.filter((entry, index, all) => all.indexOf(entry) === index), ['upgrade:true', 'error:true', 'close:true']);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    ca.cleanup();
  }
});

describe("nodemailer's EHLO reply at 'connect'", () => {
  let ca: TestCa;
  const servers: SMTPServer[] = [];
  before(() => {
    ca = createTestCa();
  });
  after(async () => {
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    ca.cleanup();
  });

  for (const { hideSMTPUTF8, starttls } of [{ hideSMTPUTF8: false, starttls: false }, { hideSMTPUTF8: true, starttls: false }, { hideSMTPUTF8: false, starttls: true }, { hideSMTPUTF8: true, starttls: true }]) {
    test(`lastServerResponse is the ${starttls ? 'post-STARTTLS ' : ''}EHLO reply${hideSMTPUTF8 ? ' without SMTPUTF8' : ''}`, async () => {
      const certificate = ca.issue(['localhost']);
      const { server, port } = await listen({ key: certificate.key, cert: certificate.cert, authOptional: true, hideSMTPUTF8, hideSTARTTLS: !starttls });
      servers.push(server);
      const client = new SMTPConnectionClient({ host: '127.0.0.1', port, ignoreTLS: !starttls, logger: false, tls: { rejectUnauthorized: false } });
      await new Promise<void>((resolve, reject) => {
        client.once('error', reject);
        client.connect(() => resolve());
      });
      const keywords = ehloKeywords(client.lastServerResponse);
      client.close();
      assert.equal(keywords.has('PIPELINING'), true, `an EHLO reply: ${String(client.lastServerResponse)}`);
      assert.equal(keywords.has('SMTPUTF8'), !hideSMTPUTF8);
      assert.equal(keywords.has('STARTTLS'), false, 'after STARTTLS the reply read is the second EHLO');
      assert.equal(client.secure, starttls);
      assert.equal(client._socket instanceof TLSSocket, starttls, '_socket is the TLS socket once secure');

      const outbound = await OutboundConnection.open({ target: { name: 'localhost', address: '127.0.0.1', port }, ehloName: 'guard.test', tlsPolicy: starttls ? 'required' : 'none', trustedCa: ca.ca });
      assert.equal(outbound.supportsSmtpUtf8, !hideSMTPUTF8);
      assert.equal(outbound.tls.kind, starttls ? 'tls' : 'plain');
      outbound.close();
    });
  }
});

describe("nodemailer's per-RCPT DSN arguments", () => {
  test('_getDsnRcptToArgs is called once per RCPT TO, right after the recipient is pushed on _recipientQueue, and what it returns is sent', async () => {
    const seen: string[] = [];
    const { server, port } = await listen({
      authOptional: true,
      hideSTARTTLS: true,
      onRcptTo: (address, _session, callback) => {
        seen.push(`${address.address} ${JSON.stringify(address.args)}`);
        callback();
      },
    });
    try {
      const client = new SMTPConnectionClient({ host: '127.0.0.1', port, ignoreTLS: true, logger: false });
      await new Promise<void>((resolve, reject) => {
        client.once('error', reject);
        client.connect(() => resolve());
      });
      const internals = client as unknown as { _recipientQueue: unknown; _getDsnRcptToArgs: unknown };
      assert.equal(typeof internals._getDsnRcptToArgs, 'function');
      assert.equal((internals._getDsnRcptToArgs as () => string).length, 0);
      const calls: string[] = [];
      internals._getDsnRcptToArgs = () => {
        const queue = internals._recipientQueue as string[];
        assert.ok(Array.isArray(queue), '_recipientQueue is an array');
        const current = queue[queue.length - 1]!;
        calls.push(current);
        return ` NOTIFY=${current.startsWith('a') ? 'SUCCESS' : 'NEVER'}`;
      };
      await new Promise<void>((resolve, reject) => client.send({ from: 's@guard.test', to: ['a@guard.test', 'b@guard.test'] }, 'Subject: g\r\n\r\ng\r\n', (error) => (error ? reject(error) : resolve())));
      client.close();
      assert.deepEqual(calls, ['a@guard.test', 'b@guard.test']);
      assert.deepEqual(seen, ['a@guard.test {"NOTIFY":"SUCCESS"}', 'b@guard.test {"NOTIFY":"NEVER"}']);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
