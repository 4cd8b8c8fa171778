// Shares one copy of strings that repeat across many queued envelopes (VirtualMTA, listener,
// client address, sender, recipient domain): each envelope decoded from the spool carries its
// own copies, which at 100 000 queued messages is a sizeable part of the scheduler's memory.
// Bounded, so a stream of unique values (e.g. VERP senders) cannot grow it without limit.
export class StringTable {
  readonly #strings = new Map<string, string>();
  readonly #limit: number;

  constructor(limit = 10_000) {
    this.#limit = limit;
  }

  /** The table's copy of `value` (adding it while there is room), or `value` itself. */
  share(value: string): string {
    const known = this.#strings.get(value);
    if (known !== undefined) return known;
    if (this.#strings.size < this.#limit) this.#strings.set(value, value);
    return value;
  }
}
