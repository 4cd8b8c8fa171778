// Queue ids: short, file-name safe, sortable by accept time, unique across restarts.
// Layout (18 characters of lower-case Crockford base32, whose ASCII order is its numeric order):
//   10 chars  accept time in Unix ms (good until the year 37000)
//    4 chars  per-process counter within that millisecond (1 048 576 ids per ms)
//    4 chars  random, so two processes (or a restart in the same ms) never collide
// The spool derives a message's directory from the time part, so an id alone locates its files.
import { randomInt } from 'node:crypto';
import type { QueueId } from './types.ts';

const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';
const TIME_CHARS = 10;
const COUNTER_CHARS = 4;
const RANDOM_CHARS = 4;
export const QUEUE_ID_LENGTH = TIME_CHARS + COUNTER_CHARS + RANDOM_CHARS;
const QUEUE_ID_PATTERN = new RegExp(`^[${ALPHABET}]{${QUEUE_ID_LENGTH}}$`);

function encode(value: number, width: number): string {
  let text = '';
  for (let i = 0; i < width; i++) {
    text = ALPHABET[value % 32] + text;
    value = Math.floor(value / 32);
  }
  return text;
}

function decode(text: string): number {
  let value = 0;
  for (const char of text) value = value * 32 + ALPHABET.indexOf(char);
  return value;
}

/** The time part of ids allocated at `time` (Unix ms). */
export function encodeTime(time: number): string {
  return encode(time, TIME_CHARS);
}

export function isQueueId(value: string): value is QueueId {
  return QUEUE_ID_PATTERN.test(value);
}

/** Unix ms encoded in the id (when it was allocated). */
export function queueIdTime(id: QueueId): number {
  return decode(id.slice(0, TIME_CHARS));
}

/** Generates ids that increase strictly within one generator, even if the clock steps back. */
export class QueueIdGenerator {
  #lastTime = 0;
  #counter = 0;
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  next(): QueueId {
    let time = this.#now();
    if (time <= this.#lastTime) {
      time = this.#lastTime;
      this.#counter++;
      if (this.#counter >= 32 ** COUNTER_CHARS) {
        time++;
        this.#counter = 0;
      }
    } else {
      this.#counter = 0;
    }
    this.#lastTime = time;
    return encodeTime(time) + encode(this.#counter, COUNTER_CHARS) + encode(randomInt(32 ** RANDOM_CHARS), RANDOM_CHARS);
  }
}
