// Reading segment files (format: mta/spool/segment-format.ts): a batch's head, the bodies of a
// batch checked against their checksums, the next intact batch after a broken one, and one
// message streamed with its checksum verified. Positional reads; streamMessage reads through a
// shared handle of its segment (segment-handles.ts), the others through a handle their caller owns.
import fsp from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { BatchFormatError, type BatchTable, decodeBatchTable, HEAD_PROBE_BYTES, looksLikePrefix, MAGIC, PREFIX_LENGTH, tableLength, verifyBatchHead } from './segment-format.ts';
import type { SegmentReadHandles } from './segment-handles.ts';
import type { QueueId } from './types.ts';

const READ_CHUNK_BYTES = 64 * 1024;

/**
 * The start of the batch at `offset` up to the end of its envelopes, checksum verified, and its
 * table: one read of HEAD_PROBE_BYTES for a typical batch, more when the table or envelopes are larger.
 * `fileEnd`: where the file's complete data ends; a head that would reach past it is not intact.
 * `key`: the segment's, which the head's MAC is checked with (none: a segment whose header is damaged).
 */
export async function readBatchHead(handle: fsp.FileHandle, file: string, offset: number, fileEnd: number, key: Buffer | undefined): Promise<{ head: Buffer; table: BatchTable }> {
  let head = await readAt(handle, offset, Math.min(HEAD_PROBE_BYTES, fileEnd - offset));
  /** The first `length` bytes of the batch; a length past the end of the file (torn, or damaged digits) is not read. */
  const extend = async (length: number): Promise<void> => {
    if (head.length >= length) return;
    if (offset + length > fileEnd) throw new BatchFormatError(`spool file ${file} is truncated or damaged (batch at ${offset} needs ${length} head bytes, the file ends at ${fileEnd})`);
    head = Buffer.concat([head, await readAt(handle, offset + head.length, length - head.length)]);
    if (head.length < length) throw new BatchFormatError(`spool file ${file} is truncated (batch at ${offset}: ${head.length} of ${length} head bytes)`);
  };
  await extend(PREFIX_LENGTH + tableLength(head));
  const table = decodeBatchTable(head);
  await extend(table.envelopesEnd);
  verifyBatchHead(head, table, key);
  return { head, table };
}

/** Candidates findIntactBatch checks at most: bounds the time a body full of lookalike prefixes costs an open. */
const MAX_CANDIDATES = 1000;

/**
 * The offset of the first intact batch (head MAC under the segment's key) that starts at or after
 * `from`, found by its magic; undefined when there is none (or none among the first MAX_CANDIDATES
 * lookalikes). Only used when a batch head is found broken, so its extent is unknown.
 */
export async function findIntactBatch(handle: fsp.FileHandle, file: string, from: number, size: number, key: Buffer): Promise<number | undefined> {
  const magic = Buffer.from(MAGIC, 'latin1');
  let candidates = 0;
  for (let start = from; start < size; ) {
    const window = await readAt(handle, start, Math.min(READ_CHUNK_BYTES, size - start));
    if (window.length === 0) return undefined;
    for (let at = window.indexOf(magic); at !== -1; at = window.indexOf(magic, at + 1)) {
      if (at + PREFIX_LENGTH <= window.length && !looksLikePrefix(window, at)) continue;
      if (++candidates > MAX_CANDIDATES) return undefined;
      const candidate = start + at;
      const intact = await readBatchHead(handle, file, candidate, size, key).then(
        ({ table }) => candidate + table.length <= size,
        () => false,
      );
      if (intact) return candidate;
    }
    // Windows overlap by the magic's length, so a magic across their boundary is found.
    start += Math.max(1, window.length - magic.length + 1);
  }
  return undefined;
}

/** Throws unless every message of the batch at `offset` matches its checksum. */
export async function verifyBodies(handle: fsp.FileHandle, offset: number, table: BatchTable): Promise<void> {
  for (const entry of table.entries) {
    let crc = 0;
    for await (const chunk of readRange(handle, offset + entry.messageOffset, entry.messageLength)) crc = crc32(chunk, crc);
    if (crc !== entry.messageCrc) throw new BatchFormatError(`message ${entry.id} fails its checksum`);
  }
}

/** `length` bytes from `position`, fewer only at the end of the file (a short read, which network file systems do, is continued). */
export async function readAt(handle: fsp.FileHandle, position: number, length: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(length);
  let filled = 0;
  while (filled < length) {
    const { bytesRead } = await handle.read(buffer, filled, length - filled, position + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return buffer.subarray(0, filled);
}

async function* readRange(handle: fsp.FileHandle, start: number, length: number): AsyncGenerator<Buffer> {
  const end = start + length;
  for (let position = start; position < end; ) {
    const chunk = await readAt(handle, position, Math.min(READ_CHUNK_BYTES, end - position));
    if (chunk.length === 0) throw new Error(`file ends at ${position}, before ${end}`);
    position += chunk.length;
    yield chunk;
  }
}

/** The bytes of one message, in chunks; fails at the end if they do not match its checksum. */
export async function* streamMessage(handles: SegmentReadHandles, file: string, message: { offset: number; length: number; crc: number }, id: QueueId): AsyncGenerator<Buffer> {
  const { handle, release } = await handles.acquire(file);
  try {
    let crc = 0;
    for await (const chunk of readRange(handle, message.offset, message.length)) {
      crc = crc32(chunk, crc);
      yield chunk;
    }
    if ((crc | 0) !== (message.crc | 0)) throw new Error(`spool message ${id} in ${file} fails its checksum`);
  } finally {
    release();
  }
}
