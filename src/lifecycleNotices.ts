/**
 * The idle keeper's notices as JupyterLab notifications: a warning with a
 * "Keep running" action before a cluster is suspended or deleted, then what
 * was done (or the warning withdrawn once the cluster is in use again).
 *
 * And the monthly budget's: a warning at 80 % of it, an error at 100 %, each
 * shown once (the server sends each once per month).
 */
import { Notification } from '@jupyterlab/apputils';
import type { IDisposable } from '@lumino/disposable';

import { errorText, keepClusterAlive } from './api';
import type { IBudgetNotice, ILifecycleNotice, StreamMessage } from './models';
import type { IPushStream } from './pushStream';

/** "in 4 min" / "now" until an ISO time. */
function until(iso: string | null): string {
  if (!iso) {
    return 'soon';
  }
  const minutes = Math.round((Date.parse(iso) - Date.now()) / 60_000);
  return minutes >= 1 ? `in ${minutes} min` : 'in less than a minute';
}

/** What toasts show of a message; longer ones are cut. */
const TOAST_LENGTH = 140;

/**
 * A message that fits a toast: whole if it does, else as many of its sentences
 * as fit (the Usage section says the rest), else cut with an ellipsis.
 */
export function fitToast(message: string, length = TOAST_LENGTH): string {
  const text = message.trim();
  if (text.length <= length) {
    return text;
  }
  let kept = '';
  for (const sentence of text.match(/[\s\S]*?[.!?](?:\s+|$)/g) ?? []) {
    if ((kept + sentence).trimEnd().length > length) {
      break;
    }
    kept += sentence;
  }
  return kept.trim() || `${text.slice(0, length - 1).trimEnd()}…`;
}

/** Options of {@link LifecycleNotices}. */
export interface ILifecycleNoticesOptions {
  /** Show what the clusters use and cost (a budget notice's action). */
  showUsage?: () => void;
}

/** "idle for 25 min" of "idle for 25 min: no Ray task, …". */
function gist(reason: string): string {
  return reason.split(':')[0];
}

export class LifecycleNotices implements IDisposable {
  constructor(stream: IPushStream, options: ILifecycleNoticesOptions = {}) {
    this._stream = stream;
    this._showUsage = options.showUsage ?? null;
    stream.message.connect(this._onMessage, this);
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._stream.message.disconnect(this._onMessage, this);
    for (const id of this._shown.values()) {
      Notification.dismiss(id);
    }
    this._shown.clear();
  }

  private _onMessage(_: IPushStream, message: StreamMessage): void {
    if (message.type === 'lifecycle') {
      this.show(message);
    } else if (message.type === 'budget') {
      this.showBudget(message);
    }
  }

  /**
   * A budget threshold crossed: a warning (80 %) or an error (100 %) that stays
   * until dismissed. Each month's threshold is shown once, however often it
   * comes (another server, a reconnection).
   */
  showBudget(notice: IBudgetNotice): void {
    const key = `${notice.month}:${notice.state}`;
    if (this._budgetShown.has(key)) {
      return;
    }
    this._budgetShown.add(key);
    const showUsage = this._showUsage;
    const options = {
      autoClose: false as const,
      actions: showUsage
        ? [
            {
              label: 'Show usage',
              caption: 'What your clusters use and cost, and your budget',
              callback: () => showUsage()
            }
          ]
        : []
    };
    const text = fitToast(notice.message || 'Monthly budget notice.');
    if (notice.state === 'exceeded') {
      Notification.error(text, options);
    } else {
      Notification.warning(text, options);
    }
  }

  /** Show a notice, replacing the cluster's earlier one. */
  show(notice: ILifecycleNotice): void {
    const { name } = notice;
    const earlier = this._shown.get(name);
    if (earlier !== undefined) {
      Notification.dismiss(earlier);
      this._shown.delete(name);
    }
    if (notice.action === 'clear') {
      return; // The warning no longer holds: it simply goes away.
    }
    if (notice.action === 'warn') {
      // Toasts show 140 characters: the gist here, the whole reason in the cluster's events.
      const id = Notification.warning(
        `Ray cluster “${name}” will be ${notice.pending === 'delete' ? 'deleted' : 'suspended'} ${until(notice.due)}: ${gist(notice.reason)}.`,
        {
          autoClose: false,
          actions: [
            {
              label: 'Keep running',
              caption: 'Its idle time starts again',
              callback: () => void this._keep(name)
            }
          ]
        }
      );
      this._shown.set(name, id);
      return;
    }
    const done = notice.action === 'delete' ? 'deleted' : 'suspended';
    Notification.info(
      `Ray cluster “${name}” was ${done}: ${gist(notice.reason)}.`,
      {
        autoClose: 10_000
      }
    );
  }

  private async _keep(name: string): Promise<void> {
    try {
      await keepClusterAlive(name);
      const warning = this._shown.get(name);
      if (warning !== undefined) {
        Notification.dismiss(warning);
        this._shown.delete(name);
      }
      Notification.success(`“${name}” is kept running.`, { autoClose: 4_000 });
    } catch (error) {
      Notification.error(
        `Could not keep “${name}” running: ${errorText(error)}`,
        { autoClose: false }
      );
    }
  }

  private _stream: IPushStream;
  private _showUsage: (() => void) | null;
  private _shown = new Map<string, string>();
  private _budgetShown = new Set<string>();
  private _isDisposed = false;
}
