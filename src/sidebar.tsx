/**
 * The left-area panel: the list of clusters, the "new cluster" form and one
 * cluster's details, one at a time.
 */
import {
  addIcon,
  ReactWidget,
  refreshIcon,
  ToolbarButtonComponent
} from '@jupyterlab/ui-components';
import type { CommandRegistry } from '@lumino/commands';
import type { Message } from '@lumino/messaging';
import { type ISignal, Signal } from '@lumino/signaling';
import React from 'react';

import type { ClusterStore } from './clusterStore';
import { ClusterDetail } from './components/ClusterDetail';
import { ClusterList, EmptyState } from './components/ClusterList';
import { CreateClusterForm } from './components/CreateClusterForm';
import { JobsSection } from './components/JobList';
import { PanelContext, useStore } from './context';
import { rayClustersIcon } from './icons';
import type { JobStore } from './jobStore';
import type { IJob } from './models';

/** What the panel shows. */
export type PanelView =
  { kind: 'list' } | { kind: 'create' } | { kind: 'detail'; name: string };

export class ClusterSidebar extends ReactWidget {
  constructor(options: IClusterSidebarOptions) {
    super();
    this.id = 'eksray-sidebar';
    this.title.icon = rayClustersIcon;
    this.title.caption = 'Ray clusters';
    this.addClass('eksray-Sidebar');
    this._context = { store: options.store, commands: options.commands };
    this._jobs = options.jobs ?? null;
    this._openJobLog = options.openJobLog ?? (() => undefined);
  }

  /** The jobs shown in the list view, if any. */
  get jobs(): JobStore | null {
    return this._jobs;
  }

  get store(): ClusterStore {
    return this._context.store;
  }

  /** What the panel shows. */
  get view(): PanelView {
    return this._view;
  }
  set view(view: PanelView) {
    this._view = view;
    this._viewChanged.emit(view);
    this.update();
  }

  /** Emitted when the panel shows something else. */
  get viewChanged(): ISignal<this, PanelView> {
    return this._viewChanged;
  }

  /** The cluster whose details are shown, if any. */
  get selected(): string | null {
    return this._view.kind === 'detail' ? this._view.name : null;
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

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    // Restored open on reload: shown without a show message.
    if (this.isVisible) {
      this.store.setVisible(true);
      this._jobs?.setVisible(true);
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.store.setVisible(true);
    this._jobs?.setVisible(true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.store.setVisible(false);
    this._jobs?.setVisible(false);
  }

  protected render(): React.ReactElement {
    return (
      <PanelContext.Provider value={this._context}>
        <ClusterPanel
          view={this._view}
          defaultProfile={this._defaultProfile}
          navigate={this._navigate}
          jobs={this._jobs}
          openJobLog={this._openJobLog}
        />
      </PanelContext.Provider>
    );
  }

  private _navigate = (view: PanelView) => {
    this.view = view;
  };

  private _context: { store: ClusterStore; commands: CommandRegistry };
  private _jobs: JobStore | null;
  private _openJobLog: (job: IJob) => void;
  private _view: PanelView = { kind: 'list' };
  private _viewChanged = new Signal<this, PanelView>(this);
  private _defaultProfile = '';
}

/** Options of a {@link ClusterSidebar}. */
export interface IClusterSidebarOptions {
  store: ClusterStore;
  commands: CommandRegistry;
  /** The user's jobs, shown below the clusters in the list view. */
  jobs?: JobStore;
  /** Open a job's log in a main-area tab. */
  openJobLog?: (job: IJob) => void;
}

function ClusterPanel(props: {
  view: PanelView;
  defaultProfile: string;
  navigate: (view: PanelView) => void;
  jobs: JobStore | null;
  openJobLog: (job: IJob) => void;
}): React.ReactElement {
  const store = useStore();
  const { view, navigate } = props;
  const clusters = store.clusters;

  let body: React.ReactNode;
  if (view.kind === 'create') {
    body = (
      <CreateClusterForm
        defaultProfile={props.defaultProfile}
        onCreated={name => navigate({ kind: 'detail', name })}
        onCancel={() => navigate({ kind: 'list' })}
      />
    );
  } else if (view.kind === 'detail') {
    body = (
      <ClusterDetail
        name={view.name}
        onBack={() => navigate({ kind: 'list' })}
      />
    );
  } else if (clusters === null) {
    body = store.error ? null : (
      <p className="eksray-Panel-status">Loading clusters…</p>
    );
  } else if (clusters.length === 0) {
    body = <EmptyState onCreate={() => navigate({ kind: 'create' })} />;
  } else {
    body = (
      <ClusterList
        clusters={clusters}
        onSelect={name => navigate({ kind: 'detail', name })}
      />
    );
  }

  return (
    <div className="eksray-Panel">
      <div className="eksray-Panel-header">
        <h2 className="eksray-Panel-title">Ray clusters</h2>
        <div className="eksray-Panel-toolbar">
          <ToolbarButtonComponent
            icon={addIcon}
            onClick={() => navigate({ kind: 'create' })}
            tooltip="New cluster"
          />
          <ToolbarButtonComponent
            icon={refreshIcon}
            onClick={() => void store.refresh()}
            tooltip="Refresh the list of clusters"
          />
        </div>
      </div>
      {store.error && (
        <div className="eksray-Error" role="alert">
          {store.error}
        </div>
      )}
      {store.status === 'offline' && !store.error && (
        <p className="eksray-Panel-hint" role="status">
          Live updates are unavailable; refreshing every few seconds instead.
        </p>
      )}
      <div className="eksray-Panel-body">
        {body}
        {view.kind === 'list' && props.jobs && (
          <JobsSection
            store={props.jobs}
            onOpenLog={props.openJobLog}
            onOpenCluster={name => navigate({ kind: 'detail', name })}
            clusterNames={new Set((clusters ?? []).map(c => c.name))}
          />
        )}
      </div>
    </div>
  );
}
