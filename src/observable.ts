/**
 * What every store of the panel shares: a change signal, a version number React can
 * use as a cheap snapshot (useSyncExternalStore), and a subscribe function.
 */

import { type ISignal, Signal } from '@lumino/signaling';

export abstract class ObservableStore {
  /** Emitted (synchronously) after every change of the store's state. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Increases with every change: a cheap snapshot for React. */
  get version(): number {
    return this._version;
  }

  /** Listen to changes; returns the function that stops listening. */
  readonly subscribe = (listener: () => void): (() => void) => {
    const slot = () => listener();
    this._changed.connect(slot);
    return () => {
      this._changed.disconnect(slot);
    };
  };

  /** Record a change and tell the listeners. */
  protected _emit(): void {
    this._version++;
    this._changed.emit();
  }

  private _version = 0;
  private _changed = new Signal<this, void>(this);
}
