// Kubernetes resource quantities ("100Mi", "1G", "512") as the byte counts the relay's runtime
// config takes. The CRD's pattern (operator/api/fields.ts `quantity`) has checked the form.

const FACTORS: Record<string, number> = {
  '': 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/** Whole bytes (rounded up) of a quantity; throws for a string that is not one. */
export function quantityBytes(quantity: string): number {
  const match = /^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/.exec(quantity);
  if (!match) throw new Error(`not a quantity: ${JSON.stringify(quantity)} (expected e.g. 100Mi, 1G or 512)`);
  return Math.ceil(Number(match[1]) * FACTORS[match[2] ?? '']!);
}
