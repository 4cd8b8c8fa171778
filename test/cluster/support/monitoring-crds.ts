// Minimal structural CRDs for the prometheus-operator kinds the chart renders (ServiceMonitor,
// PodMonitor, PrometheusRule, monitoring.coreos.com/v1): names, scope and version as upstream,
// the spec kept as given (x-kubernetes-preserve-unknown-fields). No npm package ships the
// upstream CRD YAML (@kubernetes-models/prometheus-operator has JSON schemas of the objects, not
// CRDs), and the API server only needs the kind registered to accept and store the objects.
const KINDS = [
  { kind: 'ServiceMonitor', plural: 'servicemonitors', shortNames: ['smon'] },
  { kind: 'PodMonitor', plural: 'podmonitors', shortNames: ['pmon'] },
  { kind: 'PrometheusRule', plural: 'prometheusrules', shortNames: ['promrule'] },
];

export function monitoringCrds(): object[] {
  return KINDS.map(({ kind, plural, shortNames }) => ({
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${plural}.monitoring.coreos.com` },
    spec: {
      group: 'monitoring.coreos.com',
      scope: 'Namespaced',
      names: { kind, listKind: `${kind}List`, plural, singular: kind.toLowerCase(), shortNames, categories: ['prometheus-operator'] },
      versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', properties: { spec: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } } } } }],
    },
  }));
}
