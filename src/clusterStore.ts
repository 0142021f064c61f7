/**
 * The client-side state of every cluster: one store per JupyterLab app, shared
 * by the panel, the commands and the dashboard tabs.
 *
 * Kept up to date by the messages about clusters on the app's push stream
 * ({@link IPushStream}). Only while the stream is down does the store poll
 * `GET /clusters`, with backoff, and it stands by while the panel is hidden.
 */
import type { IDisposable } from '@lumino/disposable';
import type { Poll } from '@lumino/polling';
import { Signal } from '@lumino/signaling';

import { ObservableStore } from './observable';
import { errorText, listClusters, listEvents } from './api';
import { createFallbackPoll, type IFallbackPollOptions } from './fallbackPoll';
import type {
  ICluster,
  IClusterEvent,
  IClusterNode,
  StreamMessage
} from './models';
import type { IPushStream, StreamStatus } from './pushStream';
import {
  clusterUtilization,
  type IUtilizationSample,
  sameUtilization
} from './utilization';

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

/** Worker samples (and utilisation samples) kept per cluster. */
const MAX_SAMPLES = 2000;

/** Number of alive worker nodes of a cluster. */
export function aliveWorkers(nodes: IClusterNode[]): number {
  return nodes.filter(n => n.kind === 'worker' && n.state === 'alive').length;
}

export class ClusterStore extends ObservableStore implements IDisposable {
  constructor(options: IClusterStoreOptions) {
    super();
    this._stream = options.stream;
    this._poll = createFallbackPoll({
      name: 'eksray-jupyter:clusters',
      fetch: () => this._pollOnce(),
      visible: () => this._visible,
      pollInterval: options.pollInterval,
      maxPollInterval: options.maxPollInterval
    });
    this._stream.message.connect(this._onMessage, this);
    this._stream.statusChanged.connect(this._onStatus, this);
    if (this._stream.status !== 'connecting') {
      this._onStatus(this._stream, this._stream.status);
    }
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
    return this._stream.status;
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

  /**
   * A cluster's utilisation (CPU, GPU, memory, object store over its alive nodes) as this
   * client saw it pushed, oldest first: a sample each time it changed.
   */
  utilizationHistory(name: string): IUtilizationSample[] {
    return this._utilization.get(name) ?? [];
  }

  /** Open the stream (once); until it is up, poll. */
  start(): void {
    if (!this._isDisposed) {
      this._stream.start();
    }
  }

  /** Whether someone looks at the clusters; polling stands by when not. */
  setVisible(visible: boolean): void {
    if (visible === this._visible) {
      return;
    }
    this._visible = visible;
    if (visible) {
      this.start();
      if (this._stream.status === 'offline') {
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
    Signal.clearData(this);
  }

  // --- the stream ---------------------------------------------------------

  private _onStatus(_: IPushStream, status: StreamStatus): void {
    this._emit();
    if (status === 'offline') {
      // Poll while the stream is down (the poll backs off and stands by when hidden).
      void this._poll.start();
    } else if (status === 'live') {
      void this._poll.stop();
    }
  }

  private _onMessage(_: IPushStream, message: StreamMessage): void {
    switch (message.type) {
      case 'snapshot':
        this._replaceClusters(message.clusters);
        // Events may have been missed while the stream was down.
        for (const [name, entry] of this._events) {
          if (entry.loaded && this._clusters.has(name)) {
            void this._fetchEvents(name);
          }
        }
        break;
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
        return; // Not about clusters.
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
    this._replaceClusters(clusters);
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

  /** Take the complete list of clusters (a snapshot or a `GET /clusters` answer). */
  private _replaceClusters(clusters: ICluster[]): void {
    const names = new Set(clusters.map(c => c.name));
    for (const name of [...this._clusters.keys()]) {
      if (!names.has(name)) {
        this._remove(name);
      }
    }
    for (const cluster of clusters) {
      this._setCluster(cluster);
    }
    this._markLoaded();
    this._error = null;
  }

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
    this._sampleUtilization(cluster);
  }

  private _sampleUtilization(cluster: ICluster): void {
    const samples = this._utilization.get(cluster.name) ?? [];
    const sample: IUtilizationSample = {
      time: Date.now(),
      ...clusterUtilization(cluster.nodes ?? [])
    };
    const last = samples[samples.length - 1];
    if (last && sameUtilization(last, sample)) {
      return; // It holds until the next change.
    }
    // A new array, so that React sees the change.
    const next = [...samples, sample];
    this._utilization.set(
      cluster.name,
      next.length > MAX_SAMPLES ? next.slice(next.length - MAX_SAMPLES) : next
    );
  }

  private _remove(name: string): void {
    this._clusters.delete(name);
    this._sorted = null;
    this._events.delete(name);
    this._eventsErrors.delete(name);
    this._eventsRetriedAt.delete(name);
    this._history.delete(name);
    this._utilization.delete(name);
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

  private _stream: IPushStream;
  private _poll: Poll;
  /** Cluster messages received on the stream so far. */
  private _pushed = 0;
  private _visible = false;
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
  private _utilization = new Map<string, IUtilizationSample[]>();
  private _watched = new Map<string, number>();
  private _deleting = new Set<string>();
  private _isDisposed = false;
}

/** Options of a {@link ClusterStore}. */
export interface IClusterStoreOptions extends IFallbackPollOptions {
  /** The app's push stream, which brings the clusters while it is up. */
  stream: IPushStream;
}
