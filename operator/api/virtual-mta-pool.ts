// VirtualMtaPool: a group of VirtualMTAs (PowerMTA `<virtual-mta>` in a `<virtual-mta-pool>`),
// each with its source address, EHLO hostname and per-domain settings, and how the pool runs:
// replicas, spool storage, egress mode for source addresses, image and pod overrides.
import { z } from 'zod';
import { domainSettingsList } from './domain-settings.ts';
import { annotationValue, API_GROUP_VERSION, celRules, conditions, domainPattern, hostname, ipAddress, labelKey, labelValue, ObjectMeta, objectName, quantity, uniqueListBy } from './fields.ts';

export const VirtualMtaSpec = z.strictObject({
  name: objectName,
  /** Source address of outbound connections (PowerMTA `smtp-source-host`); omitted = the pod's own address. */
  sourceAddress: ipAddress.optional(),
  /** EHLO name of outbound connections; should match the reverse DNS of sourceAddress. */
  hostname,
  /** Share of mail under `selection: weighted`. */
  weight: z.number().int().min(1).max(1000).default(1),
  /** Per-domain settings of this VirtualMTA, over the pool's domainDefaults. */
  domains: domainSettingsList.optional(),
});

const Toleration = z.strictObject({
  key: z.string().max(317).optional(),
  operator: z.enum(['Exists', 'Equal']).optional(),
  value: z.string().max(63).optional(),
  effect: z.enum(['NoSchedule', 'PreferNoSchedule', 'NoExecute']).optional(),
  tolerationSeconds: z.number().int().optional(),
});

const ResourceList = z.strictObject({ cpu: quantity.optional(), memory: quantity.optional(), 'ephemeral-storage': quantity.optional() });

export const PodOverrides = z.strictObject({
  resources: z.strictObject({ requests: ResourceList.optional(), limits: ResourceList.optional() }).optional(),
  nodeSelector: z.record(labelKey, labelValue).optional(),
  tolerations: z.array(Toleration).max(64).optional(),
  annotations: z.record(labelKey, annotationValue).optional(),
  priorityClassName: z.string().max(253).optional(),
});

export const VirtualMtaPoolSpec = z
  .strictObject({
    /** Name of the relay in greetings and Received headers; defaults to the first VirtualMTA's hostname. */
    hostname: hostname.optional(),
    virtualMtas: uniqueListBy(z.array(VirtualMtaSpec).min(1).max(1000), 'name'),
    /** Per-domain settings shared by every VirtualMTA (PowerMTA `<domain>` blocks outside a virtual-mta). */
    domainDefaults: domainSettingsList.optional(),
    /** How a message without a routing rule picks its VirtualMTA. */
    selection: z.enum(['round-robin', 'weighted']).default('round-robin'),
    replicas: z.number().int().min(0).max(1000).default(1),
    spool: z
      .strictObject({
        /** persistent: a StatefulSet with a PersistentVolumeClaim per pod (retained on scale-down and delete); ephemeral: a Deployment with an emptyDir, for pass-through use. */
        mode: z.enum(['persistent', 'ephemeral']).default('persistent'),
        /** Claim size (persistent) or emptyDir size limit (ephemeral). */
        size: quantity.default('10Gi'),
        storageClassName: z.string().max(253).optional(),
      })
      .superRefine((spool, ctx) => {
        if (spool.mode === 'ephemeral' && spool.storageClassName) ctx.addIssue({ code: 'custom', path: ['storageClassName'], input: spool.storageClassName, message: 'storageClassName needs spool.mode persistent' });
      })
      .meta(celRules({ rule: "self.mode == 'persistent' || !has(self.storageClassName)", message: 'storageClassName needs spool.mode persistent', fieldPath: '.storageClassName', reason: 'FieldValueForbidden' }))
      .prefault({}),
    egress: z
      .strictObject({
        /** podNetwork: connections leave from the pod (source addresses through the CNI / egress gateway); hostNetwork: pods run on the node's network so sourceAddress can be a node address. */
        mode: z.enum(['podNetwork', 'hostNetwork']).default('podNetwork'),
      })
      .prefault({}),
    /** Relay image; defaults to the operator's own. */
    image: z.string().max(512).optional(),
    pod: PodOverrides.optional(),
    /** Recipient domains that get their own metric label; others count as "other". */
    trackedDomains: z.array(domainPattern).max(100).optional(),
    /** DNS servers for MX lookups ("10.0.0.10" or "10.0.0.10:53"); empty uses the pod's resolvers. */
    resolvers: z.array(z.string().max(64).regex(/^(\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+)(:[0-9]{1,5})?$/, 'an address, optionally with :port')).max(8).optional(),
  });

export type VirtualMtaPoolSpec = z.output<typeof VirtualMtaPoolSpec>;

export const VirtualMtaSummary = z.strictObject({
  name: z.string().max(63),
  sourceAddress: z.string().max(45).optional(),
  hostname: z.string().max(253),
  domains: z.number().int().min(0),
});

export const VirtualMtaPoolStatus = z.strictObject({
  observedGeneration: z.number().int().min(0).optional(),
  conditions: conditions.optional(),
  replicas: z.number().int().min(0).optional(),
  readyReplicas: z.number().int().min(0).optional(),
  /** Label selector of the pool's pods, as a string (for the scale subresource). */
  selector: z.string().max(1024).optional(),
  /** sha256 of the rendered relay.yaml; ConfigApplied is True when every ready pod reports it. */
  configHash: z.string().max(128).optional(),
  /** Hash of the cold fields on the pod template. */
  podTemplateHash: z.string().max(128).optional(),
  virtualMtas: z.array(VirtualMtaSummary).max(1000).optional(),
});

export const VirtualMtaPool = z.strictObject({
  apiVersion: z.literal(API_GROUP_VERSION),
  kind: z.literal('VirtualMtaPool'),
  metadata: ObjectMeta,
  spec: VirtualMtaPoolSpec,
  status: VirtualMtaPoolStatus.optional(),
});
export type VirtualMtaPool = z.output<typeof VirtualMtaPool>;
