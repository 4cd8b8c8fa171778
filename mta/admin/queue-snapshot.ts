// The queue list as it stood when the relay last stopped cleanly (<spool>/state/queue-snapshot.json),
// so that a restarted relay shows (and counts) its whole queue at once instead of a 503 until a
// million messages are read back from the spool. Written once the spool is closed, with a
// fingerprint of the spool's files (name, size and modification time of every segment and
// journal: a few hundred stats, not a read of the messages), as the other state files are
// (state-file.ts); taken (read and deleted) at the next start and served only when the spool's files
// still have that fingerprint, so a snapshot is never served twice, after a crash, or for a
// spool changed since. Only a hint for the admin API while recovering: delivery always works
// from the recovery scan, which still reads every message.
import { createHash } from 'node:crypto';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import type { QueueSummary } from '../delivery/queue-view.ts';
import type { Logger } from '../observe/log.ts';
import { QUEUE_DIR } from '../spool/spool-layout.ts';
import { writeStateFileSync } from '../spool/state-file.ts';

export const QUEUE_SNAPSHOT_FILE = 'queue-snapshot.json';

const SnapshotBody = z.object({
  version: z.literal(1),
  savedAt: z.string(),
  spoolFingerprint: z.string(),
  messages: z.number().int().nonnegative(),
  queues: z.array(
    z.object({
      virtualMta: z.string(),
      domain: z.string(),
      messages: z.number().int().nonnegative(),
      ready: z.number().int().nonnegative(),
      scheduled: z.number().int().nonnegative(),
      inFlight: z.number().int().nonnegative(),
      connections: z.number().int().nonnegative(),
      paused: z.boolean(),
      backoff: z.object({ active: z.boolean(), since: z.string().nullable() }),
      nextRetryAt: z.string().nullable(),
      site: z.string().nullable(),
      providerGroup: z.string().nullable().default(null),
      lastError: z.string().nullable(),
    }),
  ),
});

export interface QueueSnapshot {
  savedAt: string;
  /** Messages the engine held when it stopped. */
  messages: number;
  queues: QueueSummary[];
}

/** Name, size and mtime of every file under the spool's queue directory, hashed. */
async function spoolFingerprint(spoolDir: string): Promise<string> {
  const hash = createHash('sha256');
  const queueDir = path.join(spoolDir, QUEUE_DIR);
  const entries = await readdir(queueDir, { recursive: true, withFileTypes: true }).catch((error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? [] : Promise.reject(error)));
  const files = entries.filter((entry) => entry.isFile()).map((entry) => path.relative(queueDir, path.join(entry.parentPath, entry.name))).sort();
  for (const file of files) {
    const { size, mtimeMs } = await stat(path.join(queueDir, file));
    hash.update(`${file}\u0000${size}\u0000${mtimeMs}\n`);
  }
  return hash.digest('hex');
}

/** Call once the spool is closed: what the queue list showed, for the next start on this spool. */
export async function saveQueueSnapshot(spoolDir: string, snapshot: QueueSnapshot): Promise<void> {
  const body = JSON.stringify({ version: 1, spoolFingerprint: await spoolFingerprint(spoolDir), ...snapshot });
  writeStateFileSync(path.join(spoolDir, 'state', QUEUE_SNAPSHOT_FILE), body);
}

/** Call before the spool is opened: the snapshot the last clean stop left, removed from disk; undefined when there is none, it does not parse or the spool changed since. */
export async function takeQueueSnapshot(spoolDir: string, logger: Logger): Promise<QueueSnapshot | undefined> {
  const file = path.join(spoolDir, 'state', QUEUE_SNAPSHOT_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  await rm(file, { force: true });
  let parsed;
  try {
    parsed = SnapshotBody.safeParse(JSON.parse(text));
  } catch (error) {
    parsed = { success: false as const, error };
  }
  if (!parsed.success) {
    logger.warn({ file, err: parsed.error }, 'queue snapshot unreadable; the queue list waits for the recovery');
    return undefined;
  }
  const { savedAt, spoolFingerprint: fingerprint, messages, queues } = parsed.data;
  if (fingerprint !== (await spoolFingerprint(spoolDir))) {
    logger.warn({ file }, 'queue snapshot left by the last stop does not match the spool files; the queue list waits for the recovery');
    return undefined;
  }
  return { savedAt, messages, queues };
}
