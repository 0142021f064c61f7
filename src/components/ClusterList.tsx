import { addIcon } from '@jupyterlab/ui-components';
import React from 'react';

import { aliveWorkers } from '../clusterStore';
import { rayClustersIcon } from '../icons';
import type { ClusterPhase, ICluster } from '../models';

/** What each phase means, for tooltips and screen readers. */
const PHASE_HINTS: Record<ClusterPhase, string> = {
  pending: 'Accepted; nothing started yet',
  starting: 'The head node or the first workers are coming up',
  ready: 'Up, with every worker group at its desired size',
  scaling: 'A worker group is adding or removing workers',
  failed: 'The head node is gone or cannot start',
  stopping: 'Being deleted',
  suspending: 'Its Ray nodes are being stopped; the cluster is kept',
  suspended: 'No Ray node runs and it costs nothing; resume it to use it again'
};

/** A cluster's phase as a coloured badge. */
export function PhaseBadge(props: { phase: ClusterPhase }): React.ReactElement {
  return (
    <span
      className={`eksray-PhaseBadge eksray-PhaseBadge-${props.phase}`}
      data-phase={props.phase}
      title={PHASE_HINTS[props.phase] ?? props.phase}
    >
      {props.phase}
    </span>
  );
}

/** Shown instead of the list when there is no cluster. */
export function EmptyState(props: {
  onCreate: () => void;
}): React.ReactElement {
  return (
    <div className="eksray-EmptyState">
      <rayClustersIcon.react tag="span" className="eksray-EmptyState-icon" />
      <p className="eksray-EmptyState-title">No Ray clusters yet</p>
      <p className="eksray-EmptyState-text">
        Start one on this machine in a few clicks; no configuration file needed.
      </p>
      <button
        type="button"
        className="jp-mod-styled jp-mod-accept eksray-Button"
        onClick={props.onCreate}
      >
        <addIcon.react tag="span" className="eksray-Button-icon" />
        New cluster
      </button>
    </div>
  );
}

/** The clusters, each a button that opens its details. */
export function ClusterList(props: {
  clusters: ICluster[];
  onSelect: (name: string) => void;
}): React.ReactElement {
  return (
    <ul className="eksray-ClusterList" aria-label="Ray clusters">
      {props.clusters.map(cluster => {
        const desired = cluster.workerGroups.reduce(
          (sum, g) => sum + g.desired,
          0
        );
        const workers = aliveWorkers(cluster.nodes);
        return (
          <li key={cluster.name} className="eksray-ClusterList-item">
            <button
              type="button"
              className="eksray-ClusterList-button"
              onClick={() => props.onSelect(cluster.name)}
              aria-label={`${cluster.name}, ${cluster.phase}`}
            >
              <span className="eksray-ClusterList-row">
                <span className="eksray-ClusterList-name" title={cluster.name}>
                  {cluster.name}
                </span>
                <PhaseBadge phase={cluster.phase} />
              </span>
              <span className="eksray-ClusterList-meta">
                {cluster.backend} · {workers}/{desired} workers
                {cluster.readOnly ? ' · read-only' : ''}
              </span>
              {cluster.reason && (
                <span className="eksray-ClusterList-reason">
                  {cluster.reason}
                </span>
              )}
            </button>
          </li>
        );
      })}
    </ul>
  );
}
