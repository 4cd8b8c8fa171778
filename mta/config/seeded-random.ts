// A small deterministic random generator (mulberry32): the open-relay probe set is generated
// from a fixed seed so the same config is judged the same way on every run and every machine;
// the tests' generated classes use it for the same reason.
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
