// The greeting delay is a per-listener setting. smtp-server 3.21 holds every connection for a
// fixed 100 ms before its greeting; mta/inbound/smtp-connection.ts overrides that through
// SMTPConnection.init/connectionReady. These tests fail if a library upgrade changes how that
// works: with 0 the greeting must come well before the library's 100 ms, with 300 ms not before
// 300 ms, and a client talking before the greeting is refused.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RawSmtpClient } from '../fixtures/smtp-clients.ts';
import { startHarness, type Harness } from './harness.ts';

async function greetingAfterMs(port: number): Promise<number> {
  const started = performance.now();
  const client = await RawSmtpClient.connect(port);
  try {
    const reply = await client.read();
    assert.equal(reply.code, 220);
    return performance.now() - started;
  } finally {
    client.close();
  }
}

describe('greeting delay', () => {
  let harness: Harness;
  before(async () => {
    harness = await startHarness({
      mutate: (input) => {
        input.listeners[0]!.limits = { greetingDelay: '300ms' };
        input.listeners[1]!.limits = { greetingDelay: '0s' };
      },
    });
  });
  after(() => harness.close());

  test('with greetingDelay 0 the greeting is not held for the library’s fixed 100 ms', async () => {
    // Best of several, so a busy machine does not make this flaky; the library alone would never go below 100 ms.
    const samples: number[] = [];
    for (let index = 0; index < 5; index++) samples.push(await greetingAfterMs(harness.port('submission')));
    assert.ok(Math.min(...samples) < 80, `fastest greeting after ${Math.min(...samples).toFixed(1)} ms`);
  });

  test('with greetingDelay 300ms the greeting comes no earlier than 300 ms', async () => {
    const elapsed = await greetingAfterMs(harness.port('relay'));
    assert.ok(elapsed >= 295, `greeting after ${elapsed.toFixed(1)} ms`);
  });

  test('a client that talks before the greeting is refused with 421', async () => {
    const client = await RawSmtpClient.connect(harness.port('relay'));
    try {
      client.write('EHLO early.test\r\n');
      const reply = await client.read();
      assert.equal(reply.code, 421);
      assert.match(reply.text, /talk too soon/);
      await client.waitClosed();
    } finally {
      client.close();
    }
  });
});
