// Garbage-connection flood against a real relay process, printing its memory before, at the
// peak and after: RSS (and VmHWM) from /proc, V8 heap and external memory from its /metrics.
// The flood comes from many loopback addresses at once to a STARTTLS relay port, a STARTTLS
// submission port and an implicit-TLS port: random bytes, connect-and-close, half TLS
// handshakes, full handshakes then garbage, STARTTLS then nothing, 20 KB lines without an end,
// and silent sockets held until the relay drops them.
//
//   npm run bench:flood [-- --connections 20000 --concurrency 400 --settle 30 --env NAME=VALUE]
//
// Last line (machine-readable):
//   rss_before_mb=N rss_peak_mb=N rss_after_mb=N heap_before_mb=N heap_after_mb=N external_after_mb=N
//
// Figures (20,000 connections, medians of 3 runs, 30 s idle): before the after-burst collection
// (mta/idle-memory-release.ts) 131 MB before, 199 MB peak, 148 MB after (145-183, with
// 30-70 MB of uncollected garbage in the V8 heap); with it 134, 220, 137 MB (132-138). What
// stays above the start is glibc's main arena (brk heap 11 MB -> 22-28 MB) while the V8 heap
// ends below where it started.
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import tls from 'node:tls';
import { parseArgs } from 'node:util';
import { RELAY_NODE_OPTIONS } from '../mta/process-options.ts';
import { baseRelayConfig, freePort, LISTENER_TLS_FILES, metricValue, startRelayProcess, temporaryDirectory, writeListenerFiles, writeRelayConfig } from '../test/fixtures/relay-process.ts';
import { smtplibSend } from '../test/fixtures/smtp-clients.ts';
import { createTestCa } from '../test/fixtures/tls.ts';

const { values: args } = parseArgs({
  options: {
    connections: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '400' },
    settle: { type: 'string', default: '30' },
    // NAME=VALUE added to the relay's environment (repeatable), to compare allocator settings.
    env: { type: 'string', multiple: true, default: [] },
  },
});
const extraEnv = Object.fromEntries(args.env.map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]));
const connections = Number(args.connections);
const concurrency = Number(args.concurrency);
const settleSeconds = Number(args.settle);

/**
 * Resident memory by where it lives, from /proc/PID/smaps: the brk heap (glibc's main malloc
 * arena), other anonymous mappings (V8's heap pages, glibc's thread arenas, thread stacks) and
 * file-backed pages (the node binary, libraries). What stays after a flood shows up here.
 */
async function residentByKind(pid: number) {
  const smaps = await readFile(`/proc/${pid}/smaps`, 'utf8');
  const kinds = { brkHeap: 0, anonymous: 0, file: 0 };
  let kind: keyof typeof kinds = 'anonymous';
  for (const line of smaps.split('\n')) {
    const mapping = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (mapping) {
      const name = mapping[1]!;
      kind = name === '[heap]' ? 'brkHeap' : name.startsWith('/') ? 'file' : 'anonymous';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) kinds[kind] += Number(rss[1]) / 1024;
  }
  return kinds;
}

async function memory(pid: number, adminUrl: string) {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN) / 1024;
  const metric = async (name: string) => ((await metricValue(adminUrl, name)) ?? Number.NaN) / 2 ** 20;
  return {
    rss: kib('VmRSS'),
    hwm: kib('VmHWM'),
    heap: await metric('nodejs_heap_size_used_bytes'),
    heapTotal: await metric('nodejs_heap_size_total_bytes'),
    external: await metric('nodejs_external_memory_bytes'),
    ...(await residentByKind(pid)),
  };
}

function describeMemory(figures: Awaited<ReturnType<typeof memory>>): string {
  const mb = (value: number) => value.toFixed(1);
  return `rss ${figures.rss.toFixed(0)} MB (brk heap ${mb(figures.brkHeap)}, other anonymous ${mb(figures.anonymous)}, files ${mb(figures.file)}), V8 heap used ${mb(figures.heap)} of ${mb(figures.heapTotal)} MB, external ${mb(figures.external)} MB`;
}

type Attack = (port: { plain: number; submission: number; implicit: number }, localAddress: string) => Promise<void>;

/** Resolves when the socket is gone, however it went; never longer than `limitMs`. */
function gone(socket: net.Socket, limitMs = 30_000): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      socket.destroy();
      resolve();
    }, limitMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.on('error', () => undefined);
  });
}

const ATTACKS: Record<string, Attack> = {
  randomBytes: async (port, localAddress) => {
    const socket = net.connect({ host: '127.0.0.1', port: port.plain, localAddress });
    socket.on('connect', () => socket.end(randomBytes(512)));
    await gone(socket, 5_000);
  },
  connectClose: async (port, localAddress) => {
    const socket = net.connect({ host: '127.0.0.1', port: port.implicit, localAddress });
    socket.on('connect', () => socket.destroy());
    await gone(socket);
  },
  halfHandshake: async (port, localAddress) => {
    // A ClientHello's first bytes, then nothing: the relay's TLS state waits for the rest.
    const socket = net.connect({ host: '127.0.0.1', port: port.implicit, localAddress });
    socket.on('connect', () => socket.write(Buffer.from('16030100c8010000c40303', 'hex')));
    setTimeout(() => socket.destroy(), 2_000);
    await gone(socket);
  },
  handshakeThenGarbage: async (port, localAddress) => {
    const socket = tls.connect({ socket: net.connect({ host: '127.0.0.1', port: port.implicit, localAddress }), rejectUnauthorized: false });
    socket.on('secureConnect', () => socket.end(randomBytes(4096)));
    await gone(socket, 10_000);
  },
  starttlsThenNothing: async (port, localAddress) => {
    const socket = net.connect({ host: '127.0.0.1', port: port.submission, localAddress });
    socket.on('connect', () => socket.write('EHLO x\r\nSTARTTLS\r\n'));
    setTimeout(() => socket.destroy(), 1_500);
    await gone(socket);
  },
  longLine: async (port, localAddress) => {
    const socket = net.connect({ host: '127.0.0.1', port: port.plain, localAddress });
    socket.on('connect', () => socket.write('X'.repeat(20_000)));
    await gone(socket, 5_000);
  },
  silent: async (port, localAddress) => {
    const socket = net.connect({ host: '127.0.0.1', port: port.implicit, localAddress });
    setTimeout(() => socket.destroy(), 3_000);
    await gone(socket);
  },
};

async function main(): Promise<void> {
  const directory = await temporaryDirectory('vmta-flood-');
  const ca = createTestCa();
  const certificate = ca.issue(['localhost']);
  await writeListenerFiles(directory.path, certificate, { alice: 'alice-password' });
  const ports = { plain: await freePort(), submission: await freePort(), implicit: await freePort() };
  const adminPort = await freePort();
  const limits = { maxConnections: 5_000, maxConnectionsPerClient: 200, idleTimeout: '5s' };
  await writeRelayConfig(
    directory.path,
    baseRelayConfig({
      listeners: [
        { name: 'relay', address: '127.0.0.1', port: ports.plain, relayPolicy: 'loopback', tls: { mode: 'starttls', ...LISTENER_TLS_FILES }, auth: { mechanisms: [] }, limits },
        { name: 'submission', address: '127.0.0.1', port: ports.submission, relayPolicy: 'submission', tls: { mode: 'starttls', required: true, ...LISTENER_TLS_FILES }, auth: { required: true }, limits },
        { name: 'submissions', address: '127.0.0.1', port: ports.implicit, relayPolicy: 'submission', tls: { mode: 'implicit', required: true, ...LISTENER_TLS_FILES }, auth: { required: true }, limits },
      ],
      relayPolicies: [
        { name: 'loopback', allowedCidrs: ['127.0.0.0/8'] },
        { name: 'submission', users: { secretPath: 'users', defaultAllowedSenderDomains: ['example.com'] } },
      ],
      admin: { address: '127.0.0.1', port: adminPort },
    }),
  );
  const relay = await startRelayProcess({ configDir: directory.path, adminPort, env: { LOG_LEVEL: 'warn', NODE_OPTIONS: RELAY_NODE_OPTIONS, ...extraEnv } });
  const pid = relay.child.pid!;
  try {
    for (let index = 0; index < 20; index++) {
      const sent = await smtplibSend({ host: '127.0.0.1', port: ports.plain, mode: 'plain', from: 'a@example.com', to: ['b@example.org'], message: 'Subject: warm-up\r\n\r\nx\r\n' });
      if (!sent.stdout.startsWith('OK')) throw new Error(`warm-up failed: ${sent.stdout}${sent.stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const before = await memory(pid, relay.adminUrl);
    const kinds = Object.values(ATTACKS);
    let next = 0;
    let peak = before.rss;
    const sampler = setInterval(() => void memory(pid, relay.adminUrl).then((now) => (peak = Math.max(peak, now.rss)), () => undefined), 500);
    const started = Date.now();
    await Promise.all(
      Array.from({ length: concurrency }, async (_, worker) => {
        while (next < connections) {
          const index = next++;
          const localAddress = `127.0.${1 + (worker % 200)}.${1 + (index % 250)}`;
          await kinds[index % kinds.length]!(ports, localAddress).catch(() => undefined);
        }
      }),
    );
    const floodSeconds = (Date.now() - started) / 1000;
    while (((await metricValue(relay.adminUrl, 'vmta_inbound_connections_active{listener="submissions"}')) ?? 0) > 0) await new Promise((resolve) => setTimeout(resolve, 500));
    // How memory comes down while the relay idles: one line every 5 s.
    const idleStarted = Date.now();
    while (Date.now() - idleStarted < settleSeconds * 1000) {
      await new Promise((resolve) => setTimeout(resolve, Math.min(5_000, settleSeconds * 1000 - (Date.now() - idleStarted))));
      console.log(`idle ${((Date.now() - idleStarted) / 1000).toFixed(0)} s: ${describeMemory(await memory(pid, relay.adminUrl))}`);
    }
    clearInterval(sampler);
    const after = await memory(pid, relay.adminUrl);
    const sent = await smtplibSend({ host: '127.0.0.1', port: ports.plain, mode: 'plain', from: 'a@example.com', to: ['b@example.org'], message: 'Subject: after\r\n\r\nx\r\n' });
    console.log(`flood: ${connections} garbage connections (${Object.keys(ATTACKS).join(', ')}) from ${concurrency} workers in ${floodSeconds.toFixed(1)} s; relay still accepts: ${sent.stdout.trim()}`);
    console.log(`before: ${describeMemory(before)}`);
    console.log(`after ${settleSeconds} s idle: ${describeMemory(after)}; peak rss ${Math.max(peak, after.rss).toFixed(0)} MB, VmHWM ${after.hwm.toFixed(0)} MB`);
    console.log(`rss_before_mb=${before.rss.toFixed(0)} rss_peak_mb=${Math.max(peak, after.rss).toFixed(0)} rss_after_mb=${after.rss.toFixed(0)} heap_before_mb=${before.heap.toFixed(1)} heap_after_mb=${after.heap.toFixed(1)} external_after_mb=${after.external.toFixed(1)}`);
  } finally {
    await relay.kill('SIGKILL');
    ca.cleanup();
    await directory.remove();
  }
}

await main();
