// The real FileSpool with a log of what the delivery engine made durable through it: every
// recipient result recorded and every message removed, in order, for tests to assert on.
import type { Readable } from 'node:stream';
import { FileSpool } from '../../mta/spool/spool.ts';
import type { Envelope, QueueId, RecipientResult, Spool, SpooledMessage } from '../../mta/spool/types.ts';

export class RecordingSpool implements Spool {
  readonly inner: FileSpool;
  readonly recorded: { id: QueueId; index: number; result: RecipientResult }[] = [];
  readonly removed: QueueId[] = [];

  private constructor(inner: FileSpool) {
    this.inner = inner;
  }

  static async open(directory: string): Promise<RecordingSpool> {
    return new RecordingSpool(await FileSpool.open(directory));
  }

  allocateId(): QueueId {
    return this.inner.allocateId();
  }

  store(envelope: Omit<Envelope, 'size'>, message: Buffer | readonly Buffer[], id?: QueueId): Promise<SpooledMessage> {
    return this.inner.store(envelope, message, id);
  }

  readMessage(id: QueueId): Readable {
    return this.inner.readMessage(id);
  }

  async recordRecipientResults(id: QueueId, results: ReadonlyMap<number, RecipientResult>): Promise<void> {
    await this.inner.recordRecipientResults(id, results);
    for (const [index, result] of results) this.recorded.push({ id, index, result });
  }

  async remove(id: QueueId): Promise<void> {
    await this.inner.remove(id);
    this.removed.push(id);
  }

  scan(): AsyncIterable<SpooledMessage> {
    return this.inner.scan();
  }

  /** Every message the spool holds now, read back from disk. */
  async contents(): Promise<SpooledMessage[]> {
    const messages: SpooledMessage[] = [];
    for await (const message of this.inner.scan()) messages.push(message);
    return messages;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
