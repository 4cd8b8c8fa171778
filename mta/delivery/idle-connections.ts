// The connection cache: a connection whose destination queue has nothing ready stays open for
// `delivery.connectionIdleTimeout` and takes the queue's next message when one becomes ready
// (Postfix's connection cache, KumoMTA's idle_timeout). At low concurrency each message used to find
// its queue empty behind it and pay a connection of its own: connect, greeting, EHLO, QUIT. The
// scheduler wakes an idle connection before it counts a new one, and ends idle connections when
// delivery stops or holds, or when a domain sharing their limits needs the slots they keep.
import type { Clock } from './clock.ts';
import type { DestinationQueue } from './destination-queue.ts';

/** Resolves true when the queue's next message became ready within `idleMs`, false when none did or the connection was told to quit. */
export function awaitNextMessage(queue: DestinationQueue, idleMs: number, clock: Clock): Promise<boolean> {
  if (idleMs <= 0) return Promise.resolve(false);
  return new Promise((resolve) => {
    const finish = (woken: boolean): void => {
      timer.cancel();
      const at = queue.idleConnections.indexOf(finish);
      if (at >= 0) queue.idleConnections.splice(at, 1);
      resolve(woken);
    };
    const timer = clock.setTimer(idleMs, () => finish(false));
    queue.idleConnections.push(finish);
  });
}

/** One idle connection per ready message takes it. */
export function wakeIdleConnections(queue: DestinationQueue): void {
  let wake = Math.min(queue.ready.length, queue.idleConnections.length);
  while (wake-- > 0) queue.idleConnections[0]!(true);
}

/** Every idle connection of these queues quits. */
export function quitIdleConnections(queues: Iterable<DestinationQueue>): void {
  for (const queue of queues) for (const finish of [...queue.idleConnections]) finish(false);
}
