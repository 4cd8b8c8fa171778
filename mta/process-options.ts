// Node flags the relay process runs with wherever it runs: in pods (the operator renders them
// into NODE_OPTIONS), in local mode and in the benchmarks, so measured figures are those of the
// shipped configuration. A small young generation: the relay's heap is mostly long-lived
// envelopes and queue state, and V8's default semi-spaces add tens of MB of RSS under load
// (100 000 queued messages for a blocked destination: peak RSS 317 MB -> 266 MB in
// `npm run bench`; end-to-end throughput unchanged within run-to-run noise).
export const RELAY_NODE_OPTIONS = '--max-semi-space-size=2';
