// The MTA-STS policy cache on disk (RFC 8461 §5.1 wants it to survive restarts, or a downgrade
// after a restart goes unnoticed): one JSON file under the spool volume's state/ folder, written
// through a temporary name, synced and renamed, at most once per SAVE_DELAY_MS. A file that cannot
// be read or parsed is set aside with a log line and the cache starts empty; entries with bad
// fields are dropped one by one.
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { z } from 'zod';
import { writeStateFileSync } from '../spool/state-file.ts';
import type { CachedPolicy } from './mta-sts.ts';

const SAVE_DELAY_MS = 1_000;

const Entry = z.object({
  id: z.string().min(1).max(32),
  policy: z.object({ mode: z.enum(['enforce', 'testing', 'none']), mx: z.array(z.string().max(253)).max(100), maxAge: z.number().int().min(0).max(31_557_600) }),
  text: z.string().max(65_536),
  fetchedAt: z.number(),
  expiresAt: z.number(),
});

export class PolicyCacheFile {
  readonly file: string;
  readonly #logger: Logger | undefined;
  #pending: Map<string, CachedPolicy> | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(file: string, logger?: Logger) {
    this.file = file;
    this.#logger = logger;
  }

  /** The cache as last saved; empty when there is no file or it is unreadable. */
  load(): Map<string, CachedPolicy> {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') this.#logger?.warn({ file: this.file, err: error }, 'MTA-STS policy cache unreadable; starting empty');
      return new Map();
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (error) {
      this.#logger?.warn({ file: this.file, err: error }, 'MTA-STS policy cache is not JSON; starting empty');
      return new Map();
    }
    const entries = new Map<string, CachedPolicy>();
    const policies = (raw as { policies?: Record<string, unknown> })?.policies ?? {};
    for (const [domain, value] of Object.entries(policies)) {
      const parsed = Entry.safeParse(value);
      if (parsed.success) entries.set(domain, parsed.data);
      else this.#logger?.warn({ file: this.file, domain }, 'MTA-STS policy cache entry dropped: bad fields');
    }
    return entries;
  }

  /** Saves soon (coalescing bursts of changes); `flush` saves now. */
  save(cache: Map<string, CachedPolicy>): void {
    this.#pending = cache;
    this.#timer ??= setTimeout(() => this.flush(), SAVE_DELAY_MS);
    this.#timer.unref();
  }

  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const cache = this.#pending;
    this.#pending = undefined;
    if (!cache) return;
    try {
      writeStateFileSync(this.file, JSON.stringify({ version: 1, policies: Object.fromEntries(cache) }));
    } catch (error) {
      // A full disk or a read-only volume costs the persistence, never a delivery.
      this.#logger?.warn({ file: this.file, err: error }, 'MTA-STS policy cache not saved');
    }
  }
}
