import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { simpleParser } from 'mailparser';
import { loopbackAddresses, startSinkGroup, type SinkMx } from '../fixtures/sink-mx.ts';
import { settle, startHarness, waitFor, type Harness } from './harness.ts';

let sinks: SinkMx[];
let harness: Harness;
let sourceAddress: string;
let deadAddress: string;

before(async () => {
  sinks = await startSinkGroup([{}, {}, {}, { hideSmtpUtf8: true }, { connectReply: '421 4.7.0 Too busy, try another host' }, { dataReply: '452 4.3.1 Insufficient system storage' }]);
  const [primary, senderMx, fallback, noUtf8, busy, full] = sinks as [SinkMx, SinkMx, SinkMx, SinkMx, SinkMx, SinkMx];
  [sourceAddress, deadAddress] = loopbackAddresses(2) as [string, string];
  harness = await startHarness({
    mxPort: primary.port,
    zone: {
      'example.test': { mx: [{ preference: 10, exchange: 'mx.example.test' }] },
      'mx.example.test': { a: [primary.address] },
      'sender.test': { mx: [{ preference: 10, exchange: 'mx.sender.test' }] },
      'mx.sender.test': { a: [senderMx.address] },
      'fallback.test': { mx: [{ preference: 10, exchange: 'dead.fallback.test' }, { preference: 20, exchange: 'backup.fallback.test' }] },
      'dead.fallback.test': { a: [deadAddress] },
      'backup.fallback.test': { a: [fallback.address] },
      'smarthost.fallback.test': { a: [fallback.address] },
      'servfail.test': { rcode: 'SERVFAIL' },
      'blocked.test': { mx: [{ preference: 10, exchange: 'dead.blocked.test' }] },
      'dead.blocked.test': { a: [deadAddress] },
      'full.test': { mx: [{ preference: 10, exchange: 'mx.full.test' }] },
      'mx.full.test': { a: [full.address] },
      'nullmx.test': { mx: [{ preference: 0, exchange: '.' }] },
      'rejects.test': { mx: [{ preference: 10, exchange: 'mx.example.test' }] },
      'busy.test': { mx: [{ preference: 5, exchange: 'mx.busy.test' }, { preference: 50, exchange: 'backup.fallback.test' }] },
      'mx.busy.test': { a: [busy.address] },
      'ascii-only.test': { mx: [{ preference: 10, exchange: 'mx.ascii-only.test' }] },
      'mx.ascii-only.test': { a: [noUtf8.address] },
    },
    pool: {
      name: 'pool-a',
      virtualMtas: [{ name: 'vmta-1', sourceAddress, hostname: 'mta1.sender.test' }],
      domainDefaults: [{ match: '*', tlsPolicy: 'none' }, { match: 'routed.test', smtpHost: `smarthost.fallback.test:${fallback.port}` }],
    },
  });
  primary.options = { ...primary.options, rcptReplies: { 'nobody@rejects.test': '550 5.1.1 No such user here' } };
});

after(async () => {
  await harness?.close();
  await Promise.all((sinks ?? []).map((sink) => sink.close()));
});

test('the sink sees the VirtualMTA source address and EHLO name, and the message is removed from the spool', async () => {
  const primary = sinks[0]!;
  const stored = await harness.submit({ to: ['alice@example.test'], subject: 'source check' });
  const received = await waitFor(() => primary.messages.find((message) => message.to.includes('alice@example.test')), 'delivery to the primary sink');
  assert.equal(received.remoteAddress, sourceAddress);
  assert.equal(received.ehloName, 'mta1.sender.test');
  assert.equal(received.from, 'sender@sender.test');
  assert.match(received.body.toString(), /Subject: source check/);
  await waitFor(() => harness.spool.removed.includes(stored.id), 'removal from the spool');
  const record = await waitFor(async () => (await harness.accountingLines()).find((line) => line.queueId === stored.id), 'an accounting line');
  assert.equal(record.result, 'delivered');
  assert.equal(record.virtualMta, 'vmta-1');
  assert.equal(record.sourceAddress, sourceAddress);
  assert.equal(record.mxHost, 'mx.example.test');
  assert.equal(record.mxIp, primary.address);
  assert.equal(record.attempt, 1);
  assert.equal(record.tlsVersion, null);
  const metrics = await harness.metrics.registry.getSingleMetricAsString('vmta_delivery_attempts_total');
  assert.match(metrics, /vmta_delivery_attempts_total\{virtual_mta="vmta-1",domain="other",result="delivered",bounce_category="none"\} [1-9]/);
});

test('every attempt recorded for a message at one destination is told once (the idle memory release counts them): delivered, deferred and partly refused alike', async () => {
  for (const [delivered, deferred] of [[1, 0], [0, 1], [5, 3]] as const) {
    const before = harness.messagesAttempted();
    const stored = [
      ...(await Promise.all(Array.from({ length: delivered }, (_, index) => harness.submit({ to: [`told${index}@example.test`], subject: 'told' })))),
      ...(await Promise.all(Array.from({ length: deferred }, (_, index) => harness.submit({ to: [`told${index}@full.test`] })))),
      // Two destinations, so two attempts; from the null sender, so its refused recipient makes no DSN (one more).
      await harness.submit({ from: '', to: ['told@example.test', 'nobody@rejects.test'] }),
    ];
    await waitFor(async () => {
      const lines = await harness.accountingLines();
      return stored.every((message) => message.envelope.recipients.every((recipient) => lines.some((line) => line.queueId === message.id && line.recipient === recipient.address))) || undefined;
    }, 'an accounting line for every recipient');
    assert.equal(harness.messagesAttempted() - before, delivered + deferred + 2, `${delivered} delivered, ${deferred} deferred, 1 at two destinations`);
  }
});

test('a dead primary MX falls back to the next MX host', async () => {
  const fallback = sinks[2]!;
  await harness.submit({ to: ['bob@fallback.test'] });
  const received = await waitFor(() => fallback.messages.find((message) => message.to.includes('bob@fallback.test')), 'delivery to the backup MX');
  assert.equal(received.remoteAddress, sourceAddress);
});

test('smtpHost routes a domain to a smarthost without any MX lookup for it', async () => {
  const fallback = sinks[2]!;
  await harness.submit({ to: ['gina@routed.test'] });
  await waitFor(() => fallback.messages.find((message) => message.to.includes('gina@routed.test')), 'delivery to the smarthost');
  assert.equal(harness.dns.queries.some((query) => query.endsWith('routed.test')), false, 'routed.test itself was never looked up');
});

test('an MX that greets with 421 is skipped for the next MX host', async () => {
  const [, , fallback, , busy] = sinks as SinkMx[];
  await harness.submit({ to: ['frank@busy.test'] });
  await waitFor(() => fallback!.messages.find((message) => message.to.includes('frank@busy.test')), 'delivery to the backup MX');
  assert.ok(busy!.maxOpenSessions >= 1, 'the busy MX (preference 5) was tried first');
});

test('a null MX domain bounces at once and the sender gets an RFC 3464 DSN', async () => {
  const senderMx = sinks[1]!;
  const stored = await harness.submit({ to: ['carol@nullmx.test'], subject: 'to a null MX' });
  const dsn = await waitFor(() => senderMx.messages.find((message) => message.to.includes('sender@sender.test') && message.body.includes(stored.id)), 'the DSN at the sender MX');
  assert.equal(dsn.from, '', 'DSNs use the null sender');
  const parsed = await simpleParser(dsn.body);
  const contentType = parsed.headers.get('content-type') as { value: string; params: Record<string, string> };
  assert.equal(contentType.value, 'multipart/report');
  assert.equal(contentType.params['report-type'], 'delivery-status');
  // mailparser renders the message/delivery-status part inline as text: find its per-recipient block.
  const block = (parsed.text ?? '').split(/\n\s*\n/).find((paragraph) => paragraph.includes('Final-Recipient:'));
  assert.ok(block, 'a per-recipient delivery-status block');
  assert.match(block, /^Final-Recipient: rfc822; carol@nullmx\.test$/m);
  assert.match(block, /^Action: failed$/m);
  assert.match(block, /^Status: 5\.1\.10$/m);
  const headers = parsed.attachments.find((attachment) => attachment.contentType === 'text/rfc822-headers');
  assert.match(headers?.content.toString() ?? '', /Subject: to a null MX/);
  // Removed once its b record is synced (within the accounting's syncInterval), not before.
  await waitFor(async () => ((await harness.durableRecipients(stored.id)) === undefined ? true : undefined), 'the bounced message gone from the spool');
  assert.ok((await harness.accountingLines()).some((line) => line.queueId === stored.id && line.type === 'b'), 'its b record is in the accounting file');
});

test('a 5xx recipient bounces with its category while another recipient is delivered', async () => {
  const primary = sinks[0]!;
  const stored = await harness.submit({ to: ['nobody@rejects.test', 'dave@rejects.test'] });
  await waitFor(() => primary.messages.find((message) => message.to.includes('dave@rejects.test')), 'delivery of the good recipient');
  const lines = await waitFor(async () => {
    const found = (await harness.accountingLines()).filter((line) => line.queueId === stored.id);
    return found.length === 2 ? found : undefined;
  }, 'two accounting lines');
  const bounced = lines.find((line) => line.recipient === 'nobody@rejects.test');
  assert.equal(bounced?.result, 'bounced');
  assert.equal(bounced?.dsnStatus, '5.1.1');
  assert.equal(bounced?.bounceCategory, 'bad-mailbox');
  await waitFor(() => harness.spool.removed.includes(stored.id), 'removal once every recipient is final');
});

test('a DSN that cannot be delivered never produces another DSN', async () => {
  const dsnCount = async () => ((await harness.metrics.registry.getSingleMetric('vmta_dsn_generated_total')?.get())?.values ?? []).reduce((sum, sample) => sum + sample.value, 0);
  const before = await dsnCount();
  const stored = await harness.submit({ from: 'ghost@nullmx.test', to: ['erin@nullmx.test'] });
  await waitFor(() => harness.spool.removed.includes(stored.id), 'the bounce of the original');
  // The DSN goes to ghost@nullmx.test and bounces too (null MX); having the null sender, it ends there.
  await waitFor(async () => (await harness.accountingLines()).find((line) => line.recipient === 'ghost@nullmx.test' && line.sender === '' && line.result === 'bounced'), 'the DSN to bounce');
  await settle();
  assert.equal((await dsnCount()) - before, 1, 'exactly one DSN: for the original, none for the failed DSN');
  assert.equal((await harness.spool.contents()).some((entry) => entry.envelope.mailFrom === ''), false, 'no DSN left in the spool');
});

test('SIZE and BODY=8BITMIME are sent as the peer advertises them', async () => {
  const primary = sinks[0]!;
  const stored = await harness.submit({ to: ['eight@example.test'], body: 'Grüße aus Köln', eightBitMime: true });
  const received = await waitFor(() => primary.messages.find((message) => message.to.includes('eight@example.test')), 'delivery');
  assert.equal(received.mailParams.BODY, '8BITMIME');
  assert.equal(Number(received.mailParams.SIZE), stored.envelope.size);
  assert.match(received.body.toString('utf8'), /Grüße aus Köln/);
});

test('a non-ASCII address goes out with SMTPUTF8 where offered and bounces with 5.6.7 where not', async () => {
  const primary = sinks[0]!;
  await harness.submit({ to: ['jörg@example.test'], smtpUtf8: true });
  const received = await waitFor(() => primary.messages.find((message) => message.to.includes('jörg@example.test')), 'SMTPUTF8 delivery');
  assert.equal(received.mailParams.SMTPUTF8, true);
  const refused = await harness.submit({ to: ['jörg@ascii-only.test'], smtpUtf8: true });
  await waitFor(() => harness.spool.removed.includes(refused.id), 'the bounce');
  const last = harness.spool.recorded.filter((entry) => entry.id === refused.id).at(-1);
  assert.equal(last?.result.status, 'bounced');
  const record = await waitFor(async () => (await harness.accountingLines()).find((line) => line.queueId === refused.id), 'accounting');
  assert.equal(record.dsnStatus, '5.6.7');
  assert.equal(sinks[3]!.messages.length, 0);
});

test('a DNS failure defers (4.4.3) the destination as a whole, recorded durably for the destination (a restart finds the attempts and next retry), and is counted', async () => {
  const stored = await harness.submit({ to: ['h@servfail.test'] });
  const state = await waitFor(() => {
    const recipient = harness.engine.showMessage(stored.id)?.recipients[0];
    return recipient?.attempts ? recipient : undefined;
  }, 'the deferral');
  assert.equal(state.status, 'pending');
  assert.ok(state.nextAttemptAt, 'a retry time');
  assert.match(state.lastResult ?? '', /servfail\.test/i);
  const durable = await waitFor(async () => (await harness.recoveredRecipients(stored.id))?.find((recipient) => recipient.attempts > 0), 'the durable deferral record');
  assert.deepEqual([durable.status, durable.attempts, durable.nextAttemptAt], ['pending', state.attempts, state.nextAttemptAt], 'a restart finds the same attempt count and retry time');
  const queue = harness.engine.listQueues().find((row) => row.domain === 'servfail.test');
  assert.deepEqual([queue?.ready, queue?.scheduled], [0, 1]);
  const record = await waitFor(async () => (await harness.accountingLines()).find((line) => line.queueId === stored.id), 'accounting');
  assert.deepEqual([record.result, record.dsnStatus], ['deferred', '4.4.3']);
  assert.match(await harness.metrics.registry.getSingleMetricAsString('vmta_dns_failures_total'), /kind="temporary"\} [1-9]/);
});

test('a refused connection defers the whole destination: one durable record for the destination, no spool record per message and deferral; a restart finds each attempt count and the queue retry; later arrivals wait for it', async () => {
  const first = await Promise.all(['a', 'b', 'c'].map((user) => harness.submit({ to: [`${user}@blocked.test`] })));
  const blockedQueue = () => harness.engine.listQueues().find((row) => row.domain === 'blocked.test');
  await waitFor(() => (blockedQueue()?.scheduled === 3 && blockedQueue()?.ready === 0 && blockedQueue()?.inFlight === 0 ? true : undefined), 'all three scheduled');
  assert.ok(Date.parse(blockedQueue()!.nextRetryAt!) > Date.now() + 5 * 60_000, `retry follows the 10 m schedule: ${blockedQueue()!.nextRetryAt}`);
  assert.match(blockedQueue()!.lastError ?? '', /ECONNREFUSED|refused/i);
  const ids = new Set(first.map((stored) => stored.id));
  /** What a restarted engine holds of a message once it holds what memory holds (attempts, next retry). */
  // 60 s: the durable record waits for its fdatasync, which the power-cut and full-disk suites
  // running beside this one can hold up; the error says what a restart found against memory.
  const recoveredAsInMemory = async (id: string) => {
    let seen = '';
    try {
      return await waitFor(async () => {
        const recovered = (await harness.recoveredRecipients(id))?.[0];
        const recipient = harness.engine.showMessage(id)?.recipients[0];
        seen = `restart finds ${JSON.stringify(recovered)}, memory holds ${JSON.stringify(recipient)}`;
        return recovered && recipient && recovered.attempts === recipient.attempts && recovered.nextAttemptAt === recipient.nextAttemptAt ? recovered : undefined;
      }, `the deferral of ${id} as a restart finds it`, 60_000);
    } catch (error) {
      throw new Error(`${(error as Error).message}: ${seen}`, { cause: error });
    }
  };
  const states = [];
  for (const id of ids) states.push(await recoveredAsInMemory(id));
  assert.ok(states.every((state) => state.status === 'pending') && states.some((state) => state.attempts > 0), JSON.stringify(states));
  // No journal record per deferral: at most one per message, with no attempt, for a message queued
  // (stores finish out of order) after a deferral that took a message accepted after it.
  const journalled = harness.spool.recorded.filter((entry) => ids.has(entry.id));
  assert.ok(journalled.every((entry) => entry.result.attempts === 0) && new Set(journalled.map((entry) => entry.id)).size === journalled.length, JSON.stringify(journalled));
  const attempted = (await harness.accountingLines()).filter((line) => ids.has(String(line.queueId)));
  assert.ok(attempted.length >= 1 && attempted.every((line) => line.result === 'deferred'), JSON.stringify(attempted));

  const later = await harness.submit({ to: ['d@blocked.test'] });
  await settle();
  assert.deepEqual([blockedQueue()?.scheduled, blockedQueue()?.ready], [4, 0], 'a message arriving during the deferral waits for it');
  assert.equal((await harness.accountingLines()).some((line) => line.queueId === later.id), false, 'no connection attempt for it before the retry');

  assert.equal(harness.engine.retryNow({ domain: 'blocked.test' }), 4);
  await waitFor(async () => ((await harness.accountingLines()).some((line) => line.queueId === later.id && line.result === 'deferred') ? true : undefined), 'the retry now attempt');
  await waitFor(() => (blockedQueue()?.scheduled === 4 ? true : undefined), 'deferred again as a whole');
  assert.equal((await recoveredAsInMemory(later.id)).attempts, 1, 'the later arrival\'s first attempt is recorded too');
});

test('a 4xx reply to DATA defers every recipient of the message', async () => {
  const stored = await harness.submit({ to: ['i@full.test', 'j@full.test'] });
  const records = await waitFor(async () => {
    const found = (await harness.accountingLines()).filter((line) => line.queueId === stored.id);
    return found.length === 2 ? found : undefined;
  }, 'two accounting lines');
  assert.deepEqual(records.map((line) => [line.result, line.dsnStatus]), [['deferred', '4.3.1'], ['deferred', '4.3.1']]);
  assert.equal((await harness.durableRecipients(stored.id))?.every((recipient) => recipient.status === 'pending'), true);
});
