// The environment a cluster suite runs in (test/cluster/README.md): the runner sets these
// variables after bringing the cluster up and installing the chart; on any other cluster the
// person running the suites sets them. A missing one fails the suite with its name.
export interface ClusterEnv {
  /** Admin kubeconfig. */
  kubeconfig: string;
  /** Project image the nodes have or can pull (imagePullPolicy: IfNotPresent). */
  image: string;
  /** Address of the test host that pods reach; host-side servers of a test bind here. */
  hostIp: string;
  /** Namespace of the chart's release (the operator runs there, cluster mode). */
  operatorNamespace: string;
  /** StorageClass whose PVs bind for StatefulSet claims. */
  storageClass: string;
}

export const CLUSTER_ENV_VARIABLES = {
  kubeconfig: 'KUBECONFIG',
  image: 'VMTA_CLUSTER_IMAGE',
  hostIp: 'VMTA_CLUSTER_HOST_IP',
  operatorNamespace: 'VMTA_CLUSTER_OPERATOR_NAMESPACE',
  storageClass: 'VMTA_CLUSTER_STORAGE_CLASS',
} as const satisfies Record<keyof ClusterEnv, string>;

export function clusterEnv(env: NodeJS.ProcessEnv = process.env): ClusterEnv {
  const missing = Object.values(CLUSTER_ENV_VARIABLES).filter((name) => !env[name]);
  if (missing.length > 0) {
    throw new Error(`cluster suites need ${missing.join(', ')} (set by npm run test:cluster; see test/cluster/README.md)`);
  }
  const read = (key: keyof ClusterEnv) => env[CLUSTER_ENV_VARIABLES[key]]!;
  return { kubeconfig: read('kubeconfig'), image: read('image'), hostIp: read('hostIp'), operatorNamespace: read('operatorNamespace'), storageClass: read('storageClass') };
}
