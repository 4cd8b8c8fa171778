// Node flags the relay process runs with wherever it runs: in pods (the operator renders them
// into NODE_OPTIONS), in local mode and in the benchmarks, so measured figures are those of the
// shipped configuration.
// - A young generation of 8 MB semi-spaces (V8's default grows to 32 MB): in `npm run bench:accept`
//   it took the relay from a median 0.605 to 0.64 of the discard sink's rate over 12 interleaved
//   pairs of runs against 2 MB (fewer scavenges of the in-flight messages), for a peak RSS of
//   about 215 MB instead of 170 MB; 100 000 queued messages for a blocked destination peak at
//   about 215 MB either way (`npm run bench`).
// - `--expose-gc` gives mta/idle-memory-release.ts the collection it runs once a burst of
//   connections or deliveries is over; without it what a flood or a drain grew stays committed
//   while the relay is idle (`npm run bench:flood`, `npm run bench:scale`).
export const RELAY_NODE_OPTIONS = '--max-semi-space-size=8 --expose-gc';
