/**
 * TypeScript mirrors of the JSON models served by the eksray server extension
 * under `/eksray/api` (see `eksray_jupyter/core/models.py`, `to_dict`).
 * Field names are camelCase, as on the wire.
 */

/** Lifecycle phase of a Ray cluster. */
export type ClusterPhase =
  | 'pending'
  | 'starting'
  | 'ready'
  | 'scaling'
  | 'failed'
  | 'stopping'
  | 'suspending'
  | 'suspended';

/** Every phase, in lifecycle order. */
export const CLUSTER_PHASES: readonly ClusterPhase[] = [
  'pending',
  'starting',
  'ready',
  'scaling',
  'failed',
  'stopping',
  'suspending',
  'suspended'
];

/** Phases in which nodes are still coming up or going away. */
export const TRANSITIONAL_PHASES: readonly ClusterPhase[] = [
  'pending',
  'starting',
  'scaling',
  'stopping',
  'suspending'
];

/** Amount of each resource (e.g. `CPU`, `GPU`, `memory`) by resource name. */
export type Resources = Record<string, number>;

/** One worker group of a cluster, with its replica counts. */
export interface IWorkerGroup {
  groupName: string;
  /** What the spec asks for. */
  replicas: number;
  /** What the backend (or the autoscaler) is currently bringing up. */
  desired: number;
  /** Workers alive and registered with Ray. */
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
  /** `pending`, `alive` or `dead`. */
  state: string;
  resources: Resources;
  address: string | null;
  /** ISO 8601 timestamp, if known. */
  startedAt: string | null;
  /** Fraction 0..1 in use, per resource, where the backend can tell. */
  utilization: Resources;
  /**
   * What Ray has in use of {@link resources} (same names and units: `CPU`, `GPU`, `memory`
   * and `object_store_memory` in bytes). Absent from servers before usage accounting.
   */
  used?: Resources;
  /** Kubernetes: the node (machine) the pod runs on, where known. */
  host?: string | null;
  /** Kubernetes: that machine's instance type, where labelled. */
  instanceType?: string | null;
}

/** One step of a cluster's start-up (see `Milestone` in core/models.py). */
export interface IMilestone {
  /** A stable name: `head-started`, `gcs-up`, `pod-scheduled`, `image-pulled`, `ready`, … */
  step: string;
  /** ISO 8601 timestamp. */
  at: string;
  /** The step in plain words. */
  message: string;
  /** The node (Ray node id or pod name) it is about, if one. */
  node: string | null;
  /** How long the step itself took, where known (an image pull). */
  seconds: number | null;
}

/** A Ray cluster as reported by the server. */
export interface ICluster {
  name: string;
  backend: string;
  owner: string;
  /** Kubernetes namespace (kuberay backend), else `null`. */
  namespace: string | null;
  phase: ClusterPhase;
  /** Why the cluster is in its phase (e.g. the cause of `failed`), if known. */
  reason: string | null;
  /** ISO 8601 timestamp. */
  createdAt: string;
  /** The cluster spec as resolved by the server; see {@link IClusterSpec}. */
  spec: IClusterSpec;
  workerGroups: IWorkerGroup[];
  nodes: IClusterNode[];
  /** Server-relative URL of the proxied Ray dashboard, `null` while it is not up. */
  dashboardUrl: string | null;
  /** What a Ray driver passes to `ray.init()`. */
  address: string | null;
  /** The cluster may be looked at but not changed (e.g. not created by eksray). */
  readOnly: boolean;
  /** ISO 8601: the latest moment something used it (work, a busy kernel, a keep-alive). */
  lastActiveAt: string | null;
  /** ISO 8601: when it was suspended, while it is. */
  suspendedAt: string | null;
  /** The steps of its latest start, oldest first (empty where the backend cannot tell). */
  timeline: IMilestone[];
}

/**
 * In answers read from a backend cache that is not current (the kuberay backend's watch of
 * the Kubernetes API is interrupted or re-listing), and only then.
 */
export interface ICacheStatus {
  current: false;
  /** ISO 8601: since when the cache may be behind. */
  since: string;
  /** Which watch is interrupted, and why. */
  reason: string;
}

/** Body of `GET /eksray/api/clusters`. */
export interface IClusterList {
  clusters: ICluster[];
  /** Present only while the clusters come from a cache that is not current. */
  cache?: ICacheStatus;
}

/** One worker group of a cluster spec (`schema/cluster.schema.json`). */
export interface IWorkerGroupSpec {
  groupName: string;
  replicas?: number;
  minReplicas?: number;
  maxReplicas?: number;
  cpu?: number;
  memory?: number;
  gpu?: number;
  resources?: Resources;
  rayStartParams?: Record<string, string>;
}

/**
 * A cluster spec; its one definition is the JSON schema the server serves in
 * `GET /eksray/api/config` (`clusterSchema`). Only the fields the panel reads
 * are typed here.
 */
export interface IClusterSpec {
  name?: string;
  head?: { cpu?: number; memory?: number; gpu?: number };
  workerGroups?: IWorkerGroupSpec[];
  autoscaling?: {
    enabled?: boolean;
    idleTimeoutSeconds?: number;
    upscalingMode?: string;
  };
  /** When an unused cluster is suspended or deleted (`core/lifecycle.py`). */
  lifecycle?: {
    idleTimeoutMinutes?: number;
    idleAction?: 'suspend' | 'delete';
    suspendedTtlHours?: number;
    maxLifetimeHours?: number;
  };
  [key: string]: unknown;
}

/** Body of `POST /eksray/api/clusters`: a spec, optionally based on a profile. */
export interface ICreateRequest extends IClusterSpec {
  profile?: string;
}

/** One group's change in a scale request. */
export interface IGroupScale {
  groupName: string;
  replicas?: number;
  minReplicas?: number;
  maxReplicas?: number;
}

/** Body of `PATCH /eksray/api/clusters/{name}`. */
export interface IScaleRequest {
  workerGroups: IGroupScale[];
}

/** What reported an event. */
export type EventSource = 'autoscaler' | 'backend' | 'ray' | 'kubernetes';

/** Severity of an event. */
export type EventSeverity = 'info' | 'warning' | 'error';

/** One entry of a cluster's events timeline. */
export interface IClusterEvent {
  id: string;
  /** ISO 8601 timestamp. */
  time: string;
  /** Seconds since the epoch (the same instant as `time`). */
  timestamp: number;
  source: EventSource | string;
  severity: EventSeverity;
  /** Short machine-readable cause, e.g. `NodeJoined`, if any. */
  reason: string | null;
  message: string;
}

/** Body of `GET /eksray/api/clusters/{name}/events` (oldest first). */
export interface IEventList {
  events: IClusterEvent[];
}

/** Body of `GET /eksray/api/config`. */
export interface IServerConfig {
  backend: string;
  owner: string;
  /** Named partial specs users can start from. */
  profiles: Record<string, IClusterSpec>;
  /** The administrator's default profile, if it exists. */
  defaultProfile: string | null;
  limits: Record<string, number>;
  /**
   * The administrator's bounds on lifecycle fields per profile name (`*`:
   * every other profile), as the server enforces them.
   */
  lifecycleBounds?: Record<string, Record<string, ILifecycleBound>>;
  /** Minutes between an idle warning and the action it announces. */
  lifecycleWarningMinutes?: number;
  schemaVersion: string;
  /** The cluster JSON schema (`schema/cluster.schema.json`). */
  clusterSchema: Record<string, unknown>;
}

/** An administrator's bound on one lifecycle field (`idleAction`: `allowed`, `default`). */
export interface ILifecycleBound {
  minimum?: number;
  maximum?: number;
  /** False: the field must have a value (the default fills it in if left empty). */
  allowOff?: boolean;
  default?: number | string;
  allowed?: string[];
}

/** One problem in a request, e.g. a spec field that failed validation. */
export interface IFieldError {
  /** Location of the problem in the request body, e.g. `workerGroups[0].maxReplicas`. */
  path: string;
  message: string;
}

/** Body of every error response from the server. */
export interface IErrorBody {
  message: string;
  errors?: IFieldError[];
}

/**
 * Messages of the push stream (`<baseUrl>eksray/api/stream`, server to client).
 * A `snapshot` (the clusters) comes first after every (re)connection, then
 * `jobs` (the body of `GET /jobs`); job changes come only after `jobs`.
 * A `heartbeat` comes every `snapshot.heartbeat` seconds while changes flow
 * (the `PushStream` keeps those to itself).
 */
export type StreamMessage =
  ClusterStreamMessage | JobStreamMessage | { type: 'heartbeat' };

/** The stream's messages about clusters (handled by the `ClusterStore`). */
export type ClusterStreamMessage =
  | { type: 'snapshot'; clusters: ICluster[]; heartbeat?: number }
  | { type: 'cluster'; cluster: ICluster }
  | { type: 'deleted'; name: string }
  | { type: 'event'; name: string; event: IClusterEvent }
  | ILifecycleNotice
  | IBudgetNotice;

/**
 * The user's spending this month crossed 80 % (`warning`) or 100 % (`exceeded`) of the
 * monthly budget; sent once per month and threshold.
 */
export interface IBudgetNotice extends IBudget {
  type: 'budget';
  state: 'warning' | 'exceeded';
  /** What happened and what it means, in plain words. */
  message: string;
}

/**
 * The idle keeper warned of an action (`warn`: `pending` at `due`), took it
 * (`suspend`, `delete`) or withdrew a warning (`clear`).
 */
export interface ILifecycleNotice {
  type: 'lifecycle';
  name: string;
  action: 'warn' | 'suspend' | 'delete' | 'clear';
  reason: string;
  pending: 'suspend' | 'delete' | null;
  /** ISO 8601, for `warn`. */
  due: string | null;
}

/** The stream's messages about jobs (handled by the `JobStore`). */
export type JobStreamMessage =
  | { type: 'jobs'; jobs: IJob[]; warnings: string[] }
  | { type: 'job'; job: IJob }
  | { type: 'jobDeleted'; id: string }
  | { type: 'jobWarnings'; warnings: string[] };

/** Where a job is in its life (`jobs/models.py` `JobState`). */
export type JobState =
  'pending' | 'starting' | 'running' | 'succeeded' | 'failed' | 'stopped';

/** States after which a job does not change any more. */
export const TERMINAL_JOB_STATES: readonly JobState[] = [
  'succeeded',
  'failed',
  'stopped'
];

/** Whether a job has ended. */
export function isTerminal(state: JobState): boolean {
  return TERMINAL_JOB_STATES.includes(state);
}

/** Whether a job can still be stopped. */
export function isStoppable(state: JobState): boolean {
  return !isTerminal(state);
}

/** One attempt of a job (one Ray submission). */
export interface IJobAttempt {
  attempt: number | null;
  rayJobId: string | null;
  status: string | null;
  exitCode: number | null;
  message: string | null;
  startedAt: string | null;
  finishedAt: string | null;
}

/** One state change of a job. */
export interface IJobHistoryEntry {
  state: JobState;
  time: string | null;
  reason: string | null;
}

/** A result file the runner kept, relative to the job's `results/`. */
export interface IJobResult {
  path: string;
  size?: number;
}

/** A job as the server reports it (`Job.to_dict` in `jobs/models.py`). */
export interface IJob {
  id: string;
  name: string;
  owner: string;
  state: JobState;
  reason: string | null;
  /** ISO 8601 times; `null` when it has not happened. */
  createdAt: string | null;
  updatedAt: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  /** The resolved job spec (`schema/job.schema.json`). */
  spec: Record<string, unknown>;
  clusterName: string | null;
  clusterCreated: boolean;
  clusterDeletedAt: string | null;
  attempts: IJobAttempt[];
  history: IJobHistoryEntry[];
  /** The store the job's record, logs and results are in. */
  store: Record<string, unknown>;
  /** Where the job's store directory is, e.g. a path or `s3://bucket/prefix/id`. */
  location: string;
  results: IJobResult[];
  runner: string;
}

/** Body of `GET /jobs`. */
export interface IJobList {
  jobs: IJob[];
  /** Stores that could not be read, in plain words. */
  warnings: string[];
}

/**
 * A page of a job's log (`GET /jobs/{id}/logs?offset=N&limit=L` or `?tail=T`):
 * bytes `[offset, nextOffset)` of a log of `size` bytes.
 */
export interface IJobLogPage {
  /** The page's bytes (UTF-8; a page may start or end inside a character). */
  bytes: Uint8Array;
  /** Where the page starts (`X-Log-Offset`). */
  offset: number;
  /** Byte offset to continue from (`X-Next-Offset`). */
  nextOffset: number;
  /** The log's size when read (`X-Log-Size`). */
  size: number;
  /** The job's state at the time of the read (`X-Job-State`), if sent. */
  state: JobState | null;
  /** The job has ended and this page reaches the end of its log (`X-Log-Complete`). */
  complete: boolean;
}

/**
 * Amounts of the resources usage is counted in (`core/usage.py`): CPUs, GPUs, memory and
 * the object store in GiB.
 */
export interface IUsageResources {
  cpu: number;
  gpu: number;
  memoryGiB: number;
  objectStoreGiB: number;
}

/** Resource-hours: CPU-hours, GPU-hours and GiB-hours of memory. */
export interface IResourceHours {
  cpu: number;
  gpu: number;
  memoryGiB: number;
}

/** One cluster's line of the usage report. */
export interface IClusterUsage {
  name: string;
  phase: ClusterPhase;
  /** A suspended cluster runs no node and costs nothing. */
  suspended: boolean;
  /** ISO 8601. */
  createdAt: string;
  /** What its running nodes may schedule. */
  resources: IUsageResources;
  /** What Ray has in use of them. */
  used: IUsageResources;
  /** used / resources, 0..1, for the resources it has. */
  utilization: Partial<IUsageResources>;
  /** What it may grow to (at its groups' maxReplicas): what counts against quotas. */
  maxResources: IUsageResources;
  dollarsPerHour: number;
  /** Since it was created. */
  accruedDollars: number;
  /** This month (UTC). */
  monthDollars: number;
  /** Since it was created. */
  resourceHours: IResourceHours;
  /** Where its nodes' prices come from. */
  priceBasis: string[];
  /** Nodes whose price is unknown, and why. */
  priceUnknown: string[];
}

/** Names of the limits an administrator may set (`core/quotas.py`). */
export type QuotaLimit =
  | 'maxClusters'
  | 'maxCpus'
  | 'maxGpus'
  | 'maxMemoryGiB'
  | 'maxDollarsPerHour'
  | 'monthlyBudget';

/** The user's quota and what counts against it. */
export interface IQuota {
  /** `null`: no limit set. */
  limits: Partial<Record<QuotaLimit, number | null>>;
  /** Where each limit comes from: `default`, `user alice`, `group ml` or `none set`. */
  sources: Partial<Record<QuotaLimit, string>>;
  groups: string[];
  /**
   * What counts against the limits, at each cluster's maximum: `clusters`, `cpu`, `gpu`,
   * `memoryGiB`, `objectStoreGiB`, `dollarsPerHour`.
   */
  usage: Record<string, number>;
}

/** This month's spending against the monthly budget. */
export interface IBudget {
  /** `2026-12`. */
  month: string;
  spentDollars: number;
  /** `null`: no budget set. */
  monthlyBudget: number | null;
  /** spent / budget, `null` without a budget. */
  fraction: number | null;
  state: 'ok' | 'warning' | 'exceeded';
}

/** Body of `GET /eksray/api/usage` (`UsageReport` in schema/openapi.yaml). */
export interface IUsageReport {
  owner: string;
  backend: string;
  /** ISO 8601: when the meters were read. */
  at: string;
  currency: 'USD';
  /** The administrator's prices per resource-hour (all 0: none set). */
  prices: { cpuHour: number; gpuHour: number; memoryGiBHour: number };
  clusters: IClusterUsage[];
  totals: {
    resources: IUsageResources;
    used: IUsageResources;
    dollarsPerHour: number;
    accruedDollars: number;
    resourceHours: IResourceHours;
    /** This month's cost of clusters deleted since. */
    closedDollars: number;
    closedResourceHours: IResourceHours;
  };
  quota: IQuota;
  budget: IBudget;
}
