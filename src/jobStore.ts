/**
 * The client-side list of the user's jobs.
 *
 * The jobs come from the app's push stream ({@link IPushStream}): after every
 * (re)connection a `jobs` message with the whole list (`GET /jobs`), then
 * `job`, `jobDeleted` and `jobWarnings` as records change (the server reads
 * them every second). Only while the stream is down, or up but without jobs
 * (a server without job push), does the store poll `GET /jobs`, backing off
 * on errors, and only while the panel is visible. Stopping a job is a REST
 * call; its answer is shown at once.
 */
import type { IDisposable } from '@lumino/disposable';
import type { Poll } from '@lumino/polling';
import { Signal } from '@lumino/signaling';

import { ObservableStore } from './observable';
import { errorText, listJobs, stopJob } from './api';
import { createFallbackPoll, type IFallbackPollOptions } from './fallbackPoll';
import type { IJob, IJobList, StreamMessage } from './models';
import type { IPushStream, StreamStatus } from './pushStream';

export class JobStore extends ObservableStore implements IDisposable {
  constructor(options: IJobStoreOptions = {}) {
    super();
    this._stream = options.stream ?? null;
    this._streamGrace = options.streamGrace ?? 5_000;
    // Without a stream, polling is the only source.
    this._fallback = this._stream === null;
    this._poll = createFallbackPoll({
      name: 'eksray-jupyter:jobs',
      fetch: () => this._fetch(),
      visible: () => this._visible,
      pollInterval: options.pollInterval,
      maxPollInterval: options.maxPollInterval
    });
    this._stream?.message.connect(this._onMessage, this);
    this._stream?.statusChanged.connect(this._onStatus, this);
    if (this._stream && this._stream.status !== 'connecting') {
      this._onStatus(this._stream, this._stream.status);
    }
  }

  /** The jobs, newest first; `null` until the first answer. */
  get jobs(): IJob[] | null {
    return this._jobs;
  }

  /** Whether the jobs are pushed by the stream (else polled, or not loaded yet). */
  get live(): boolean {
    return this._live;
  }

  /** Stores the server could not read, in plain words. */
  get warnings(): string[] {
    return this._warnings;
  }

  /** Why the last attempt to get the jobs failed, in plain words. */
  get error(): string | null {
    return this._error;
  }

  /** Whether this client is stopping the job. */
  isStopping(id: string): boolean {
    return this._stopping.has(id);
  }

  /** Why stopping the job failed, if it did. */
  stopError(id: string): string | null {
    return this._stopErrors.get(id) ?? null;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** Whether someone looks at the jobs; polling runs only while they do. */
  setVisible(visible: boolean): void {
    if (visible === this._visible || this._isDisposed) {
      return;
    }
    this._visible = visible;
    this._updatePoll();
  }

  /** Fetch the list now. */
  async refresh(): Promise<void> {
    try {
      await this._fetch();
    } catch {
      // _fetch recorded the error for the panel.
    }
  }

  /** Stop a job; the error, if any, is kept for the panel. */
  async stop(id: string): Promise<void> {
    this._stopping.add(id);
    this._stopErrors.delete(id);
    this._emit();
    try {
      const job = await stopJob(id);
      this._upsert(job);
    } catch (error) {
      this._stopErrors.set(id, `Could not stop the job: ${errorText(error)}`);
    } finally {
      this._stopping.delete(id);
      this._emit();
    }
    if (!this._live) {
      await this.refresh(); // Else the stream brings what follows.
    }
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    window.clearTimeout(this._graceTimer);
    this._poll.dispose();
    Signal.clearData(this);
  }

  // --- the stream ---------------------------------------------------------

  private _onMessage(_: IPushStream, message: StreamMessage): void {
    if (this._isDisposed) {
      return;
    }
    switch (message.type) {
      case 'jobs':
        this._jobs = sortJobs(message.jobs);
        this._warnings = message.warnings;
        this._error = null;
        this._live = true;
        this._fallback = false;
        window.clearTimeout(this._graceTimer);
        this._updatePoll();
        break;
      case 'job':
        this._upsert(message.job);
        break;
      case 'jobDeleted':
        this._jobs = (this._jobs ?? []).filter(j => j.id !== message.id);
        break;
      case 'jobWarnings':
        this._warnings = message.warnings;
        break;
      default:
        return; // Not about jobs.
    }
    this._pushed++;
    this._emit();
  }

  private _onStatus(_: IPushStream, status: StreamStatus): void {
    window.clearTimeout(this._graceTimer);
    if (status !== 'live') {
      // The jobs come again, as a whole, after the next connection.
      this._live = false;
    }
    if (status === 'offline') {
      this._fallback = true;
    } else if (status === 'live' && !this._live) {
      // The jobs follow the clusters at once; a server that does not send
      // them (an older one) is polled instead.
      this._graceTimer = window.setTimeout(() => {
        if (!this._live && !this._isDisposed) {
          this._fallback = true;
          this._updatePoll();
        }
      }, this._streamGrace);
    }
    this._updatePoll();
  }

  // --- polling (only while the stream does not bring the jobs) -------------

  /** Poll while someone looks and the stream does not bring the jobs. */
  private _updatePoll(): void {
    if (this._isDisposed) {
      return;
    }
    if (this._visible && this._fallback && !this._live) {
      // Starting runs a first fetch at once; a running poll goes on as it is.
      void this._poll.start();
    } else {
      void this._poll.stop();
    }
  }

  private async _fetch(): Promise<void> {
    const pushedBefore = this._pushed;
    let answer: IJobList;
    try {
      answer = await listJobs();
    } catch (error) {
      this._error = `Could not load the jobs: ${errorText(error)}`;
      this._emit();
      throw error; // Lets the poll back off.
    }
    if (this._pushed !== pushedBefore) {
      // The stream spoke while we waited: its news is newer than this answer.
      return;
    }
    this._jobs = sortJobs(answer.jobs);
    this._warnings = answer.warnings;
    this._error = null;
    this._emit();
  }

  private _upsert(job: IJob): void {
    const jobs = this._jobs ?? [];
    const index = jobs.findIndex(j => j.id === job.id);
    this._jobs =
      index < 0
        ? sortJobs([job, ...jobs])
        : [...jobs.slice(0, index), job, ...jobs.slice(index + 1)];
  }

  private _stream: IPushStream | null;
  private _streamGrace: number;
  /** Whether this connection's `jobs` message has arrived. */
  private _live = false;
  /** Whether to poll (when visible and not live): the stream is down or brings no jobs. */
  private _fallback: boolean;
  private _graceTimer: number | undefined = undefined;
  /** Job messages received on the stream so far. */
  private _pushed = 0;
  private _poll: Poll;
  private _jobs: IJob[] | null = null;
  private _warnings: string[] = [];
  private _error: string | null = null;
  private _stopping = new Set<string>();
  private _stopErrors = new Map<string, string>();
  private _visible = false;
  private _isDisposed = false;
}

/** Newest first, as the server sorts them (ISO times compare as strings). */
function sortJobs(jobs: IJob[]): IJob[] {
  return [...jobs].sort((a, b) =>
    (b.createdAt ?? '').localeCompare(a.createdAt ?? '')
  );
}

/** Options of a {@link JobStore}. */
export interface IJobStoreOptions extends IFallbackPollOptions {
  /** The push stream to take the jobs from; without it the store polls. */
  stream?: IPushStream;
  /**
   * How long, in ms, to wait for the jobs after the stream came up before
   * polling instead (a server that does not push jobs).
   */
  streamGrace?: number;
}
