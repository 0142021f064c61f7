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
import { UsageSection } from './components/UsageSection';
import { PanelContext, usePanelContext, useStore } from './context';
import { rayClustersIcon } from './icons';
import type { JobStore } from './jobStore';
import type { IJob } from './models';
import type { UsageStore } from './usageStore';

/** What the panel shows. */
export type PanelView =
  { kind: 'list' } | { kind: 'create' } | { kind: 'detail'; name: string };

/** The foldable sections of the list view, and whether each is unfolded. */
export interface ISectionsOpen {
  usage: boolean;
  jobs: boolean;
}

export class ClusterSidebar extends ReactWidget {
  constructor(options: IClusterSidebarOptions) {
    super();
    this.id = 'eksray-sidebar';
    this.title.icon = rayClustersIcon;
    this.title.caption = 'Ray clusters';
    this.addClass('eksray-Sidebar');
    this._context = {
      store: options.store,
      commands: options.commands,
      usage: options.usage ?? null
    };
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

  /** What the clusters use and cost, if the panel shows it. */
  get usage(): UsageStore | null {
    return this._context.usage ?? null;
  }

  /** Which sections of the list view are unfolded. */
  get sections(): ISectionsOpen {
    return this._sections;
  }
  set sections(sections: ISectionsOpen) {
    this._sections = { ...sections };
    this._sectionsChanged.emit(this._sections);
    this.update();
  }

  /** Emitted when a section is folded or unfolded. */
  get sectionsChanged(): ISignal<this, ISectionsOpen> {
    return this._sectionsChanged;
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
      this.usage?.setVisible(true);
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.store.setVisible(true);
    this._jobs?.setVisible(true);
    this.usage?.setVisible(true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.store.setVisible(false);
    this._jobs?.setVisible(false);
    this.usage?.setVisible(false);
  }

  protected onBeforeDetach(msg: Message): void {
    // Nobody looks at a detached panel.
    this.store.setVisible(false);
    this._jobs?.setVisible(false);
    this.usage?.setVisible(false);
    super.onBeforeDetach(msg);
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
          sections={this._sections}
          setSections={this._setSections}
        />
      </PanelContext.Provider>
    );
  }

  private _navigate = (view: PanelView) => {
    this.view = view;
  };

  private _setSections = (sections: ISectionsOpen) => {
    this.sections = sections;
  };

  private _context: {
    store: ClusterStore;
    commands: CommandRegistry;
    usage: UsageStore | null;
  };
  private _jobs: JobStore | null;
  private _openJobLog: (job: IJob) => void;
  private _view: PanelView = { kind: 'list' };
  private _viewChanged = new Signal<this, PanelView>(this);
  private _defaultProfile = '';
  private _sections: ISectionsOpen = { usage: true, jobs: true };
  private _sectionsChanged = new Signal<this, ISectionsOpen>(this);
}

/** Options of a {@link ClusterSidebar}. */
export interface IClusterSidebarOptions {
  store: ClusterStore;
  commands: CommandRegistry;
  /** The user's jobs, shown below the clusters in the list view. */
  jobs?: JobStore;
  /** What the clusters use and cost: the Usage section and each cluster's cost. */
  usage?: UsageStore;
  /** Open a job's log in a main-area tab. */
  openJobLog?: (job: IJob) => void;
}

function ClusterPanel(props: {
  view: PanelView;
  defaultProfile: string;
  navigate: (view: PanelView) => void;
  jobs: JobStore | null;
  openJobLog: (job: IJob) => void;
  sections: ISectionsOpen;
  setSections: (sections: ISectionsOpen) => void;
}): React.ReactElement {
  const store = useStore();
  const { usage } = usePanelContext();
  const { sections, setSections } = props;
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
        {view.kind === 'list' && usage && (
          <UsageSection
            open={sections.usage}
            onToggle={open => setSections({ ...sections, usage: open })}
            onOpenCluster={name => navigate({ kind: 'detail', name })}
            clusterNames={new Set((clusters ?? []).map(c => c.name))}
          />
        )}
        {view.kind === 'list' && props.jobs && (
          <JobsSection
            store={props.jobs}
            onOpenLog={props.openJobLog}
            onOpenCluster={name => navigate({ kind: 'detail', name })}
            clusterNames={new Set((clusters ?? []).map(c => c.name))}
            open={sections.jobs}
            onToggle={open => setSections({ ...sections, jobs: open })}
          />
        )}
      </div>
    </div>
  );
}
