// Reading this pod's place in the fleet: the membership file the operator publishes (config
// `fleet.membershipFile`) and the pod's ordinal in it (POD_NAME, from the downward API: its
// number, or its entry in the membership's ranks). A file that cannot be
// read or parsed throws, so a reload that brings it is refused and the last good shares stay.
import { readFile } from 'node:fs/promises';
import type { RuntimeConfig } from '../config/schema.ts';
import { FleetMembership, memberOrdinal, type FleetPosition } from './fleet-share.ts';

export async function readFleetPosition(config: RuntimeConfig, podName: string | undefined): Promise<FleetPosition | undefined> {
  const fleet = config.fleet;
  if (!fleet) return undefined;
  let text: string;
  try {
    text = await readFile(fleet.membershipFile, 'utf8');
  } catch (error) {
    throw new Error(`fleet.membershipFile ${fleet.membershipFile}: cannot read it: ${(error as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new Error(`fleet.membershipFile ${fleet.membershipFile}: not JSON: ${(error as Error).message}`);
  }
  const membership = FleetMembership.safeParse(parsed);
  if (!membership.success) {
    const problems = membership.error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`).join('; ');
    throw new Error(`fleet.membershipFile ${fleet.membershipFile}: ${problems}`);
  }
  return { ordinal: memberOrdinal(membership.data, podName), membership: membership.data, rotationWindowMs: fleet.rotationWindow, rotationGuardMs: fleet.rotationGuard };
}
