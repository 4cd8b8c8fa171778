// Draining this relay before its pod goes away: stop accepting (listeners closed, /readyz 503),
// then either hand every queued message to peers of the pool (mode "handover") or keep
// delivering it here (mode "deliver", when no peer remains), until the queue is empty or the
// deadline. A message handed over is recorded as final for the recipients it carried only after
// the peer answered that it is durable there. What is left stays in this relay's spool and
// delivery, and the report says how much. Cancelling opens the listeners again.
import type { Logger } from 'pino';
import type { DeliveryEngine } from '../delivery/delivery-engine.ts';
import type { QueuedMessage } from '../delivery/destination-queue.ts';
import type { RecipientResult, Spool } from '../spool/types.ts';
import { parsePeer, sendHandover, type HandoverTarget } from './handover-sender.ts';

export type DrainState = 'idle' | 'draining' | 'drained' | 'incomplete';

export interface DrainRequest {
  /** Peers' admin addresses ("host:port"); none = deliver here. */
  handOverTo: string[];
  deadlineSeconds: number;
}

export interface DrainReport {
  state: DrainState;
  mode: 'handover' | 'deliver' | null;
  startedAt: string | null;
  deadlineAt: string | null;
  finishedAt: string | null;
  queuedAtStart: number;
  handedOver: number;
  delivered: number;
  remaining: number;
  peers: string[];
  lastError: string | null;
}

export interface QueueDrainOptions {
  engine: Pick<DeliveryEngine, 'hold' | 'takeAll' | 'release' | 'enqueue' | 'retryNow' | 'queuedMessages'>;
  spool: Pick<Spool, 'readMessage' | 'recordRecipientResults' | 'remove'>;
  /** Close the listeners and let open sessions finish, for at most the given time. */
  stopAccepting: (timeoutMs: number) => Promise<void>;
  resumeAccepting: () => Promise<void>;
  /** The admin token peers accept (the pool's, the same on every pod). */
  token: () => string | undefined;
  logger: Logger;
}

/** Open sessions may finish their message for this long after the listeners close. */
const SESSION_GRACE_MS = 30_000;
const PARALLEL_HANDOVERS = 4;
const POLL_MS = 250;

function idleReport(): DrainReport {
  return { state: 'idle', mode: null, startedAt: null, deadlineAt: null, finishedAt: null, queuedAtStart: 0, handedOver: 0, delivered: 0, remaining: 0, peers: [], lastError: null };
}

export class QueueDrain {
  readonly #options: QueueDrainOptions;
  #report: DrainReport = idleReport();
  #run: Promise<void> | undefined;
  #cancelled = false;

  constructor(options: QueueDrainOptions) {
    this.#options = options;
  }

  /** True from the start of a drain until it is cancelled: the relay is not ready and takes no hand-overs. */
  get active(): boolean {
    return this.#report.state !== 'idle';
  }

  report(): DrainReport {
    return { ...this.#report, peers: [...this.#report.peers], remaining: this.#report.state === 'draining' && this.#report.mode === 'deliver' ? this.#options.engine.queuedMessages : this.#report.remaining };
  }

  /** Starts a drain; while one runs (or has ended), the request changes nothing and the report is returned. */
  start(request: DrainRequest): DrainReport {
    if (this.active) return this.report();
    if (!this.#options.token() && request.handOverTo.length > 0) throw new Error('handOverTo needs an admin token (admin.tokenFile): peers accept hand-overs only with it');
    const targets = request.handOverTo.map(parsePeer);
    const now = Date.now();
    const deadline = now + request.deadlineSeconds * 1000;
    this.#cancelled = false;
    this.#report = { ...idleReport(), state: 'draining', mode: targets.length > 0 ? 'handover' : 'deliver', startedAt: new Date(now).toISOString(), deadlineAt: new Date(deadline).toISOString(), peers: [...request.handOverTo] };
    this.#options.logger.info({ mode: this.#report.mode, peers: request.handOverTo, deadlineSeconds: request.deadlineSeconds }, 'drain started: listeners closing, not ready');
    this.#run = this.#drain(targets, request.handOverTo, deadline).catch((error: unknown) => {
      this.#report.lastError = (error as Error).message;
      this.#report.state = 'incomplete';
      this.#options.logger.error({ err: error }, 'drain failed');
    });
    return this.report();
  }

  /** Ends a drain: what was not handed over is delivered here again and the listeners reopen. */
  async cancel(): Promise<DrainReport> {
    if (!this.active) return this.report();
    this.#cancelled = true;
    await this.#run;
    await this.#options.resumeAccepting();
    this.#options.logger.info({ handedOver: this.#report.handedOver, remaining: this.#report.remaining }, 'drain cancelled: accepting again');
    this.#report = idleReport();
    return this.report();
  }

  /** Shutdown: stop the running drain soon (no new hand-over starts) and wait for it; the listeners stay closed. */
  async abandon(): Promise<void> {
    this.#cancelled = true;
    await this.#run;
  }

  async #drain(targets: HandoverTarget[], peers: string[], deadline: number): Promise<void> {
    const { logger } = this.#options;
    await this.#options.stopAccepting(Math.max(0, Math.min(SESSION_GRACE_MS, deadline - Date.now())));
    if (targets.length > 0) await this.#handOver(targets, peers, deadline);
    else await this.#deliver(deadline);
    const report = this.#report;
    report.state = report.remaining === 0 ? 'drained' : 'incomplete';
    report.finishedAt = new Date().toISOString();
    logger.info({ mode: report.mode, queuedAtStart: report.queuedAtStart, handedOver: report.handedOver, delivered: report.delivered, remaining: report.remaining }, `drain ${report.state}`);
  }

  async #deliver(deadline: number): Promise<void> {
    const { engine } = this.#options;
    const report = this.#report;
    report.queuedAtStart = engine.queuedMessages;
    // Every queue gets a try now rather than at its next retry time, which may be after the deadline.
    engine.retryNow({});
    while (engine.queuedMessages > 0 && Date.now() < deadline && !this.#cancelled) await sleep(Math.min(POLL_MS, deadline - Date.now()));
    report.remaining = engine.queuedMessages;
    report.delivered = Math.max(0, report.queuedAtStart - report.remaining);
  }

  async #handOver(targets: HandoverTarget[], peers: string[], deadline: number): Promise<void> {
    const { engine, logger } = this.#options;
    const report = this.#report;
    await engine.hold();
    let pending = engine.takeAll();
    report.queuedAtStart = pending.length;
    report.remaining = pending.length;
    for (let round = 0; pending.length > 0 && !this.#cancelled && Date.now() < deadline; round += 1) {
      if (round > 0) await sleep(Math.min(1000 * round, 5000, Math.max(0, deadline - Date.now())));
      const left: QueuedMessage[] = [];
      await forEachConcurrently(pending, PARALLEL_HANDOVERS, async (message, index) => {
        if (this.#cancelled || Date.now() >= deadline) return void left.push(message);
        for (let attempt = 0; attempt < targets.length; attempt += 1) {
          const which = (index + round + attempt) % targets.length;
          const handed = await this.#handOverOne(message, targets[which]!, peers[which]!);
          if (handed !== 'refused') {
            report.remaining -= 1;
            report.handedOver += 1;
            return;
          }
        }
        left.push(message);
      });
      pending = left;
    }
    // Not taken by any peer: this relay keeps and delivers them (its pod may still live a while).
    for (const message of pending) engine.enqueue(message);
    engine.release();
    logger.info({ handedOver: report.handedOver, kept: pending.length }, 'hand-over pass ended');
  }

  /** One message to one peer: "handed" once recorded here, "refused" to try elsewhere, "unrecorded" when the peer has it but our record failed. */
  async #handOverOne(message: QueuedMessage, target: HandoverTarget, peer: string): Promise<'handed' | 'refused' | 'unrecorded'> {
    const { spool, logger } = this.#options;
    const envelope = message.envelope;
    try {
      const answer = await sendHandover({ target, token: this.#options.token() ?? '', id: message.id, envelope, body: spool.readMessage(message.id) });
      logger.info({ queueId: message.id, peer, result: answer.result }, 'message handed over');
    } catch (error) {
      this.#report.lastError = `${peer}: ${(error as Error).message}`;
      logger.warn({ queueId: message.id, peer, err: (error as Error).message }, 'hand-over refused; trying elsewhere');
      return 'refused';
    }
    const results = new Map<number, RecipientResult>();
    envelope.recipients.forEach((recipient, index) => {
      if (recipient.status === 'pending') results.set(index, { status: 'delivered', nextAttemptAt: 0, lastResult: `handed over to ${peer}`, attempts: recipient.attempts });
    });
    try {
      await spool.recordRecipientResults(message.id, results);
      await spool.remove(message.id);
      return 'handed';
    } catch (error) {
      // The peer has it; delivering it here too would send it twice. It stays in the spool (a later drain's re-send is a duplicate there).
      this.#report.lastError = `recording the hand-over of ${message.id} failed: ${(error as Error).message}`;
      logger.error({ queueId: message.id, peer, err: error }, 'hand-over not recorded; the message stays in the spool and is not delivered here');
      return 'unrecorded';
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function forEachConcurrently<T>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      await fn(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
