// Node flags the relay process runs with wherever it runs: in pods (the operator renders them
// into NODE_OPTIONS), in local mode and in the benchmarks, so measured figures are those of the
// shipped configuration. A small young generation: the relay's heap is mostly long-lived
// envelopes and queue state, and larger semi-spaces add tens of MB of RSS under load. Measured
// with the segment spool: `npm run bench:accept` peak RSS about 170 MB with 2 MB semi-spaces
// against about 215 MB with 8 MB, whose fewer scavenges bought about 5% more accepted messages/s
// (medians of 8 runs each, within run-to-run noise); 100 000 queued messages for a blocked
// destination peak at about 215 MB either way (`npm run bench`).
export const RELAY_NODE_OPTIONS = '--max-semi-space-size=2';
