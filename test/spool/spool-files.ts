// Helpers for the spool tests: reading what a FileSpool holds, and what it wrote, as a test sees it.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach } from 'node:test';
import type { RelayMetrics } from '../../mta/observe/metrics.ts';
import { SEGMENT_HEADER_LENGTH } from '../../mta/spool/segment-format.ts';
import type { FileSpool } from '../../mta/spool/spool.ts';
import type { SpooledMessage } from '../../mta/spool/types.ts';

/** A fresh temporary directory for each test of the enclosing suite (removed after it); call the result inside a test. */
export function directoryPerTest(prefix: string): () => string {
  let directory: string | undefined;
  beforeEach(async () => {
    directory = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  });
  afterEach(async () => {
    if (directory) await fs.rm(directory, { recursive: true, force: true });
  });
  return () => directory!;
}

export async function scanAll(spool: FileSpool): Promise<SpooledMessage[]> {
  const messages: SpooledMessage[] = [];
  for await (const message of spool.scan()) messages.push(message);
  return messages;
}

export async function filesUnder(directory: string): Promise<string[]> {
  const entries = await fs.readdir(directory, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => path.join(entry.parentPath, entry.name));
}

/** Segment files that hold at least one batch (a spare holds just its header). */
export async function segmentsWithData(directory: string): Promise<string[]> {
  const segments = (await filesUnder(directory)).filter((file) => file.endsWith('.seg'));
  const sizes = await Promise.all(segments.map((file) => fs.stat(file).then((stat) => stat.size)));
  return segments.filter((_, index) => (sizes[index] ?? 0) > SEGMENT_HEADER_LENGTH).sort();
}

/** Rewrites the one segment holding batches in place, as a crash or a bad disk would leave it; returns what it now holds. */
export async function editSegment(directory: string, edit: (content: Buffer) => void): Promise<Buffer> {
  const [segment] = await segmentsWithData(directory);
  assert.ok(segment, 'a segment holds the stored batches');
  const content = await fs.readFile(segment);
  edit(content);
  await fs.writeFile(segment, content);
  return content;
}

export async function fsyncCount(metrics: RelayMetrics): Promise<number> {
  return (await metrics.spoolFsyncs.get()).values[0]?.value ?? 0;
}
