import {
  ReactWidget,
  ToolbarButtonComponent,
  refreshIcon
} from '@jupyterlab/ui-components';
import type { Message } from '@lumino/messaging';
import React from 'react';

import { rayClustersIcon } from './icons';
import type { ClusterPhase, ICluster } from './models';
import { useClusters } from './useClusters';

/** The left-area panel that lists Ray clusters. */
export class ClusterSidebar extends ReactWidget {
  constructor() {
    super();
    this.id = 'eksray-sidebar';
    this.title.icon = rayClustersIcon;
    this.title.caption = 'Ray clusters';
    this.addClass('eksray-Sidebar');
  }

  /** Profile preselected for new clusters (from the settings), if any. */
  get defaultProfile(): string {
    return this._defaultProfile;
  }
  set defaultProfile(value: string) {
    if (value !== this._defaultProfile) {
      this._defaultProfile = value;
      this.update();
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.update();
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.update();
  }

  protected render(): React.ReactElement {
    return (
      <ClusterPanel
        visible={this.isVisible}
        defaultProfile={this._defaultProfile}
      />
    );
  }

  private _defaultProfile = '';
}

function ClusterPanel(props: {
  visible: boolean;
  defaultProfile: string;
}): React.ReactElement {
  const { clusters, error, refresh } = useClusters(props.visible);

  let body: React.ReactNode;
  if (clusters === null) {
    body = error ? null : (
      <p className="eksray-Panel-status">Loading clusters…</p>
    );
  } else if (clusters.length === 0) {
    body = <EmptyState />;
  } else {
    body = <ClusterList clusters={clusters} />;
  }

  return (
    <div className="eksray-Panel">
      <div className="eksray-Panel-header">
        <h2 className="eksray-Panel-title">Ray clusters</h2>
        <ToolbarButtonComponent
          icon={refreshIcon}
          onClick={refresh}
          tooltip="Refresh the list of clusters"
        />
      </div>
      {props.defaultProfile && (
        <p className="eksray-Panel-hint">
          Default profile: {props.defaultProfile}
        </p>
      )}
      {error && (
        <div className="eksray-Error" role="alert">
          {error}
        </div>
      )}
      {body}
    </div>
  );
}

function EmptyState(): React.ReactElement {
  return (
    <div className="eksray-EmptyState">
      <rayClustersIcon.react tag="span" className="eksray-EmptyState-icon" />
      <p>No Ray clusters yet</p>
    </div>
  );
}

function ClusterList(props: { clusters: ICluster[] }): React.ReactElement {
  return (
    <ul className="eksray-ClusterList">
      {props.clusters.map(cluster => (
        <li
          key={`${cluster.backend}/${cluster.name}`}
          className="eksray-ClusterList-item"
        >
          <div className="eksray-ClusterList-row">
            <span className="eksray-ClusterList-name" title={cluster.name}>
              {cluster.name}
            </span>
            <PhaseBadge phase={cluster.phase} />
          </div>
          {cluster.reason && (
            <div className="eksray-ClusterList-reason">{cluster.reason}</div>
          )}
        </li>
      ))}
    </ul>
  );
}

function PhaseBadge(props: { phase: ClusterPhase }): React.ReactElement {
  return (
    <span
      className={`eksray-PhaseBadge eksray-PhaseBadge-${props.phase}`}
      data-phase={props.phase}
    >
      {props.phase}
    </span>
  );
}
