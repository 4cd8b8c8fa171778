// The vmta.dev kinds in one table: schemas, CRD names, printer columns, subresources. The CRD
// generator, local mode and the controller all read this table, so a kind is declared once.
import type { z } from 'zod';
import { RelayPolicy, RelayPolicySpec, RelayPolicyStatus } from './relay-policy.ts';
import { SmtpListener, SmtpListenerSpec, SmtpListenerStatus } from './smtp-listener.ts';
import { VirtualMtaPool, VirtualMtaPoolSpec, VirtualMtaPoolStatus } from './virtual-mta-pool.ts';

export interface PrinterColumn {
  name: string;
  type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  jsonPath: string;
  description?: string;
  priority?: number;
}

export interface KindDefinition {
  kind: 'SmtpListener' | 'RelayPolicy' | 'VirtualMtaPool';
  /** What `kubectl explain KIND` says the kind is. */
  description: string;
  /** What `kubectl explain KIND.spec` says. */
  specDescription: string;
  plural: string;
  singular: string;
  shortNames: string[];
  /** The whole object: apiVersion, kind, metadata, spec, status. */
  schema: z.ZodType;
  spec: z.ZodType;
  status: z.ZodType;
  /** Longest metadata.name: Services, StatefulSet pods and relay config names are built from it. */
  maxNameLength: number;
  printerColumns: PrinterColumn[];
  scale?: { specReplicasPath: string; statusReplicasPath: string; labelSelectorPath: string };
}

const readyColumns: PrinterColumn[] = [
  { name: 'Ready', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
  { name: 'Reason', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].reason' },
];
const ageColumn: PrinterColumn = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' };

export const KINDS: readonly KindDefinition[] = [
  {
    kind: 'SmtpListener',
    description: 'An SMTP port of a pool\'s relay pods: its role (relay 25, submission 587, submissions 465, alternate 2525) fills the RFC defaults for TLS and AUTH; it applies a RelayPolicy and is exposed by a Service.',
    specDescription: 'The listener: role, port, TLS, AUTH, the RelayPolicy it applies, the pool whose pods serve it, limits, PROXY protocol and its Service.',
    plural: 'smtplisteners',
    singular: 'smtplistener',
    shortNames: ['smtpl'],
    schema: SmtpListener,
    spec: SmtpListenerSpec,
    status: SmtpListenerStatus,
    maxNameLength: 63,
    printerColumns: [
      { name: 'Role', type: 'string', jsonPath: '.spec.role' },
      { name: 'Port', type: 'integer', jsonPath: '.status.port', description: 'Port after role defaults' },
      { name: 'Pool', type: 'string', jsonPath: '.spec.poolRef.name' },
      { name: 'Policy', type: 'string', jsonPath: '.spec.relayPolicyRef.name', priority: 1 },
      ...readyColumns,
      { name: 'SelfCheck', type: 'string', jsonPath: '.status.conditions[?(@.type=="SelfCheck")].status', description: 'What a remote client sees passes the self-check' },
      { name: 'TLS', type: 'string', jsonPath: '.status.tls', description: 'TLS version a client negotiates' },
      { name: 'Cert-Expires', type: 'string', jsonPath: '.status.certificateExpires', priority: 1 },
      ageColumn,
    ],
  },
  {
    kind: 'RelayPolicy',
    description: 'Who may relay through the listeners that apply it (authenticated users, allowed CIDRs, relay domains and addresses; never anyone else) and how their mail is routed to VirtualMTAs.',
    specDescription: 'The policy: users and their sender domains, alwaysAllowRelaying CIDRs, relayDomains, relayAddresses, TLS before AUTH, and routing.',
    plural: 'relaypolicies',
    singular: 'relaypolicy',
    shortNames: ['rpol'],
    schema: RelayPolicy,
    spec: RelayPolicySpec,
    status: RelayPolicyStatus,
    maxNameLength: 63,
    printerColumns: [
      { name: 'Users', type: 'string', jsonPath: '.spec.users.secretName' },
      { name: 'Header', type: 'boolean', jsonPath: '.spec.routing.honorVirtualMtaHeader', description: 'Honours X-Virtual-MTA', priority: 1 },
      ...readyColumns,
      ageColumn,
    ],
  },
  {
    kind: 'VirtualMtaPool',
    description: 'A pool of VirtualMTAs (PowerMTA <virtual-mta-pool>) and the relay pods that run them: each VirtualMTA has its source address, EHLO name and per-domain delivery settings.',
    specDescription: 'The pool: its VirtualMTAs, per-domain defaults, selection, replicas, spool, egress, DKIM, admin token and pod overrides.',
    plural: 'virtualmtapools',
    singular: 'virtualmtapool',
    shortNames: ['vmpool'],
    schema: VirtualMtaPool,
    spec: VirtualMtaPoolSpec,
    status: VirtualMtaPoolStatus,
    // The StatefulSet's pods carry a controller-revision-hash label "<name>-<10 chars>" of at most 63.
    maxNameLength: 52,
    printerColumns: [
      { name: 'Replicas', type: 'integer', jsonPath: '.spec.replicas' },
      { name: 'Ready Replicas', type: 'integer', jsonPath: '.status.readyReplicas' },
      { name: 'Spool', type: 'string', jsonPath: '.spec.spool.mode' },
      ...readyColumns,
      { name: 'Config', type: 'string', jsonPath: '.status.conditions[?(@.type=="ConfigApplied")].status', priority: 1 },
      ageColumn,
    ],
    scale: { specReplicasPath: '.spec.replicas', statusReplicasPath: '.status.replicas', labelSelectorPath: '.status.selector' },
  },
];

export type VmtaKind = KindDefinition['kind'];
