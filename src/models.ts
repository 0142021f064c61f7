/**
 * TypeScript mirrors of the JSON models served by the eksray server extension
 * under `/eksray/api`. Field names are camelCase, as on the wire.
 */

/** Lifecycle phase of a Ray cluster. */
export type ClusterPhase =
  | 'pending'
  | 'starting'
  | 'ready'
  | 'scaling'
  | 'failed'
  | 'stopping'
  | 'stopped';

/** Every phase, in lifecycle order. */
export const CLUSTER_PHASES: readonly ClusterPhase[] = [
  'pending',
  'starting',
  'ready',
  'scaling',
  'failed',
  'stopping',
  'stopped'
];

/** Amount of each resource (e.g. `CPU`, `GPU`, `memory`) by resource name. */
export type Resources = Record<string, number>;

/** One worker group of a cluster, with its replica counts. */
export interface IWorkerGroup {
  groupName: string;
  replicas: number;
  desired: number;
  ready: number;
  minReplicas: number;
  maxReplicas: number;
  resources: Resources;
}

/** Kind of a Ray node. */
export type NodeKind = 'head' | 'worker';

/** One Ray node (head or worker) of a cluster. */
export interface IClusterNode {
  id: string;
  group: string;
  kind: NodeKind;
  state: string;
  resources: Resources;
  address: string | null;
}

/** A Ray cluster as reported by the server. */
export interface ICluster {
  name: string;
  backend: string;
  owner: string;
  phase: ClusterPhase;
  /** Why the cluster is in its phase (e.g. the cause of `failed`), if known. */
  reason: string | null;
  /** ISO 8601 timestamp. */
  createdAt: string;
  /** The cluster spec as submitted; its shape is given by the cluster JSON schema. */
  spec: Record<string, unknown>;
  workerGroups: IWorkerGroup[];
  nodes: IClusterNode[];
  dashboardUrl: string | null;
  address: string | null;
}

/** Body of `GET /eksray/api/clusters`. */
export interface IClusterList {
  clusters: ICluster[];
}

/** One problem in a request, e.g. a spec field that failed validation. */
export interface IFieldError {
  /** Location of the problem in the request body, e.g. `workerGroups/0/replicas`. */
  path: string;
  message: string;
}

/** Body of every error response from the server. */
export interface IErrorBody {
  message: string;
  errors?: IFieldError[];
}
