/**
 * A job's log in a main-area tab, read in pages: its end first (`?tail=`),
 * earlier output on demand ("Load earlier output"), and new output appended
 * by offset while the job runs. The tab never holds more than
 * `MAX_SHOWN_BYTES` of the log: following a long log drops its oldest shown
 * lines (they can be loaded again), and loading earlier output beyond that
 * stops showing the newest until "Show the latest output".
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import type { Message } from '@lumino/messaging';
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import { errorText, getJobLog } from './api';
import { setUpTab } from './mainAreaTab';
import { isTerminal } from './models';
import type { IJobLogPage, JobState } from './models';

/** Bytes read at a time: the end of the log first, then each page before or after. */
export const LOG_PAGE_BYTES = 256 * 1024;
/** The most of a log the tab keeps in the DOM. */
export const MAX_SHOWN_BYTES = 2 * 1024 * 1024;
/** Pages read back to back on one tick while catching up with a running job. */
const PAGES_PER_TICK = 4;

/** How many bytes at the end of `bytes` begin a UTF-8 character that is not complete. */
export function incompleteTail(bytes: Uint8Array): number {
  for (let back = 1; back <= Math.min(3, bytes.length); back++) {
    const byte = bytes[bytes.length - back];
    if ((byte & 0xc0) === 0x80) {
      continue; // a continuation byte: look further back for its start
    }
    if (byte >= 0xc0) {
      const length = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : 2;
      return length > back ? back : 0;
    }
    return 0;
  }
  return 0;
}

/** How many bytes at the start of `bytes` continue a character begun before them. */
function continuationHead(bytes: Uint8Array): number {
  let count = 0;
  while (count < 3 && count < bytes.length && (bytes[count] & 0xc0) === 0x80) {
    count++;
  }
  return count;
}

function formatBytes(size: number): string {
  if (size < 1024) {
    return `${size} B`;
  }
  if (size < 1024 * 1024) {
    return `${(size / 1024).toFixed(size < 10 * 1024 ? 1 : 0)} KiB`;
  }
  if (size < 1024 ** 3) {
    return `${(size / 1024 ** 2).toFixed(1)} MiB`;
  }
  return `${(size / 1024 ** 3).toFixed(1)} GiB`;
}

/** One piece of text in the tab: the log's bytes `[start, end)`. */
interface ISegment {
  node: Text;
  start: number;
  end: number;
}

/** The body of a log tab: a window of the log in a `<pre>`, and buttons to move it. */
class JobLogView extends Widget {
  constructor(jobId: string) {
    super();
    this.addClass('eksray-JobLog');
    this._status = document.createElement('div');
    this._status.className = 'eksray-JobLog-status';
    this._status.setAttribute('role', 'status');
    this._earlier = this._button('Load earlier output', () =>
      this._loadEarlier()
    );
    this._pre = document.createElement('pre');
    this._pre.className = 'eksray-JobLog-text';
    this._latest = this._button('Show the latest output', () => this.reload());
    this.node.append(this._status, this._earlier, this._pre, this._latest);
    this._jobId = jobId;
    this._poll = new Poll({
      name: `eksray-jupyter:job-log:${jobId}`,
      factory: () => this._read(),
      frequency: { interval: 2_000, backoff: true, max: 60_000 },
      standby: 'when-hidden'
    });
    this._render();
  }

  /** Read the log again from its end, and follow it. */
  reload(): void {
    this._loaded = false;
    this._generation++;
    void this._poll.start().then(() => this._poll.refresh());
  }

  dispose(): void {
    this._poll.dispose();
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    if (!this._ended) {
      void this._poll.refresh();
    }
  }

  private _button(label: string, onClick: () => void): HTMLButtonElement {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'jp-mod-styled eksray-JobLog-more';
    button.textContent = label;
    button.hidden = true;
    button.addEventListener('click', onClick);
    return button;
  }

  /** One read at a time: a refresh during a read waits for it. */
  private _read(): Promise<void> {
    if (!this._reading) {
      this._reading = this._readOnce().finally(() => {
        this._reading = null;
      });
    }
    return this._reading;
  }

  private async _readOnce(): Promise<void> {
    const generation = this._generation;
    try {
      if (!this._loaded) {
        const page = await getJobLog(this._jobId, { tail: LOG_PAGE_BYTES });
        if (generation !== this._generation) {
          return; // Reloaded meanwhile: this read belongs to the old one.
        }
        this._clear(page.offset);
        this._loaded = true;
        this._following = true;
        this._append(page);
        this._noted(page);
      } else if (this._following) {
        for (let i = 0; i < PAGES_PER_TICK; i++) {
          let page = await getJobLog(this._jobId, {
            offset: this._end,
            limit: LOG_PAGE_BYTES
          });
          if (generation !== this._generation) {
            return;
          }
          if (page.size - page.offset > MAX_SHOWN_BYTES) {
            // Far behind a fast log: jump to its end rather than read what would not be kept.
            page = await getJobLog(this._jobId, { tail: LOG_PAGE_BYTES });
            if (generation !== this._generation) {
              return;
            }
            this._clear(page.offset);
          }
          this._append(page);
          this._noted(page);
          if (page.nextOffset >= page.size || !page.bytes.byteLength) {
            break;
          }
        }
      } else {
        // Newer output is not shown: only the state and the size.
        const page = await getJobLog(this._jobId, {
          offset: this._end,
          limit: 0
        });
        if (generation !== this._generation) {
          return;
        }
        this._noted(page);
      }
    } catch (error) {
      if (generation !== this._generation) {
        return;
      }
      this._error = `Could not read the log: ${errorText(error)}`;
      this._render();
      throw error; // Lets the poll back off.
    }
    this._error = '';
    this._render();
    if (this._ended) {
      void this._poll.stop();
    }
  }

  /** The state and size a read reported; whether anything can change any more. */
  private _noted(page: IJobLogPage): void {
    this._state = page.state;
    this._size = Math.max(page.size, page.nextOffset);
    const terminal = page.state !== null && isTerminal(page.state);
    this._ended =
      page.complete ||
      (terminal && (!this._following || page.nextOffset >= page.size));
  }

  /** Show nothing; the next text shown starts at byte `at`. */
  private _clear(at: number): void {
    this._pre.textContent = '';
    this._segments = [];
    this._carry = new Uint8Array(0);
    this._start = at;
    this._end = at;
  }

  /** Append a page read from `_end` on; drop the oldest text beyond `MAX_SHOWN_BYTES`. */
  private _append(page: IJobLogPage): void {
    const scroller = this.node;
    const atBottom =
      scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 24;
    let bytes = page.bytes;
    if (this._carry.byteLength) {
      bytes = new Uint8Array(this._carry.byteLength + page.bytes.byteLength);
      bytes.set(this._carry);
      bytes.set(page.bytes, this._carry.byteLength);
    }
    const first = page.nextOffset - bytes.byteLength;
    const keep = page.complete ? 0 : incompleteTail(bytes);
    this._carry = bytes.slice(bytes.byteLength - keep);
    this._end = page.nextOffset;
    const shown = bytes.subarray(0, bytes.byteLength - keep);
    if (!shown.byteLength) {
      return;
    }
    const node = document.createTextNode(this._decoder.decode(shown));
    this._pre.append(node);
    this._segments.push({ node, start: first, end: first + shown.byteLength });
    while (this._segments.length > 1 && this._shownBytes() > MAX_SHOWN_BYTES) {
      this._segments.shift()!.node.remove();
      this._start = this._segments[0].start;
    }
    if (atBottom) {
      scroller.scrollTop = scroller.scrollHeight;
    }
  }

  /** Read the page before the first byte shown and put it on top. */
  private async _loadEarlier(): Promise<void> {
    const generation = this._generation;
    const end = this._start;
    const from = Math.max(0, end - LOG_PAGE_BYTES);
    if (end <= 0 || this._loadingEarlier) {
      return;
    }
    this._loadingEarlier = true;
    this._earlier.disabled = true;
    try {
      const parts: Uint8Array[] = [];
      let offset = from;
      while (offset < end) {
        // A page may end early (the store's bound on one read): read on to `end`.
        const page = await getJobLog(this._jobId, {
          offset,
          limit: end - offset
        });
        if (generation !== this._generation) {
          return;
        }
        if (!page.bytes.byteLength) {
          break;
        }
        parts.push(page.bytes.subarray(0, end - offset));
        offset = page.nextOffset;
      }
      const bytes = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
      let at = 0;
      for (const part of parts) {
        bytes.set(part, at);
        at += part.byteLength;
      }
      const skip = from > 0 ? continuationHead(bytes) : 0;
      if (from + bytes.byteLength !== end) {
        throw new Error('the log changed while it was read');
      }
      const scroller = this.node;
      const before = scroller.scrollHeight;
      const node = document.createTextNode(
        this._decoder.decode(bytes.subarray(skip))
      );
      this._pre.insertBefore(node, this._pre.firstChild);
      this._segments.unshift({ node, start: from + skip, end });
      this._start = from + skip;
      while (
        this._segments.length > 1 &&
        this._shownBytes() > MAX_SHOWN_BYTES
      ) {
        // Too much in the tab: the newest text goes, and following stops until asked.
        this._segments.pop()!.node.remove();
        this._end = this._segments[this._segments.length - 1].end;
        this._carry = new Uint8Array(0);
        this._following = false;
      }
      scroller.scrollTop += scroller.scrollHeight - before; // The same lines stay in view.
      this._error = '';
    } catch (error) {
      if (generation === this._generation) {
        this._error = `Could not read the earlier output: ${errorText(error)}`;
      }
    } finally {
      this._loadingEarlier = false;
      this._earlier.disabled = false;
      this._render();
    }
  }

  private _shownBytes(): number {
    const segments = this._segments;
    return segments.length
      ? segments[segments.length - 1].end - segments[0].start
      : 0;
  }

  /** The status line and which buttons show. */
  private _render(): void {
    const parts: string[] = [];
    const state = this._state;
    if (this._error) {
      parts.push(this._error);
    } else if (state && isTerminal(state)) {
      parts.push(
        this._following
          ? `The job ${state}; this is the end of its log.`
          : `The job ${state}.`
      );
    } else if (state) {
      parts.push(
        this._following
          ? `The job is ${state}; the log follows it.`
          : `The job is ${state}; newer output is not shown.`
      );
    }
    if (this._loaded && this._start > 0) {
      parts.push(
        `Showing the last ${formatBytes(this._end - this._start)} of ${formatBytes(this._size)}` +
          (this._following ? '.' : ' up to the newest output shown.')
      );
    }
    if (this._loaded && !this._pre.textContent && this._start === 0) {
      parts.push('The log is empty so far.');
    }
    this._status.textContent = parts.join(' ');
    this._status.classList.toggle('eksray-JobLog-error', !!this._error);
    this._earlier.hidden = !(this._loaded && this._start > 0);
    this._earlier.textContent = `Load earlier output (${formatBytes(this._start)} before)`;
    this._earlier.setAttribute(
      'aria-label',
      `Load earlier output (${formatBytes(this._start)} before what is shown)`
    );
    this._latest.hidden = !(this._loaded && !this._following);
  }

  private _jobId: string;
  /** Bytes of the log before the first one shown, and where the next read goes on. */
  private _start = 0;
  private _end = 0;
  /** Bytes of a character split by the last read, shown with the next one. */
  private _carry = new Uint8Array(0);
  private _segments: ISegment[] = [];
  private _decoder = new TextDecoder();
  private _size = 0;
  private _state: JobState | null = null;
  private _error = '';
  private _loaded = false;
  private _following = true;
  private _ended = false;
  private _loadingEarlier = false;
  private _generation = 0;
  private _reading: Promise<void> | null = null;
  private _poll: Poll;
  private _pre: HTMLPreElement;
  private _status: HTMLDivElement;
  private _earlier: HTMLButtonElement;
  private _latest: HTMLButtonElement;
}

/** A main-area tab with a job's log, its end first, followed while the job runs. */
export class JobLogWidget extends MainAreaWidget<Widget> {
  constructor(options: { id: string; name: string }) {
    const content = new JobLogView(options.id);
    super({ content });
    this.jobId = options.id;
    setUpTab(this, {
      id: JobLogWidget.idFor(options.id),
      label: `Log: ${options.name}`,
      caption: `Log of the Ray job ${options.name} (${options.id})`,
      className: 'eksray-JobLogWidget',
      reloadTooltip: 'Read the end of the log again',
      onReload: () => content.reload()
    });
  }

  /** The id of a job's log tab. */
  static idFor(jobId: string): string {
    return `eksray-job-log-${jobId}`;
  }

  readonly jobId: string;
}
