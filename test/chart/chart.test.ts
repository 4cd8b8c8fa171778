// The Helm chart charts/vmta-operator: helm lint and helm template with default values, with
// every option on and in namespace scope; every rendered object validated against its kind's
// Kubernetes schema; values.schema.json refusing wrong values by name; and the behaviours the
// values switch (leader election, RBAC scope, CRD install/keep, monitors, rules, dashboards).
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { ALL_ON_VALUES, CHART_DIR, chartCrds, REPO_ROOT, findAll, findOne, helm, NAMESPACE_SCOPE_VALUES, renderChart } from './helm.ts';
import { validateManifest, type Manifest } from './kubernetes-schemas.ts';

interface Container {
  name: string;
  image: string;
  args: string[];
  env: Array<{ name: string; value?: string }>;
  ports: Array<{ name: string; containerPort: number }>;
  livenessProbe: { httpGet: { path: string; port: string } };
  readinessProbe: { httpGet: { path: string; port: string } };
  securityContext: { readOnlyRootFilesystem: boolean; allowPrivilegeEscalation: boolean; capabilities: { drop: string[] } };
  resources: { requests?: Record<string, string>; limits?: Record<string, string> };
}
interface DeploymentShape {
  spec: {
    replicas: number;
    template: { spec: { serviceAccountName: string; securityContext: { runAsNonRoot: boolean; runAsUser: number }; containers: Container[] } };
  };
}
interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

const chartYaml = parseYaml(readFileSync(join(CHART_DIR, 'Chart.yaml'), 'utf8')) as { apiVersion: string; appVersion: string };
const packageVersion = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const dashboardFiles = readdirSync(join(CHART_DIR, 'dashboards')).filter((name) => name.endsWith('.json'));
const crds = chartCrds();

function operatorContainer(manifests: Manifest[]): Container {
  const deployment = findOne(manifests, 'Deployment') as unknown as DeploymentShape;
  return deployment.spec.template.spec.containers.find((container) => container.name === 'operator')!;
}

function rulesOf(manifest: Manifest): PolicyRule[] {
  return (manifest as unknown as { rules: PolicyRule[] }).rules;
}

function assertAllValid(manifests: Manifest[]): void {
  assert.ok(manifests.length > 0, 'helm template rendered objects');
  const problems: string[] = [];
  for (const manifest of manifests) {
    try {
      validateManifest(manifest);
    } catch (error) {
      problems.push((error as Error).message);
    }
  }
  assert.deepEqual(problems, [], 'every rendered object matches its Kubernetes schema');
}

describe('helm chart vmta-operator', { timeout: 300_000 }, () => {
  test('helm is installed from the npm registry by the project script and runs', () => {
    const result = helm(['version', '--short']);
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /^v[34]\.\d+\.\d+/);
  });

  test('Chart.yaml is apiVersion v2 and its appVersion is the package version', () => {
    assert.equal(chartYaml.apiVersion, 'v2');
    assert.equal(chartYaml.appVersion, packageVersion);
  });

  test('helm lint --strict passes with default values', () => {
    const result = helm(['lint', '--strict', CHART_DIR]);
    assert.equal(result.status, 0, `${result.stdout}${result.stderr}`);
    assert.match(result.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  });

  test('helm lint --strict passes with every option on and in namespace scope', () => {
    for (const values of [ALL_ON_VALUES, NAMESPACE_SCOPE_VALUES]) {
      const result = helm(['lint', '--strict', CHART_DIR, '--values', values]);
      assert.equal(result.status, 0, `${values}: ${result.stdout}${result.stderr}`);
    }
  });

  test('every object rendered with default values is valid for its kind', () => {
    const manifests = renderChart();
    assertAllValid(manifests);
    const kinds = new Set(manifests.map((manifest) => manifest.kind));
    for (const kind of ['CustomResourceDefinition', 'Deployment', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'Service']) {
      assert.ok(kinds.has(kind), `default values render a ${kind}`);
    }
    for (const kind of ['ServiceMonitor', 'PodMonitor', 'PrometheusRule', 'ConfigMap']) {
      assert.ok(!kinds.has(kind), `default values render no ${kind} (off by default)`);
    }
  });

  test('every object rendered with every option on is valid for its kind', (t) => {
    const manifests = renderChart({ valuesFiles: [ALL_ON_VALUES] });
    assertAllValid(manifests);
    for (const kind of ['ServiceMonitor', 'PodMonitor', 'PrometheusRule']) findOne(manifests, kind);
    assert.equal(findAll(manifests, 'ConfigMap').length, dashboardFiles.length, 'one dashboard ConfigMap per dashboards/*.json');
    if (dashboardFiles.length === 0) t.diagnostic('charts/vmta-operator/dashboards/ holds no dashboard yet: no dashboard ConfigMap is rendered');
  });

  test('every object rendered in namespace scope is valid, with Roles only in the watched namespaces', () => {
    const manifests = renderChart({ valuesFiles: [NAMESPACE_SCOPE_VALUES] });
    assertAllValid(manifests);
    assert.deepEqual(findAll(manifests, 'ClusterRole'), [], 'no ClusterRole in namespace scope');
    assert.deepEqual(findAll(manifests, 'ClusterRoleBinding'), []);
    assert.deepEqual(findAll(manifests, 'CustomResourceDefinition'), [], 'crds.install=false renders no CRD');
    const operatorRoles = findAll(manifests, 'Role').filter((role) => role.metadata.name === 'vmta-vmta-operator');
    assert.deepEqual(operatorRoles.map((role) => role.metadata.namespace).sort(), ['mail', 'mail-staging']);
    const bindings = findAll(manifests, 'RoleBinding').filter((binding) => binding.metadata.name === 'vmta-vmta-operator');
    assert.deepEqual(bindings.map((binding) => binding.metadata.namespace).sort(), ['mail', 'mail-staging']);
    for (const binding of bindings) {
      assert.deepEqual((binding as unknown as { subjects: unknown[] }).subjects, [{ kind: 'ServiceAccount', name: 'vmta-vmta-operator', namespace: 'mail' }]);
    }
    assert.ok(operatorContainer(manifests).args.includes('--namespace=mail,mail-staging'), 'the operator is told which namespaces to watch');
    const podMonitor = findOne(manifests, 'PodMonitor') as unknown as { spec: { namespaceSelector: unknown } };
    assert.deepEqual(podMonitor.spec.namespaceSelector, { matchNames: ['mail', 'mail-staging'] });
  });

  test('namespace scope without a list watches the release namespace only', () => {
    const manifests = renderChart({ set: ['rbac.scope=namespace'] });
    const operatorRoles = findAll(manifests, 'Role').filter((role) => role.metadata.name === 'vmta-vmta-operator');
    assert.deepEqual(operatorRoles.map((role) => role.metadata.namespace), ['mail']);
    assert.ok(operatorContainer(manifests).args.includes('--namespace=mail'));
  });

  test('without RBAC and ServiceAccount creation the operator runs as the named existing account', () => {
    const manifests = renderChart({ set: ['rbac.create=false', 'serviceAccount.create=false', 'serviceAccount.name=mail-operator'] });
    assertAllValid(manifests);
    for (const kind of ['ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'ServiceAccount']) assert.deepEqual(findAll(manifests, kind), [], `no ${kind}`);
    const deployment = findOne(manifests, 'Deployment') as unknown as DeploymentShape;
    assert.equal(deployment.spec.template.spec.serviceAccountName, 'mail-operator');
  });

  test('values.schema.json rejects a wrong type, naming the value', () => {
    const result = helm(['template', 'vmta', CHART_DIR, '--set', 'replicaCount=two']);
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, /replicaCount/);
    assert.match(result.stderr, /want integer|expected: integer/i);
  });

  test('values.schema.json rejects an unknown RBAC scope, naming the field and the allowed values', () => {
    const result = helm(['template', 'vmta', CHART_DIR, '--set', 'rbac.scope=everywhere']);
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, /rbac\/scope|rbac\.scope/);
    assert.match(result.stderr, /cluster.*namespace/);
  });

  test('values.schema.json rejects an unknown top-level key and a replica count below one', () => {
    const unknown = helm(['template', 'vmta', CHART_DIR, '--set', 'replicas=2']);
    assert.notEqual(unknown.status, 0);
    assert.match(unknown.stderr, /additional propert(y|ies) 'replicas'/);
    const zero = helm(['template', 'vmta', CHART_DIR, '--set', 'replicaCount=0']);
    assert.notEqual(zero.status, 0);
    assert.match(zero.stderr, /replicaCount/);
  });

  test('one replica runs without leader election, more than one elect a leader', () => {
    assert.ok(!operatorContainer(renderChart()).args.includes('--leader-elect'));
    assert.ok(operatorContainer(renderChart({ set: ['replicaCount=2'] })).args.includes('--leader-elect'));
  });

  test('the operator runs with a 2 MB young generation by default (NODE_OPTIONS), configurable and removable', () => {
    const nodeOptions = (values: string[]) => operatorContainer(renderChart({ set: values })).env.filter((variable) => variable.name === 'NODE_OPTIONS');
    assert.deepEqual(nodeOptions([]), [{ name: 'NODE_OPTIONS', value: '--max-semi-space-size=2' }]);
    assert.deepEqual(nodeOptions(['operator.nodeOptions=--max-old-space-size=256']), [{ name: 'NODE_OPTIONS', value: '--max-old-space-size=256' }]);
    assert.deepEqual(nodeOptions(['operator.nodeOptions=']), []);
  });

  test('the operator runs the vmta image non-root, read-only, without capabilities, probed on its metrics port', () => {
    const manifests = renderChart();
    const deployment = findOne(manifests, 'Deployment') as unknown as DeploymentShape;
    const container = operatorContainer(manifests);
    assert.equal(container.image, `ghcr.io/vmta-dev/vmta:${chartYaml.appVersion}`, 'the image tag defaults to appVersion');
    assert.equal(container.args[0], 'operator');
    assert.ok(container.args.includes('--metrics-bind-address=:8080'));
    assert.ok(container.args.includes(`--image=ghcr.io/vmta-dev/vmta:${chartYaml.appVersion}`), 'relays run the same image by default');
    assert.deepEqual(container.ports, [{ name: 'metrics', containerPort: 8080, protocol: 'TCP' }]);
    assert.deepEqual(container.livenessProbe.httpGet, { path: '/healthz', port: 'metrics' });
    assert.deepEqual(container.readinessProbe.httpGet, { path: '/readyz', port: 'metrics' });
    assert.equal(deployment.spec.template.spec.securityContext.runAsNonRoot, true);
    assert.equal(deployment.spec.template.spec.securityContext.runAsUser, 65532);
    assert.equal(container.securityContext.readOnlyRootFilesystem, true);
    assert.equal(container.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(container.securityContext.capabilities.drop, ['ALL']);
    assert.ok(container.resources.requests?.['memory'] && container.resources.limits?.['memory'], 'memory request and limit are set');
    const service = findOne(manifests, 'Service') as unknown as { spec: { ports: Array<{ targetPort: string; port: number }> } };
    assert.deepEqual(service.spec.ports.map((port) => port.targetPort), ['metrics']);
  });

  test('an image digest, when given, replaces the tag', () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    const container = operatorContainer(renderChart({ set: [`image.digest=${digest}`] }));
    assert.equal(container.image, `ghcr.io/vmta-dev/vmta@${digest}`);
  });

  test('cluster-scope RBAC grants exactly the operator verbs, reads Secrets (get for the drain admin token, never writes them), and holds Leases in the release namespace', () => {
    const manifests = renderChart();
    const rules = rulesOf(findOne(manifests, 'ClusterRole'));
    const grants = new Map<string, string[]>();
    for (const rule of rules) {
      for (const group of rule.apiGroups) for (const resource of rule.resources) grants.set(`${group}/${resource}`, [...new Set([...(grants.get(`${group}/${resource}`) ?? []), ...rule.verbs])].sort());
    }
    const observe = ['list', 'watch'];
    // server-side apply of an object that does not exist yet is authorized as create
    const manage = ['create', 'delete', 'list', 'patch', 'watch'];
    const applyOnly = ['create', 'list', 'patch', 'watch'];
    assert.deepEqual(Object.fromEntries(grants), {
      'vmta.dev/smtplisteners': observe,
      'vmta.dev/relaypolicies': observe,
      // patch: the drain finalizer on a pool being deleted.
      'vmta.dev/virtualmtapools': ['list', 'patch', 'watch'],
      'vmta.dev/smtplisteners/status': ['patch'],
      'vmta.dev/relaypolicies/status': ['patch'],
      'vmta.dev/virtualmtapools/status': ['patch'],
      '/configmaps': applyOnly,
      '/services': manage,
      'apps/statefulsets': manage,
      'apps/deployments': manage,
      'policy/poddisruptionbudgets': applyOnly,
      // get: the pool's admin token, which the drain of a leaving pod authenticates with.
      '/secrets': ['get', ...observe],
      '/pods': observe,
      '/events': ['create', 'patch'],
    });
    const leaseRole = findOne(manifests, 'Role', 'vmta-vmta-operator-leader-election');
    assert.equal(leaseRole.metadata.namespace, 'mail');
    assert.deepEqual(rulesOf(leaseRole), [{ apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['get', 'create', 'update'] }]);
    const binding = findOne(manifests, 'ClusterRoleBinding') as unknown as { roleRef: { name: string }; subjects: unknown[] };
    assert.equal(binding.roleRef.name, 'vmta-vmta-operator');
    assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: 'vmta-vmta-operator', namespace: 'mail' }]);
  });

  test('CRDs are installed with the keep policy by default, without it on request, and not at all when off', () => {
    const kept = findAll(renderChart(), 'CustomResourceDefinition');
    assert.equal(kept.length, crds.length);
    assert.ok(crds.length > 0, 'the chart carries CRDs');
    for (const crd of kept) assert.equal(crd.metadata.annotations?.['helm.sh/resource-policy'], 'keep', `${crd.metadata.name} is kept on uninstall`);
    const notKept = findAll(renderChart({ set: ['crds.keep=false'] }), 'CustomResourceDefinition');
    for (const crd of notKept) assert.equal(crd.metadata.annotations?.['helm.sh/resource-policy'], undefined);
    assert.deepEqual(findAll(renderChart({ set: ['crds.install=false'] }), 'CustomResourceDefinition'), []);
  });

  test('rendered CRDs are the chart copy of crds/ unchanged but for the keep annotation and labels', () => {
    const rendered = new Map(findAll(renderChart(), 'CustomResourceDefinition').map((crd) => [crd.metadata.name, crd]));
    for (const source of crds) {
      const crd = rendered.get(source.metadata.name);
      assert.ok(crd, `${source.metadata.name} is rendered`);
      const { annotations: _annotations, labels: _labels, ...renderedMetadata } = crd.metadata;
      const { annotations: sourceAnnotations, labels: _sourceLabels, ...sourceMetadata } = source.metadata;
      assert.deepEqual({ ...crd, metadata: renderedMetadata }, { ...source, metadata: sourceMetadata }, `${source.metadata.name} renders unchanged`);
      for (const [key, value] of Object.entries(sourceAnnotations ?? {})) assert.equal(crd.metadata.annotations?.[key], value);
    }
  });

  test('the PodMonitor scrapes relay pods by their name label on the admin port in every namespace', () => {
    const podMonitor = findOne(renderChart({ valuesFiles: [ALL_ON_VALUES] }), 'PodMonitor') as unknown as {
      spec: { selector: unknown; namespaceSelector: unknown; podMetricsEndpoints: Array<{ port: string; path: string; relabelings?: unknown[] }> };
    };
    assert.deepEqual(podMonitor.spec.selector, { matchLabels: { 'app.kubernetes.io/name': 'vmta-relay' } });
    assert.deepEqual(podMonitor.spec.namespaceSelector, { any: true });
    assert.deepEqual(podMonitor.spec.podMetricsEndpoints.map(({ port, path }) => ({ port, path })), [{ port: 'admin', path: '/metrics' }]);
    assert.deepEqual(podMonitor.spec.podMetricsEndpoints[0]!.relabelings, [
      { sourceLabels: ['__meta_kubernetes_pod_label_vmta_dev_pool'], targetLabel: 'pool', action: 'replace' },
    ], 'the pool pod label becomes the "pool" label');
  });

  test('the ServiceMonitor scrapes the operator metrics Service by its selector labels', () => {
    const manifests = renderChart({ valuesFiles: [ALL_ON_VALUES] });
    const serviceMonitor = findOne(manifests, 'ServiceMonitor') as unknown as { metadata: Manifest['metadata']; spec: { selector: { matchLabels: Record<string, string> }; endpoints: Array<{ port: string }> } };
    const service = findOne(manifests, 'Service');
    for (const [key, value] of Object.entries(serviceMonitor.spec.selector.matchLabels)) assert.equal(service.metadata.labels?.[key], value);
    assert.deepEqual(serviceMonitor.spec.endpoints.map((endpoint) => endpoint.port), ['metrics']);
    assert.equal(serviceMonitor.metadata.labels?.['release'], 'kube-prometheus-stack', 'serviceMonitor.labels reach the object');
  });

  test('the PrometheusRule carries every alert of rules/*.yaml with severity and runbook, plus additional groups', () => {
    const rule = findOne(renderChart({ valuesFiles: [ALL_ON_VALUES] }), 'PrometheusRule') as unknown as {
      spec: { groups: Array<{ name: string; rules: Array<{ alert?: string; expr: string; labels?: Record<string, string>; annotations?: Record<string, string> }> }> };
    };
    const ruleFiles = readdirSync(join(CHART_DIR, 'rules')).filter((name) => name.endsWith('.yaml'));
    const expectedAlerts = ruleFiles.flatMap((file) =>
      (parseYaml(readFileSync(join(CHART_DIR, 'rules', file), 'utf8')) as { groups: Array<{ rules: Array<{ alert?: string }> }> }).groups.flatMap((group) =>
        group.rules.flatMap((r) => (r.alert ? [r.alert] : [])),
      ),
    );
    const chartGroups = rule.spec.groups.filter((group) => group.name !== 'site-extra');
    const alerts = chartGroups.flatMap((group) => group.rules);
    assert.deepEqual(alerts.map((alert) => alert.alert), expectedAlerts);
    assert.ok(alerts.length > 0, 'the chart ships at least one alert');
    for (const alert of alerts) {
      assert.ok(alert.labels?.['severity'], `${alert.alert} has a severity`);
      assert.ok(alert.annotations?.['runbook'], `${alert.alert} has runbook text`);
      assert.match(alert.annotations?.['summary'] ?? '', /\{\{ \$labels\./, `${alert.alert} keeps its Prometheus templates unrendered by Helm`);
    }
    assert.ok(rule.spec.groups.some((group) => group.name === 'site-extra'), 'prometheusRule.additionalGroups are appended');
  });

  test('dashboard ConfigMaps carry the Grafana sidecar label and the dashboard JSON', (t) => {
    const configMaps = findAll(renderChart({ valuesFiles: [ALL_ON_VALUES] }), 'ConfigMap') as unknown as Array<Manifest & { data: Record<string, string> }>;
    if (dashboardFiles.length === 0) t.diagnostic('no dashboard in charts/vmta-operator/dashboards/ yet: checking that none is rendered');
    assert.equal(configMaps.length, dashboardFiles.length);
    for (const configMap of configMaps) {
      assert.equal(configMap.metadata.labels?.['grafana_dashboard'], '1');
      assert.equal(configMap.metadata.namespace, 'monitoring');
      assert.equal(configMap.metadata.annotations?.['grafana_folder'], 'Mail');
      const [file, json] = Object.entries(configMap.data)[0]!;
      assert.ok(dashboardFiles.includes(file));
      assert.deepEqual(JSON.parse(json), JSON.parse(readFileSync(join(CHART_DIR, 'dashboards', file), 'utf8')));
    }
  });

  test('the packaged chart renders the same objects as the chart directory', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmta-chart-package-'));
    try {
      const packaged = helm(['package', CHART_DIR, '--destination', dir]);
      assert.equal(packaged.status, 0, packaged.stderr);
      const archive = join(dir, `vmta-operator-${(parseYaml(readFileSync(join(CHART_DIR, 'Chart.yaml'), 'utf8')) as { version: string }).version}.tgz`);
      const fromArchive = helm(['template', 'vmta', archive, '--namespace', 'mail', '--values', ALL_ON_VALUES]);
      const fromDirectory = helm(['template', 'vmta', CHART_DIR, '--namespace', 'mail', '--values', ALL_ON_VALUES]);
      assert.equal(fromArchive.status, 0, fromArchive.stderr);
      assert.equal(fromArchive.stdout, fromDirectory.stdout, 'CRDs, rules and dashboards are packaged (.helmignore keeps them)');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('NOTES.txt tells how to check the operator and where CRDs come from when not installed', () => {
    const result = helm(['install', 'vmta', CHART_DIR, '--dry-run=client', '--namespace', 'mail', '--set', 'crds.install=false']);
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /kubectl -n mail rollout status deployment\/vmta-vmta-operator/);
    assert.match(result.stdout, /kubectl apply -f crds\//);
  });
});
