/**
 * The user's usage report (`GET /eksray/api/usage`): what each cluster uses and costs, the
 * totals, the quota and the monthly budget. One store and one poller per app, shared by the
 * panel's Usage section and the cost line of a cluster's details.
 *
 * It polls only while someone looks: the panel is visible and at least one view that shows
 * the report is open ({@link UsageStore.watch}); never while the panel is hidden, the
 * section collapsed or the browser tab in the background. When the clusters change in a way
 * that changes what they cost (one created, deleted, scaled, suspended or resumed, nodes
 * coming or going) it reads the report again at once.
 */
import type { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { Signal } from '@lumino/signaling';

import { errorText, getUsage } from './api';
import type { ClusterStore } from './clusterStore';
import type { ICluster, IClusterUsage, IUsageReport } from './models';
import { ObservableStore } from './observable';

/**
 * Every 10 s: the server advances each cluster's meter at every read, and cost changes
 * slowly (a node more or less changes it, and those changes trigger a read of their own),
 * so a faster poll would only cost the server meter writes; a slower one would leave
 * "accrued" visibly behind in a panel someone is looking at.
 */
export const USAGE_POLL_INTERVAL = 10_000;

export class UsageStore extends ObservableStore implements IDisposable {
  constructor(options: IUsageStoreOptions = {}) {
    super();
    this._clusters = options.clusters ?? null;
    this._fetchUsage = options.fetch ?? getUsage;
    this._poll = new Poll({
      name: 'eksray-jupyter:usage',
      auto: false,
      factory: () => this._fetch(),
      frequency: {
        interval: options.pollInterval ?? USAGE_POLL_INTERVAL,
        backoff: true,
        max: options.maxPollInterval ?? 120_000
      },
      standby: 'when-hidden'
    });
    this._clusters?.changed.connect(this._onClustersChanged, this);
  }

  /** The last report; `null` until the first answer. */
  get report(): IUsageReport | null {
    return this._report;
  }

  /** Why the last read failed, in plain words (the last report is kept). */
  get error(): string | null {
    return this._error;
  }

  /**
   * Whether dollars mean something: the administrator set prices, or some node has a price
   * of its own (kuberay). Else the panel shows resource-hours instead of `$0.00`.
   */
  get priced(): boolean {
    return isPriced(this._report);
  }

  /** A cluster's line of the report, if it is in it. */
  cluster(name: string): IClusterUsage | undefined {
    return this._report?.clusters.find(c => c.name === name);
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** Whether the panel is visible; the store polls only while it is. */
  setVisible(visible: boolean): void {
    if (visible !== this._visible) {
      this._visible = visible;
      this._update();
    }
  }

  /**
   * Say that a view shows the report (the section expanded, a cluster's details): the
   * store reads it now and every {@link USAGE_POLL_INTERVAL} ms while any view does and the
   * panel is visible. Returns the function that says the view is gone.
   */
  watch(): () => void {
    this._watchers++;
    this._update();
    let done = false;
    return () => {
      if (!done) {
        done = true;
        this._watchers--;
        this._update();
      }
    };
  }

  /** Read the report now. */
  async refresh(): Promise<void> {
    try {
      await this._fetch();
    } catch {
      // _fetch recorded the error for the panel.
    }
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._poll.dispose();
    Signal.clearData(this);
  }

  /** Whether the poll runs now. */
  get polling(): boolean {
    return this._polling;
  }

  private _update(): void {
    if (this._isDisposed) {
      return;
    }
    const wanted = this._visible && this._watchers > 0;
    if (wanted === this._polling) {
      return;
    }
    this._polling = wanted;
    if (wanted) {
      // Starting reads at once, then every interval.
      void this._poll.start();
    } else {
      void this._poll.stop();
    }
  }

  /** Read again at once when what the clusters cost may have changed. */
  private _onClustersChanged(store: ClusterStore): void {
    const signature = costSignature(store.clusters ?? []);
    if (signature === this._signature) {
      return;
    }
    this._signature = signature;
    if (this._polling) {
      // Coalesced by the poll: several changes in a row make one read. (When not
      // polling, the next start reads at once anyway.)
      void this._poll.refresh();
    }
  }

  private async _fetch(): Promise<void> {
    const ticket = ++this._requested;
    let report: IUsageReport;
    try {
      report = await this._fetchUsage();
    } catch (error) {
      if (ticket > this._applied) {
        this._error = `Could not read the usage: ${errorText(error)}`;
        this._emit();
      }
      throw error; // Lets the poll back off.
    }
    if (ticket < this._applied || this._isDisposed) {
      return; // A later read answered first.
    }
    this._applied = ticket;
    this._report = report;
    this._error = null;
    this._emit();
  }

  private _clusters: ClusterStore | null;
  private _fetchUsage: () => Promise<IUsageReport>;
  private _poll: Poll;
  private _report: IUsageReport | null = null;
  private _error: string | null = null;
  private _visible = false;
  private _watchers = 0;
  private _polling = false;
  private _signature = '';
  /** Reads started so far, and the latest one whose answer is shown. */
  private _requested = 0;
  private _applied = 0;
  private _isDisposed = false;
}

/** Options of a {@link UsageStore}. */
export interface IUsageStoreOptions {
  /** The app's clusters: a change in what they run makes the store read at once. */
  clusters?: ClusterStore;
  /** Milliseconds between reads while someone looks (default {@link USAGE_POLL_INTERVAL}). */
  pollInterval?: number;
  /** Longest wait between reads after repeated failures, in ms. */
  maxPollInterval?: number;
  /** How to read the report (tests); `GET /usage` by default. */
  fetch?: () => Promise<IUsageReport>;
}

/** Whether a report's dollars mean something (prices set, or nodes priced on their own). */
export function isPriced(report: IUsageReport | null): boolean {
  if (!report) {
    return false;
  }
  const { prices, totals, budget } = report;
  return (
    Object.values(prices ?? {}).some(price => price > 0) ||
    totals.dollarsPerHour > 0 ||
    totals.accruedDollars > 0 ||
    totals.closedDollars > 0 ||
    budget.spentDollars > 0
  );
}

/**
 * What the clusters' cost depends on, as a string: which clusters exist, their phase, the
 * groups' sizes and the nodes running. Utilisation is left out: it changes all the time and
 * does not change what a cluster costs.
 */
export function costSignature(clusters: ICluster[]): string {
  return clusters
    .map(cluster => {
      const groups = cluster.workerGroups
        .map(
          g =>
            `${g.groupName}:${g.replicas}/${g.desired}/${g.minReplicas}/${g.maxReplicas}`
        )
        .join(',');
      const nodes = cluster.nodes
        .filter(n => n.state === 'alive')
        .map(n => n.id)
        .sort()
        .join(',');
      return `${cluster.name}|${cluster.phase}|${groups}|${nodes}`;
    })
    .sort()
    .join('\n');
}
