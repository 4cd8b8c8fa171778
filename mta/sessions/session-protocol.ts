// The messages between a relay's primary process and its session processes (session-workers.ts
// and session-worker.ts), sent over the fork's IPC channel with Node's "advanced" serialization
// (structured clone: message bodies travel as bytes, not JSON). The primary owns everything that
// must be exact for the pod (the spool, delivery, connection limits, the suppression list); a
// session process runs SMTP sessions it is handed and asks the primary for each of those.
import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { RuntimeConfig } from '../config/schema.ts';
import type { Envelope, QueueId } from '../spool/types.ts';

export type WorkerMetrics = MetricObjectWithValues<MetricValue<string>>[];

/** An admitted connection: the socket travels as the message's handle. */
export interface SessionStart {
  kind: 'session';
  connection: number;
  listener: string;
  /** The client's address and port (after a trusted PROXY header). */
  remoteAddress: string;
  remotePort: number;
  /** Bytes the primary read past a PROXY header, to be read first. */
  early?: Uint8Array;
}

export type ToWorker =
  | { kind: 'configure'; request: number; config: RuntimeConfig }
  | SessionStart
  | { kind: 'stored'; request: number; queueId: QueueId }
  | { kind: 'store-failed'; request: number; message: string }
  | { kind: 'refusal'; request: number; refusal?: { code: 550; message: string } }
  | { kind: 'room'; hasRoom: boolean }
  | AuthFailure
  | { kind: 'metrics'; request: number }
  | { kind: 'close-sessions' }
  | { kind: 'stop' };

/** One failed AUTH, told to every process so a client's count is the pod's, not one process's. */
export interface AuthFailure {
  kind: 'auth-failure';
  client: string;
  maxFailures: number;
  windowMs: number;
  at: number;
}

export type FromWorker =
  | { kind: 'hello' }
  | { kind: 'configured'; request: number; error?: string }
  | { kind: 'released'; connection: number }
  | { kind: 'store'; request: number; envelope: Omit<Envelope, 'size'>; chunks: Uint8Array[]; queueId: QueueId }
  | { kind: 'refusal?'; request: number; address: string }
  | AuthFailure
  | { kind: 'metrics'; request: number; metrics: WorkerMetrics };

/** Bytes from the channel as a Buffer (structured clone may hand back a plain Uint8Array). */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
