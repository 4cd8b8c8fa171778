// Small state files on the spool volume (<spool>/state/...) that must survive restarts: written
// through a temporary name, synced and renamed into place, so a crash leaves either the old file
// or the new one, never half of one. Used by the MTA-STS policy cache, the TLS-RPT counts, the
// warm-up counts and the queue snapshot of a clean stop.
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import path from 'node:path';

/** Replace `file` with `text` atomically (temporary file, fsync, rename). Throws on I/O errors. */
export function writeStateFileSync(file: string, text: string): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const temporary = `${file}.tmp`;
  const fd = openSync(temporary, 'w');
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, file);
}
