// A session process of a relay with several processes (docs/delivery-engine.md, "Several
// processes"): forked by the primary (session-workers.ts), it serves the SMTP sessions the primary
// hands it as sockets, after the primary applied the listener's PROXY and connection limits. It
// does what a session costs in CPU: TLS, the SMTP dialogue, reading DATA, the Received header,
// routing to a VirtualMTA and DKIM signing. It owns no state that must be exact for the pod: each
// finished message is stored by the primary (one spool, one writer), which answers before the
// client gets its 250; a suppression check at RCPT is the primary's; failed AUTH attempts are told
// to the primary, which tells the other processes. Metrics are read by the primary on each scrape.
import type net from 'node:net';
import type { RuntimeConfig } from '../config/schema.ts';
import { startAdmittedSession } from '../inbound/admitted-session.ts';
import { AuthFailureLimiter } from '../inbound/auth-failures.ts';
import { buildListenerSnapshot, type InboundDeps, type ListenerSnapshot } from '../inbound/listener-session.ts';
import { EventLog } from '../observe/event-log.ts';
import { createLogger } from '../observe/log.ts';
import { RelayMetrics } from '../observe/metrics.ts';
import { createMessageAcceptor } from '../routing/acceptance.ts';
import { DkimSigner } from '../signing/dkim-signer.ts';
import { QueueIdGenerator } from '../spool/queue-id.ts';
import type { Envelope, SpooledMessage } from '../spool/types.ts';
import type { FromWorker, SessionStart, ToWorker } from './session-protocol.ts';

const logger = createLogger('relay').child({ process: `session-${process.env.VMTA_SESSION_PROCESS ?? '?'}` });
const metrics = new RelayMetrics({ processMetrics: false });
const events = new EventLog(logger);
const sockets = new Set<net.Socket>();
let config: RuntimeConfig | undefined;
let signer: DkimSigner | undefined;
let snapshots = new Map<string, ListenerSnapshot>();
let hasRoom = true;

function send(message: FromWorker): void {
  if (process.connected) process.send!(message);
}

/** Requests answered by the primary, by request number. */
const pending = new Map<number, (answer: ToWorker) => void>();
let nextRequest = 0;
function ask(make: (request: number) => FromWorker): Promise<ToWorker> {
  const request = ++nextRequest;
  return new Promise((resolve) => {
    pending.set(request, resolve);
    send(make(request));
  });
}

const ids = new QueueIdGenerator();
const primarySpool = {
  allocateId: () => ids.next(),
  async store(envelope: Omit<Envelope, 'size'>, message: Buffer | readonly Buffer[], queueId = ids.next()): Promise<SpooledMessage> {
    const chunks = Buffer.isBuffer(message) ? [message] : [...message];
    const answer = await ask((request) => ({ kind: 'store', request, envelope, chunks, queueId }));
    if (answer.kind !== 'stored') throw new Error(answer.kind === 'store-failed' ? answer.message : `unexpected answer ${answer.kind}`);
    return { id: answer.queueId, envelope: { ...envelope, size: chunks.reduce((total, chunk) => total + chunk.length, 0) } };
  },
};

const authFailures = new AuthFailureLimiter((client, maxFailures, windowMs, at) => send({ kind: 'auth-failure', client, maxFailures, windowMs, at }));
const deps: InboundDeps = {
  accept: createMessageAcceptor({ spool: primarySpool, getConfig: () => config!, getSigner: () => signer, logger }),
  metrics,
  logger,
  events,
  spoolHasRoom: () => hasRoom,
  suppression: {
    refusal: async (address) => {
      const answer = await ask((request) => ({ kind: 'refusal?', request, address }));
      return answer.kind === 'refusal' ? answer.refusal : undefined;
    },
  },
  authFailures,
};

/** Configs are applied one after the other, in the order they came: a slower read of an older one never wins. */
let configuring: Promise<void> = Promise.resolve();
function configureInTurn(next: RuntimeConfig): Promise<void> {
  const applied = configuring.then(() => configure(next));
  configuring = applied.catch(() => undefined);
  return applied;
}

async function configure(next: RuntimeConfig): Promise<void> {
  const built = await Promise.all(next.listeners.map((listener) => buildListenerSnapshot(next, listener, deps, authFailures)));
  signer = await DkimSigner.load(next, metrics);
  config = next;
  snapshots = new Map(built.map((snapshot) => [snapshot.config.name, snapshot]));
}

function startSession(start: SessionStart, socket: net.Socket | undefined): void {
  if (!socket) return send({ kind: 'released', connection: start.connection });
  let released = false;
  const release = (): void => {
    if (released) return;
    released = true;
    sockets.delete(socket);
    send({ kind: 'released', connection: start.connection });
  };
  sockets.add(socket);
  socket.on('error', () => undefined);
  socket.once('close', release);
  const snapshot = snapshots.get(start.listener);
  if (!snapshot) return void socket.destroy();
  if (start.early && start.early.length > 0) socket.unshift(Buffer.from(start.early));
  startAdmittedSession(snapshot, socket, { remoteAddress: start.remoteAddress, remotePort: start.remotePort }, release, deps).catch((error: unknown) => {
    logger.info({ listener: start.listener, client: start.remoteAddress, err: (error as Error).message }, 'connection setup failed');
    socket.destroy();
  });
}

process.on('message', (message: ToWorker, handle: unknown) => {
  switch (message.kind) {
    case 'configure':
      configureInTurn(message.config).then(
        () => send({ kind: 'configured', request: message.request }),
        (error: unknown) => send({ kind: 'configured', request: message.request, error: (error as Error).message }),
      );
      return;
    case 'session':
      return startSession(message, handle as net.Socket | undefined);
    case 'stored':
    case 'store-failed':
    case 'refusal': {
      const resolve = pending.get(message.request);
      pending.delete(message.request);
      return resolve?.(message);
    }
    case 'room':
      hasRoom = message.hasRoom;
      return;
    case 'auth-failure':
      authFailures.mirror(message.client, message.maxFailures, message.windowMs, message.at);
      return;
    case 'metrics':
      metrics.registry.getMetricsAsJSON().then((values) => send({ kind: 'metrics', request: message.request, metrics: values }));
      return;
    case 'close-sessions':
      for (const socket of sockets) socket.destroy();
      return;
    case 'stop':
      for (const socket of sockets) socket.destroy();
      process.disconnect();
      return;
  }
});

// The primary's end of the channel closing means the primary is gone: nothing here may outlive it.
process.on('disconnect', () => {
  for (const socket of sockets) socket.destroy();
  setImmediate(() => process.exit(0));
});
send({ kind: 'hello' });
