/**
 * The Jobs section of the panel: the user's jobs with their state, duration
 * and cluster, a log tab, where the results are (each one downloadable), and
 * a stop button.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import React, { useEffect, useState, useSyncExternalStore } from 'react';

import { jobResultUrl } from '../api';
import { formatDateTime } from '../format';
import type { JobStore } from '../jobStore';
import { type IJob, isStoppable, isTerminal, type JobState } from '../models';
import { CollapsibleSection } from './CollapsibleSection';

/** What each state means, for tooltips and screen readers. */
const STATE_HINTS: Record<JobState, string> = {
  pending: 'Accepted; the runner has not started on it yet',
  starting: 'Its cluster is being created or is not ready yet',
  running: 'Submitted to Ray and running',
  succeeded: 'The entrypoint exited with 0',
  failed: 'Ended with an error',
  stopped: 'Stopped on request'
};

/** A job's state as a coloured badge. */
export function JobStateBadge(props: { state: JobState }): React.ReactElement {
  return (
    <span
      className={`eksray-JobBadge eksray-JobBadge-${props.state}`}
      data-state={props.state}
      title={STATE_HINTS[props.state] ?? props.state}
    >
      {props.state}
    </span>
  );
}

/** How long a job has run (or ran), e.g. `3 min 4 s`. */
export function formatDuration(job: IJob, now = Date.now()): string {
  if (!job.startedAt) {
    return 'not started';
  }
  const start = new Date(job.startedAt).getTime();
  const end = job.finishedAt ? new Date(job.finishedAt).getTime() : now;
  if (Number.isNaN(start) || Number.isNaN(end)) {
    return '–';
  }
  let seconds = Math.max(0, Math.round((end - start) / 1000));
  const hours = Math.floor(seconds / 3600);
  seconds -= hours * 3600;
  const minutes = Math.floor(seconds / 60);
  seconds -= minutes * 60;
  if (hours > 0) {
    return `${hours} h ${minutes} min`;
  }
  if (minutes > 0) {
    return `${minutes} min ${seconds} s`;
  }
  return `${seconds} s`;
}

/** Re-render every second while some job runs, so durations move. */
function useTicker(active: boolean): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!active) {
      return;
    }
    const timer = window.setInterval(() => setNow(Date.now()), 1_000);
    return () => window.clearInterval(timer);
  }, [active]);
  return now;
}

/** The Jobs section. */
export function JobsSection(props: {
  store: JobStore;
  onOpenLog: (job: IJob) => void;
  /** Show a cluster's details; given with the names of the clusters that exist now. */
  onOpenCluster?: (name: string) => void;
  clusterNames?: ReadonlySet<string>;
  /** Whether the section is unfolded (default: yes). */
  open?: boolean;
  onToggle?: (open: boolean) => void;
}): React.ReactElement {
  const { store } = props;
  useSyncExternalStore(store.subscribe, () => store.version);
  const jobs = store.jobs;
  const now = useTicker((jobs ?? []).some(j => !isTerminal(j.state)));

  let body: React.ReactNode;
  if (jobs === null) {
    body = store.error ? null : (
      <p className="eksray-Panel-status">Loading jobs…</p>
    );
  } else if (jobs.length === 0) {
    body = (
      <p className="eksray-JobList-empty">
        No jobs yet. Submit one with <code>eksray rj submit</code> or{' '}
        <code>%eksray job submit</code>.
      </p>
    );
  } else {
    body = (
      <ul className="eksray-JobList" aria-label="Ray jobs">
        {jobs.map(job => (
          <JobItem
            key={job.id}
            job={job}
            now={now}
            store={store}
            onOpenLog={props.onOpenLog}
            onOpenCluster={props.onOpenCluster}
            clusterNames={props.clusterNames}
          />
        ))}
      </ul>
    );
  }

  return (
    <CollapsibleSection
      id="jobs"
      title="Jobs"
      className="eksray-Jobs"
      open={props.open ?? true}
      onToggle={open => props.onToggle?.(open)}
    >
      {store.error && (
        <div className="eksray-Error" role="alert">
          {store.error}
        </div>
      )}
      {store.warnings.map(warning => (
        <p key={warning} className="eksray-Panel-hint" role="status">
          {warning}
        </p>
      ))}
      {body}
    </CollapsibleSection>
  );
}

function JobItem(props: {
  job: IJob;
  now: number;
  store: JobStore;
  onOpenLog: (job: IJob) => void;
  onOpenCluster?: (name: string) => void;
  clusterNames?: ReadonlySet<string>;
}): React.ReactElement {
  const { job, store } = props;
  const [showResults, setShowResults] = useState(false);
  const stopping = store.isStopping(job.id);
  const stopError = store.stopError(job.id);
  const label = job.name && job.name !== job.id ? job.name : job.id;

  const confirmStop = async () => {
    const answer = await showDialog({
      title: 'Stop Ray job?',
      body: `“${label}” (${job.id}) will be stopped. Its log and the results written so far are kept.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Stop' })]
    });
    if (answer.button.accept) {
      await store.stop(job.id);
    }
  };

  return (
    <li
      className="eksray-JobList-item"
      data-job-id={job.id}
      aria-label={`Job ${label}, ${job.state}`}
    >
      <div className="eksray-JobList-row">
        <span className="eksray-JobList-name" title={`${label} (${job.id})`}>
          {label}
        </span>
        <JobStateBadge state={job.state} />
      </div>
      <div className="eksray-JobList-meta">
        {job.name !== job.id && (
          <span className="eksray-JobList-id">{job.id} · </span>
        )}
        <span
          title={
            job.startedAt
              ? `Started ${formatDateTime(job.startedAt)}${job.finishedAt ? `, ended ${formatDateTime(job.finishedAt)}` : ''}`
              : undefined
          }
        >
          {formatDuration(job, props.now)}
        </span>
        {' · '}
        {job.clusterName ? (
          <span title={job.clusterDeletedAt ? 'The cluster was deleted' : ''}>
            on{' '}
            {props.onOpenCluster &&
            !job.clusterDeletedAt &&
            props.clusterNames?.has(job.clusterName) ? (
              <button
                type="button"
                className="eksray-JobList-cluster"
                onClick={() => props.onOpenCluster?.(job.clusterName as string)}
                title={`Show cluster ${job.clusterName}: its workers, nodes and events`}
              >
                {job.clusterName}
              </button>
            ) : (
              job.clusterName
            )}
            {job.clusterDeletedAt ? ' (deleted)' : ''}
          </span>
        ) : (
          'no cluster yet'
        )}
      </div>
      {job.reason && <div className="eksray-JobList-reason">{job.reason}</div>}
      <div className="eksray-JobList-actions">
        <button
          type="button"
          className="jp-mod-styled eksray-Button eksray-JobList-action"
          onClick={() => props.onOpenLog(job)}
          aria-label={`View the log of ${label}`}
        >
          Logs
        </button>
        <button
          type="button"
          className="jp-mod-styled eksray-Button eksray-JobList-action"
          onClick={() => setShowResults(!showResults)}
          aria-expanded={showResults}
          aria-label={`Results of ${label}`}
        >
          Results{job.results.length ? ` (${job.results.length})` : ''}
        </button>
        {isStoppable(job.state) && (
          <button
            type="button"
            className="jp-mod-styled jp-mod-warn eksray-Button eksray-JobList-action"
            onClick={() => void confirmStop()}
            disabled={stopping}
            aria-label={`Stop ${label}`}
          >
            {stopping ? 'Stopping…' : 'Stop'}
          </button>
        )}
      </div>
      {stopError && (
        <div className="eksray-Error" role="alert">
          {stopError}
        </div>
      )}
      {showResults && <JobResults job={job} />}
    </li>
  );
}

function JobResults(props: { job: IJob }): React.ReactElement {
  const { job } = props;
  const base = job.location.replace(/\/+$/, '');
  return (
    <div className="eksray-JobResults">
      <div className="eksray-JobResults-location">
        Stored in <code>{job.location || 'an unknown place'}</code>
      </div>
      {job.results.length === 0 ? (
        <div className="eksray-JobResults-none">
          {isTerminal(job.state)
            ? 'No result files were kept.'
            : 'Result files are collected when the job ends.'}
        </div>
      ) : (
        <ul className="eksray-JobResults-list">
          {job.results.map(result => (
            <li key={result.path}>
              <a
                className="eksray-JobResults-download"
                href={jobResultUrl(job.id, result.path)}
                download={result.path.split('/').pop() || 'result'}
                title={`Download ${base}/results/${result.path}`}
                aria-label={`Download results/${result.path}`}
              >
                <code>results/{result.path}</code>
              </a>
              {typeof result.size === 'number' && (
                <span className="eksray-JobResults-size">
                  {' '}
                  {formatBytes(result.size)}
                </span>
              )}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

function formatBytes(size: number): string {
  if (size < 1024) {
    return `${size} B`;
  }
  if (size < 1024 ** 2) {
    return `${(size / 1024).toFixed(1)} KiB`;
  }
  return `${(size / 1024 ** 2).toFixed(1)} MiB`;
}
