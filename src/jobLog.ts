/**
 * A job's log in a main-area tab: the whole log, read on with `?offset=`
 * while the job runs, with a button to read it again from the start.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import type { Message } from '@lumino/messaging';
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import { errorText, getJobLog } from './api';
import { setUpTab } from './mainAreaTab';
import { isTerminal } from './models';

/** The body of a log tab: the whole log in a `<pre>`. */
class JobLogView extends Widget {
  constructor(jobId: string) {
    super();
    this.addClass('eksray-JobLog');
    this._status = document.createElement('div');
    this._status.className = 'eksray-JobLog-status';
    this._status.setAttribute('role', 'status');
    this._pre = document.createElement('pre');
    this._pre.className = 'eksray-JobLog-text';
    this.node.append(this._status, this._pre);
    this._jobId = jobId;
    this._poll = new Poll({
      name: `eksray-jupyter:job-log:${jobId}`,
      factory: () => this._read(),
      frequency: { interval: 2_000, backoff: true, max: 60_000 },
      standby: 'when-hidden'
    });
  }

  /** Read the log again from the start. */
  reload(): void {
    this._offset = 0;
    this._decoder = new TextDecoder();
    this._pre.textContent = '';
    this._ended = false;
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
    let chunk;
    try {
      chunk = await getJobLog(this._jobId, this._offset, this._decoder);
    } catch (error) {
      if (generation !== this._generation) {
        return;
      }
      this._status.textContent = `Could not read the log: ${errorText(error)}`;
      this._status.classList.add('eksray-JobLog-error');
      throw error; // Lets the poll back off.
    }
    if (generation !== this._generation) {
      return; // Reloaded meanwhile: this piece belongs to the old read.
    }
    this._status.classList.remove('eksray-JobLog-error');
    const scroller = this.node;
    const atBottom =
      scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 24;
    if (chunk.text) {
      this._pre.append(chunk.text);
    }
    this._offset = chunk.nextOffset;
    if (atBottom && chunk.text) {
      scroller.scrollTop = scroller.scrollHeight;
    }
    const state = chunk.state;
    if (state && isTerminal(state)) {
      this._ended = true;
      this._status.textContent = `The job ${state}; this is its complete log.`;
      void this._poll.stop();
    } else {
      this._status.textContent = state
        ? `The job is ${state}; the log follows it.`
        : '';
    }
    if (!this._pre.textContent) {
      this._status.textContent =
        `${this._status.textContent} The log is empty so far.`.trim();
    }
  }

  private _jobId: string;
  private _offset = 0;
  private _decoder = new TextDecoder();
  private _ended = false;
  private _generation = 0;
  private _reading: Promise<void> | null = null;
  private _poll: Poll;
  private _pre: HTMLPreElement;
  private _status: HTMLDivElement;
}

/** A main-area tab with the complete log of one job, followed while it runs. */
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
      reloadTooltip: 'Read the log again',
      onReload: () => content.reload()
    });
  }

  /** The id of a job's log tab. */
  static idFor(jobId: string): string {
    return `eksray-job-log-${jobId}`;
  }

  readonly jobId: string;
}
