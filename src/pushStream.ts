/**
 * The app's one websocket to the server's push stream (`eksray/api/stream`).
 *
 * It opens on the first {@link PushStream.start}, reconnects with backoff
 * (and jitter) whenever it closes, and tells its status: `live` from the
 * first message of a connection (the clusters' `snapshot`) until it closes.
 * Every message goes to every subscriber: the `ClusterStore` takes those
 * about clusters, the `JobStore` those about jobs. Each store decides for
 * itself how to stand in for the stream while it is down.
 *
 * An open socket is not proof that changes still come: the server sends a
 * heartbeat every few seconds while they do (its snapshot says how often).
 * A connection that misses {@link IPushStreamOptions.missedHeartbeats} of
 * them, or brings no snapshot in time, is taken for dead: closed, `offline`
 * (so the stores poll), and opened again with the usual backoff.
 */
import type { ServerConnection } from '@jupyterlab/services';
import type { IDisposable } from '@lumino/disposable';
import { type ISignal, Signal } from '@lumino/signaling';

import { openStream } from './api';
import type { StreamMessage } from './models';

/** State of the push stream. */
export type StreamStatus = 'connecting' | 'live' | 'offline';

/** The push stream as the stores see it. */
export interface IPushStream {
  /** `live` once the stream's first message (the clusters) has arrived. */
  readonly status: StreamStatus;
  /** Emitted when {@link status} changes. */
  readonly statusChanged: ISignal<IPushStream, StreamStatus>;
  /** Every message of the stream, in the order they arrive. */
  readonly message: ISignal<IPushStream, StreamMessage>;
  /** Open the socket (once); it reconnects by itself from then on. */
  start(): void;
}

export class PushStream implements IPushStream, IDisposable {
  constructor(options: IPushStreamOptions = {}) {
    this._serverSettings = options.serverSettings;
    this._reconnectDelays = options.reconnectDelays ?? [
      1_000, 2_000, 4_000, 8_000, 15_000, 30_000
    ];
    this._missedHeartbeats = options.missedHeartbeats ?? 3;
    this._connectTimeout = options.connectTimeout ?? 30_000;
  }

  /** Whether messages arrive (`live`) or the socket is down (`offline`). */
  get status(): StreamStatus {
    return this._status;
  }

  /** Emitted when {@link status} changes. */
  get statusChanged(): ISignal<this, StreamStatus> {
    return this._statusChanged;
  }

  /** Every message of the stream, passed on as it arrives. */
  get message(): ISignal<this, StreamMessage> {
    return this._message;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  start(): void {
    if (this._started || this._isDisposed) {
      return;
    }
    this._started = true;
    this._connect();
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    window.clearTimeout(this._reconnectTimer);
    window.clearTimeout(this._silenceTimer);
    const socket = this._socket;
    this._socket = null;
    socket?.close();
    Signal.clearData(this);
  }

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
    this._heartbeatMs = null;
    this._expectWithin(this._connectTimeout);
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

  /** Take the connection for dead unless a message comes within `ms`. */
  private _expectWithin(ms: number): void {
    window.clearTimeout(this._silenceTimer);
    this._silenceTimer = window.setTimeout(() => this._onSilence(ms), ms);
  }

  /** Nothing came in time: close the socket and reconnect (polling meanwhile). */
  private _onSilence(ms: number): void {
    const socket = this._socket;
    if (socket === null || this._isDisposed) {
      return;
    }
    console.warn(
      `eksray-jupyter: nothing on the cluster stream for ${Math.round(ms / 1000)} s; reconnecting.`
    );
    this._socket = null; // Its close event is no longer ours.
    socket.close(4000, 'silent');
    this._onStreamDown();
  }

  private _onStreamDown(): void {
    window.clearTimeout(this._silenceTimer);
    if (this._isDisposed) {
      return;
    }
    this._setStatus('offline');
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
    if (message.type === 'snapshot') {
      const heartbeat = message.heartbeat;
      this._heartbeatMs =
        typeof heartbeat === 'number' && heartbeat > 0
          ? heartbeat * 1000
          : null;
    }
    if (this._heartbeatMs !== null) {
      // Half an interval more, for the trip and a busy server.
      this._expectWithin(this._heartbeatMs * (this._missedHeartbeats + 0.5));
    } else {
      // A server that sends no heartbeats: silence says nothing.
      window.clearTimeout(this._silenceTimer);
    }
    if (message.type === 'heartbeat') {
      return; // Nothing for the stores.
    }
    this._message.emit(message);
    if (message.type === 'snapshot') {
      // The server is up and serving: the next drop starts the backoff anew.
      this._attempt = 0;
      this._setStatus('live');
    }
  }

  private _setStatus(status: StreamStatus): void {
    if (status !== this._status) {
      this._status = status;
      this._statusChanged.emit(status);
    }
  }

  private _serverSettings: ServerConnection.ISettings | undefined;
  private _reconnectDelays: number[];
  private _missedHeartbeats: number;
  private _connectTimeout: number;
  /** The connection's heartbeat interval (from its snapshot), if it has one. */
  private _heartbeatMs: number | null = null;
  private _socket: WebSocket | null = null;
  private _reconnectTimer: number | undefined = undefined;
  private _silenceTimer: number | undefined = undefined;
  private _attempt = 0;
  private _started = false;
  private _status: StreamStatus = 'connecting';
  private _statusChanged = new Signal<this, StreamStatus>(this);
  private _message = new Signal<this, StreamMessage>(this);
  private _isDisposed = false;
}

/** Options of a {@link PushStream}. */
export interface IPushStreamOptions {
  /** Server connection settings; JupyterLab's by default. */
  serverSettings?: ServerConnection.ISettings;
  /** Waits before successive reconnection attempts, in ms (the last repeats). */
  reconnectDelays?: number[];
  /**
   * Heartbeats a connection may miss before it is taken for dead (default 3;
   * the server's snapshot says how often it sends them).
   */
  missedHeartbeats?: number;
  /** How long a new connection may take to bring its snapshot, in ms (default 30 000). */
  connectTimeout?: number;
}
