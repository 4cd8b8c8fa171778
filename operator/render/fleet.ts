// The fleet ConfigMap of a pool (docs/fleet-limits.md): the membership file from which every
// relay pod takes its share of the pool's connection limits and rates (mta/delivery/fleet-share.ts).
// It is a ConfigMap of its own, mounted as a directory beside relay.yaml and outside both hashes
// (config and pod template), so a re-share is a file the relays reload live and never restarts a
// pod. Which pods are members is the controller's decision (controller/fleet-membership.ts);
// this module only says where the file is and builds the object. StatefulSet pods take their
// ordinal from their names, a Deployment's pods (random names) from the membership's ranks.
import type { FleetMembership } from '../../mta/delivery/fleet-share.ts';
import type { DesiredObject } from './contract.ts';

export const FLEET_DIR = '/etc/vmta/fleet';
export const FLEET_FILE = 'membership.json';

export function fleetConfigMapName(poolName: string): string {
  return `${poolName}-fleet`;
}

/** The fleet ConfigMap holding `membership` (the data key the relay reads is FLEET_FILE). */
export function fleetConfigMap(poolName: string, membership: FleetMembership, metadata: (name: string) => DesiredObject['metadata']): DesiredObject {
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: metadata(fleetConfigMapName(poolName)), data: { [FLEET_FILE]: `${JSON.stringify(membership)}\n` } };
}
