// The seam between rendering (pure: custom resources -> desired Kubernetes objects) and the
// controller (I/O: reads resources, applies what render returns, writes status). Render never
// talks to the API server; the controller never builds objects itself.
export interface ObjectReference {
  apiVersion: string;
  kind: string;
  namespace?: string;
  name: string;
}

/** A problem that stops a pool from being rendered, named for the user: object, field, value. */
export interface RenderProblem {
  /** CamelCase reason for the condition, e.g. "PolicyNotFound", "PortConflict", "SecretKeyMissing". */
  reason: string;
  /** Human message naming the object and field, e.g. `SmtpListener "submission" spec.relayPolicy: no RelayPolicy "corp"`. */
  message: string;
  object: ObjectReference;
}

/** A desired Kubernetes object as plain JSON, ready for server-side apply. */
export interface DesiredObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string>; [key: string]: unknown };
  [key: string]: unknown;
}

export interface PoolRenderResult {
  /** Empty when problems is not empty: a broken pool keeps what it has. */
  objects: DesiredObject[];
  /** sha256 of the rendered relay.yaml; the relay reports the same hash on its admin endpoint. */
  configHash: string;
  /** Hash of the cold fields alone, put on the pod template so only cold changes restart pods. */
  podTemplateHash: string;
  problems: RenderProblem[];
}
