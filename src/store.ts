/**
 * The client-side state of every cluster: one store per JupyterLab app, shared
 * by the panel, the commands and the dashboard tabs.
 *
 * Kept up to date by the server's push stream (`eksray/api/stream`). Only
 * while the stream is down does the store poll `GET /clusters`, with backoff,
 * and it stands by while the panel is hidden.
 *
 * The store owns the app's one stream socket. Messages that are not about
 * clusters (the jobs) and the stream's status are passed on through
 * {@link IPushStream}, which the `JobStore` consumes.
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { type ISignal, Signal } from '@lumino/signaling';

import { ObservableStore } from './observable';
import { errorText, listClusters, listEvents, openStream } from './api';
import type {
  ICluster,
  IClusterEvent,
  IClusterNode,
  JobStreamMessage,
  StreamMessage
} from './models';

/** State of the push stream. */
export type StreamStatus = 'connecting' | 'live' | 'offline';

/** The push stream as the other stores see it (the `ClusterStore` owns the socket). */
export interface IPushStream {
  /** `live` once the stream's first message (the clusters) has arrived. */
  readonly status: StreamStatus;
  /** Emitted when {@link status} changes. */
  readonly statusChanged: ISignal<IPushStream, StreamStatus>;
  /** The stream's messages about jobs, in the order they arrive. */
  readonly jobMessage: ISignal<IPushStream, JobStreamMessage>;
}

/** Worker count of a cluster at one moment, for the chart. */
export interface IWorkerSample {
  /** Milliseconds since the epoch. */
  time: number;
  /** Workers alive. */
  workers: number;
  /** Workers being brought up or kept (sum of the groups' `desired`). */
  desired: number;
}

/** Events kept per cluster; older ones are dropped. */
const MAX_EVENTS = 1000;

/** Worker samples kept per cluster. */
const MAX_SAMPLES = 2000;

/** Number of alive worker nodes of a cluster. */
export function aliveWorkers(nodes: IClusterNode[]): number {
  return nodes.filter(n => n.kind === 'worker' && n.state === 'alive').length;
}

export class ClusterStore
  extends ObservableStore
  implements IDisposable, IPushStream
{
  constructor(options: IClusterStoreOptions = {}) {
    super();
    this._serverSettings = options.serverSettings;
    this._reconnectDelays = options.reconnectDelays ?? [
      1_000, 2_000, 4_000, 8_000, 15_000, 30_000
    ];
    this._poll = new Poll({
      name: 'eksray-jupyter:clusters',
      auto: false,
      factory: () => this._pollOnce(),
      frequency: {
        interval: options.pollInterval ?? 5_000,
        backoff: true,
        max: options.maxPollInterval ?? 120_000
      },
      standby: () => !this._visible || 'when-hidden'
    });
  }

  /** Every cluster, oldest first; `null` until the first answer. */
  get clusters(): ICluster[] | null {
    if (!this._loaded) {
      return null;
    }
    if (this._sorted === null) {
      this._sorted = [...this._clusters.values()].sort((a, b) =>
        a.createdAt === b.createdAt
          ? a.name.localeCompare(b.name)
          : a.createdAt < b.createdAt
            ? -1
            : 1
      );
    }
    return this._sorted;
  }

  /** Whether changes are pushed (`live`) or polled (`offline`). */
  get status(): StreamStatus {
    return this._status;
  }

  /** Emitted when {@link status} changes. */
  get statusChanged(): ISignal<this, StreamStatus> {
    return this._statusChanged;
  }

  /** The stream's messages about jobs, passed on as they arrive. */
  get jobMessage(): ISignal<this, JobStreamMessage> {
    return this._jobMessage;
  }

  /** Why the last attempt to get the clusters failed, in plain words. */
  get error(): string | null {
    return this._error;
  }

  /** Names of clusters being deleted by this client. */
  isDeleting(name: string): boolean {
    return this._deleting.has(name);
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** A cluster by name. */
  get(name: string): ICluster | undefined {
    return this._clusters.get(name);
  }

  /** A cluster's events, oldest first; `null` until they are loaded. */
  events(name: string): IClusterEvent[] | null {
    const entry = this._events.get(name);
    return entry?.loaded ? entry.list : null;
  }

  /** Why loading a cluster's events failed, if it did. */
  eventsError(name: string): string | null {
    return this._eventsErrors.get(name) ?? null;
  }

  /** Worker counts of a cluster seen by this client, oldest first. */
  history(name: string): IWorkerSample[] {
    return this._history.get(name) ?? [];
  }

  /** Open the stream (once); until it is up, poll. */
  start(): void {
    if (this._started || this._isDisposed) {
      return;
    }
    this._started = true;
    this._connect();
  }

  /** Whether someone looks at the clusters; polling stands by when not. */
  setVisible(visible: boolean): void {
    if (visible === this._visible) {
      return;
    }
    this._visible = visible;
    if (visible) {
      this.start();
      if (this._status === 'offline') {
        void this._poll.refresh();
      }
    }
  }

  /**
   * Fetch the list now, whatever the stream does (a manual refresh, or a
   * command that needs the clusters while the panel is hidden).
   */
  async refresh(): Promise<void> {
    this.start();
    try {
      await this._fetchClusters();
    } catch {
      // _fetchClusters recorded the error for the panel.
    }
  }

  /**
   * Load a cluster's events (once) and keep them current. The stream pushes
   * new ones; while it is down they are polled with the clusters.
   */
  watchEvents(name: string): void {
    this._watched.set(name, (this._watched.get(name) ?? 0) + 1);
    if (!this._events.get(name)?.loaded) {
      void this._fetchEvents(name);
    }
  }

  /** Stop keeping a cluster's events current (they stay in memory). */
  unwatchEvents(name: string): void {
    const count = (this._watched.get(name) ?? 0) - 1;
    if (count > 0) {
      this._watched.set(name, count);
    } else {
      this._watched.delete(name);
    }
  }

  /** Record a cluster state received from a REST answer (create, scale). */
  upsert(cluster: ICluster): void {
    this._setCluster(cluster);
    this._emit();
  }

  /** Show a cluster as stopping while this client deletes it. */
  markDeleting(name: string, deleting: boolean): void {
    if (deleting) {
      this._deleting.add(name);
      const cluster = this._clusters.get(name);
      if (cluster && cluster.phase !== 'stopping') {
        this._setCluster({ ...cluster, phase: 'stopping' });
      }
    } else {
      this._deleting.delete(name);
    }
    this._emit();
  }

  /** Forget a deleted cluster. */
  remove(name: string): void {
    this._remove(name);
    this._emit();
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._poll.dispose();
    window.clearTimeout(this._reconnectTimer);
    const socket = this._socket;
    this._socket = null;
    socket?.close();
    Signal.clearData(this);
  }

  // --- the stream ---------------------------------------------------------

  private _connect(): void {
    if (this._isDisposed) {
      return;
    }
    this._setStatus('connecting');
    let socket: WebSocket;
    try {
      socket = openStream(this._serverSettings);
    } catch (error) {
      console.warn('eksray-jupyter: cannot open the cluster stream.', error);
      this._onStreamDown();
      return;
    }
    this._socket = socket;
    socket.onmessage = event => {
      if (this._socket === socket) {
        this._onMessage(event.data);
      }
    };
    socket.onclose = () => {
      if (this._socket === socket) {
        this._socket = null;
        this._onStreamDown();
      }
    };
    // An error is always followed by a close.
    socket.onerror = () => undefined;
  }

  private _onStreamDown(): void {
    if (this._isDisposed) {
      return;
    }
    this._setStatus('offline');
    // Poll while the stream is down (the poll backs off and stands by when hidden).
    void this._poll.start();
    const delays = this._reconnectDelays;
    const delay = delays[Math.min(this._attempt, delays.length - 1)];
    this._attempt++;
    // Jitter, so that many tabs do not reconnect in lockstep after a restart.
    const jittered = delay * (0.75 + Math.random() * 0.5);
    window.clearTimeout(this._reconnectTimer);
    this._reconnectTimer = window.setTimeout(() => this._connect(), jittered);
  }

  private _onMessage(data: unknown): void {
    let message: StreamMessage;
    try {
      message = JSON.parse(String(data));
    } catch {
      console.warn(
        'eksray-jupyter: ignoring a stream message that is not JSON.'
      );
      return;
    }
    switch (message.type) {
      case 'jobs':
      case 'job':
      case 'jobDeleted':
      case 'jobWarnings':
        this._jobMessage.emit(message);
        return;
      case 'snapshot': {
        const names = new Set(message.clusters.map(c => c.name));
        for (const name of [...this._clusters.keys()]) {
          if (!names.has(name)) {
            this._remove(name);
          }
        }
        for (const cluster of message.clusters) {
          this._setCluster(cluster);
        }
        this._markLoaded();
        this._error = null;
        this._attempt = 0;
        this._setStatus('live');
        void this._poll.stop();
        // Events may have been missed while the stream was down.
        for (const [name, entry] of this._events) {
          if (entry.loaded && names.has(name)) {
            void this._fetchEvents(name);
          }
        }
        break;
      }
      case 'cluster':
        this._setCluster(message.cluster);
        this._retryEvents(message.cluster.name);
        break;
      case 'deleted':
        this._remove(message.name);
        break;
      case 'event':
        this._addEvents(message.name, [message.event]);
        break;
      default:
        return;
    }
    this._pushed++;
    this._emit();
  }

  /** Load a watched cluster's events again if the last try failed (at most every 5 s). */
  private _retryEvents(name: string): void {
    if (!this._watched.has(name) || !this._eventsErrors.has(name)) {
      return;
    }
    const now = Date.now();
    if (now - (this._eventsRetriedAt.get(name) ?? 0) >= 5_000) {
      this._eventsRetriedAt.set(name, now);
      void this._fetchEvents(name, true);
    }
  }

  // --- polling (only while the stream is down) ----------------------------

  private async _pollOnce(): Promise<void> {
    await this._fetchClusters();
    await Promise.all(
      [...this._watched.keys()].map(name => this._fetchEvents(name, true))
    );
  }

  private async _fetchClusters(): Promise<void> {
    const pushedBefore = this._pushed;
    let clusters: ICluster[];
    try {
      clusters = await listClusters();
    } catch (error) {
      this._error = errorText(error);
      this._emit();
      throw error; // Lets the poll back off.
    }
    if (this._pushed !== pushedBefore) {
      // The stream spoke while we waited: its news is newer than this answer.
      return;
    }
    const names = new Set(clusters.map(c => c.name));
    for (const name of [...this._clusters.keys()]) {
      if (!names.has(name)) {
        this._remove(name);
      }
    }
    for (const cluster of clusters) {
      this._setCluster(cluster);
    }
    this._error = null;
    this._markLoaded();
    this._emit();
  }

  private async _fetchEvents(name: string, incremental = false): Promise<void> {
    const entry = this._events.get(name);
    const known = entry?.loaded ? entry.list : [];
    const since =
      incremental && known.length > 0
        ? known[known.length - 1].timestamp
        : undefined;
    try {
      const events = await listEvents(name, since);
      this._eventsErrors.delete(name);
      if (this._clusters.has(name)) {
        this._addEvents(name, events, true);
      }
    } catch (error) {
      this._eventsErrors.set(name, errorText(error));
    }
    this._emit();
  }

  // --- state --------------------------------------------------------------

  private _setCluster(cluster: ICluster): void {
    if (this._deleting.has(cluster.name) && cluster.phase !== 'stopping') {
      // A state from before the delete request: the cluster is on its way out.
      cluster = { ...cluster, phase: 'stopping' };
    }
    this._clusters.set(cluster.name, cluster);
    this._sorted = null;
    const samples = this._history.get(cluster.name) ?? [];
    const sample: IWorkerSample = {
      time: Date.now(),
      workers: aliveWorkers(cluster.nodes),
      desired: cluster.workerGroups.reduce((sum, g) => sum + g.desired, 0)
    };
    const last = samples[samples.length - 1];
    if (
      !last ||
      last.workers !== sample.workers ||
      last.desired !== sample.desired
    ) {
      samples.push(sample);
      if (samples.length > MAX_SAMPLES) {
        samples.splice(0, samples.length - MAX_SAMPLES);
      }
      this._history.set(cluster.name, samples);
    }
  }

  private _remove(name: string): void {
    this._clusters.delete(name);
    this._sorted = null;
    this._events.delete(name);
    this._eventsErrors.delete(name);
    this._eventsRetriedAt.delete(name);
    this._history.delete(name);
    this._deleting.delete(name);
  }

  /**
   * Merge events into a cluster's list (deduplicated by id: the stream and the
   * REST API may both deliver one). `complete` marks the list as loaded.
   */
  private _addEvents(
    name: string,
    events: IClusterEvent[],
    complete = false
  ): void {
    const entry = this._events.get(name) ?? {
      ids: new Set<string>(),
      list: [],
      loaded: false
    };
    const fresh = events.filter(e => !entry.ids.has(e.id));
    if (fresh.length === 0 && (entry.loaded || !complete)) {
      if (!this._events.has(name)) {
        this._events.set(name, entry);
      }
      return;
    }
    entry.loaded = entry.loaded || complete;
    for (const event of fresh) {
      entry.ids.add(event.id);
    }
    // A new array, so that React sees the change.
    let list = [...entry.list, ...fresh].sort((a, b) =>
      a.timestamp === b.timestamp
        ? a.id.localeCompare(b.id)
        : a.timestamp - b.timestamp
    );
    if (list.length > MAX_EVENTS) {
      for (const dropped of list.slice(0, list.length - MAX_EVENTS)) {
        entry.ids.delete(dropped.id);
      }
      list = list.slice(list.length - MAX_EVENTS);
    }
    entry.list = list;
    this._events.set(name, entry);
  }

  private _markLoaded(): void {
    if (!this._loaded) {
      this._loaded = true;
      this._sorted = null;
    }
  }

  private _setStatus(status: StreamStatus): void {
    if (status !== this._status) {
      this._status = status;
      this._emit();
      this._statusChanged.emit(status);
    }
  }

  private _serverSettings: ServerConnection.ISettings | undefined;
  private _reconnectDelays: number[];
  private _poll: Poll;
  private _socket: WebSocket | null = null;
  private _reconnectTimer: number | undefined = undefined;
  private _attempt = 0;
  /** Cluster messages received on the stream so far. */
  private _pushed = 0;
  private _statusChanged = new Signal<this, StreamStatus>(this);
  private _jobMessage = new Signal<this, JobStreamMessage>(this);
  private _started = false;
  private _visible = false;
  private _status: StreamStatus = 'connecting';
  private _error: string | null = null;
  private _loaded = false;
  private _clusters = new Map<string, ICluster>();
  private _sorted: ICluster[] | null = null;
  private _events = new Map<
    string,
    { ids: Set<string>; list: IClusterEvent[]; loaded: boolean }
  >();
  private _eventsErrors = new Map<string, string>();
  private _eventsRetriedAt = new Map<string, number>();
  private _history = new Map<string, IWorkerSample[]>();
  private _watched = new Map<string, number>();
  private _deleting = new Set<string>();
  private _isDisposed = false;
}

/** Options of a {@link ClusterStore}. */
export interface IClusterStoreOptions {
  /** Server connection settings; JupyterLab's by default. */
  serverSettings?: ServerConnection.ISettings;
  /** Polling interval while the stream is down, in ms. */
  pollInterval?: number;
  /** Longest polling interval after repeated failures, in ms. */
  maxPollInterval?: number;
  /** Waits before successive reconnection attempts, in ms (the last repeats). */
  reconnectDelays?: number[];
}
