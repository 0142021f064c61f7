/**
 * One cluster: its state and cost, worker groups (with scaling), nodes, charts
 * of its workers and its utilisation, and its events.
 */
import {
  caretLeftIcon,
  deleteIcon,
  launchIcon
} from '@jupyterlab/ui-components';
import React, { useEffect } from 'react';

import { CommandIDs } from '../commandIds';
import { usePanelContext, useStore, useUsage } from '../context';
import {
  formatAge,
  formatDateTime,
  formatDollars,
  formatResourceHours
} from '../format';
import { type ICluster, TRANSITIONAL_PHASES } from '../models';
import { nodeTotal } from '../utilization';
import { PhaseBadge } from './ClusterList';
import { EventsTimeline } from './EventsTimeline';
import { NodeTable } from './NodeTable';
import { StartupTimeline } from './StartupTimeline';
import { costText } from './UsageSection';
import { UtilizationChart } from './UtilizationChart';
import { WorkerChart } from './WorkerChart';
import { WorkerGroups } from './WorkerGroups';

function Section(props: {
  title: string;
  children: React.ReactNode;
}): React.ReactElement {
  const id = `eksray-section-${props.title.toLowerCase().replace(/\W+/g, '-')}`;
  return (
    <section className="eksray-Section" aria-labelledby={id}>
      <h3 className="eksray-Section-title" id={id}>
        {props.title}
      </h3>
      {props.children}
    </section>
  );
}

/** The cluster's idle timeout and lifetime, in words ("suspend after 30 min idle; …"). */
export function lifecycleText(cluster: ICluster): string {
  const life = cluster.spec.lifecycle ?? {};
  const parts: string[] = [];
  if (life.idleTimeoutMinutes) {
    parts.push(
      `${life.idleAction === 'delete' ? 'delete' : 'suspend'} after ${life.idleTimeoutMinutes} min idle`
    );
  }
  if (life.suspendedTtlHours) {
    parts.push(`delete after ${life.suspendedTtlHours} h suspended`);
  }
  if (life.maxLifetimeHours) {
    parts.push(`delete ${life.maxLifetimeHours} h after creation`);
  }
  return parts.join('; ');
}

/**
 * The cluster's cost now and since created (resource-hours where no prices are
 * set), from the usage report, which is read again every 10 s while shown.
 */
function CostFacts(props: { name: string }): React.ReactElement | null {
  const usage = useUsage();
  if (!usage) {
    return null;
  }
  const row = usage.cluster(props.name);
  const priced = usage.priced;
  const term = priced ? 'Cost' : 'Usage';
  if (!row) {
    return (
      <>
        <dt>{term}</dt>
        <dd className="eksray-Muted">
          {usage.error && usage.report === null ? 'not known' : 'reading…'}
        </dd>
      </>
    );
  }
  const title = priced
    ? [
        `${formatDollars(row.monthDollars)} this month`,
        row.priceBasis.length ? `prices: ${row.priceBasis.join('; ')}` : '',
        row.priceUnknown.length
          ? `price unknown for: ${row.priceUnknown.join('; ')}`
          : '',
        formatResourceHours(row.resourceHours)
      ]
        .filter(Boolean)
        .join('\n')
    : 'No prices are set, so usage is counted in resource-hours rather than dollars';
  return (
    <>
      <dt>{term}</dt>
      <dd className="eksray-Facts-cost" title={title}>
        {costText(row, priced)}
      </dd>
    </>
  );
}

export function ClusterDetail(props: {
  name: string;
  onBack: () => void;
}): React.ReactElement {
  const store = useStore();
  const { commands } = usePanelContext();
  const { name } = props;
  const cluster = store.get(name);

  useEffect(() => {
    store.watchEvents(name);
    return () => store.unwatchEvents(name);
  }, [store, name]);

  const back = (
    <button
      type="button"
      className="eksray-BackButton"
      onClick={props.onBack}
      title="Back to the list of clusters"
    >
      <caretLeftIcon.react tag="span" className="eksray-Button-icon" />
      All clusters
    </button>
  );

  if (!cluster) {
    return (
      <div className="eksray-Detail">
        {back}
        <p className="eksray-Panel-status">
          {store.clusters === null
            ? 'Loading…'
            : `There is no cluster named “${name}” (any more).`}
        </p>
      </div>
    );
  }

  const deleting = store.isDeleting(name) || cluster.phase === 'stopping';
  const dashboardTitle = cluster.dashboardUrl
    ? undefined
    : 'The dashboard is available once the head node is up';
  // While it starts, why it is not ready yet is the timeline's last line (not said twice).
  const waitingInTimeline =
    (cluster.timeline ?? []).length > 0 &&
    (cluster.phase === 'starting' || cluster.phase === 'pending');
  const maxWorkers = cluster.workerGroups.reduce(
    (sum, g) => sum + g.maxReplicas,
    0
  );

  return (
    <div className="eksray-Detail" aria-label={`Cluster ${name}`}>
      {back}
      <div className="eksray-Detail-header">
        <h2 className="eksray-Detail-name" title={name}>
          {name}
        </h2>
        <PhaseBadge phase={cluster.phase} />
      </div>
      {cluster.reason && !waitingInTimeline && (
        <div
          className={
            cluster.phase === 'failed' ? 'eksray-Error' : 'eksray-Detail-reason'
          }
          role={cluster.phase === 'failed' ? 'alert' : undefined}
        >
          {cluster.reason}
        </div>
      )}
      <dl className="eksray-Facts">
        <dt>Backend</dt>
        <dd>
          {cluster.backend}
          {cluster.namespace ? ` (namespace ${cluster.namespace})` : ''}
        </dd>
        <dt>Address</dt>
        <dd className="eksray-Facts-code">{cluster.address ?? '–'}</dd>
        <dt>Created</dt>
        <dd title={formatDateTime(cluster.createdAt)}>
          {formatAge(cluster.createdAt)}
        </dd>
        {cluster.suspendedAt ? (
          <>
            <dt>Suspended</dt>
            <dd title={formatDateTime(cluster.suspendedAt)}>
              {formatAge(cluster.suspendedAt)}
            </dd>
          </>
        ) : null}
        {lifecycleText(cluster) ? (
          <>
            <dt>When idle</dt>
            <dd>{lifecycleText(cluster)}</dd>
          </>
        ) : null}
        <CostFacts name={name} />
      </dl>
      <div className="eksray-Actions">
        <button
          type="button"
          className="jp-mod-styled jp-mod-accept eksray-Button"
          disabled={!cluster.dashboardUrl || deleting}
          title={dashboardTitle}
          onClick={() =>
            void commands.execute(CommandIDs.openDashboard, { name })
          }
        >
          Open dashboard
        </button>
        <button
          type="button"
          className="jp-mod-styled eksray-Button"
          disabled={!cluster.dashboardUrl || deleting}
          title={
            dashboardTitle ?? 'Open the Ray dashboard in a new browser tab'
          }
          aria-label="Open dashboard in a new browser tab"
          onClick={() =>
            void commands.execute(CommandIDs.openDashboardInBrowser, { name })
          }
        >
          <launchIcon.react tag="span" className="eksray-Button-icon" />
          Browser tab
        </button>
        {cluster.phase === 'suspended' ? (
          <button
            type="button"
            className="jp-mod-styled jp-mod-accept eksray-Button"
            disabled={deleting || cluster.readOnly}
            title="Start its Ray nodes again, with the same settings"
            onClick={() =>
              void commands.execute(CommandIDs.resumeCluster, { name })
            }
          >
            Resume
          </button>
        ) : (
          <button
            type="button"
            className="jp-mod-styled eksray-Button"
            disabled={
              deleting ||
              cluster.readOnly ||
              cluster.phase === 'suspending' ||
              cluster.phase === 'pending'
            }
            title="Stop its Ray nodes and keep the cluster; it costs nothing until resumed"
            onClick={() =>
              void commands.execute(CommandIDs.suspendCluster, { name })
            }
          >
            {cluster.phase === 'suspending' ? 'Suspending…' : 'Suspend'}
          </button>
        )}
        <button
          type="button"
          className="jp-mod-styled jp-mod-warn eksray-Button"
          disabled={deleting || cluster.readOnly}
          onClick={() =>
            void commands.execute(CommandIDs.deleteCluster, { name })
          }
        >
          <deleteIcon.react tag="span" className="eksray-Button-icon" />
          {deleting ? 'Stopping…' : 'Delete'}
        </button>
      </div>
      {TRANSITIONAL_PHASES.includes(cluster.phase) && (
        <p className="eksray-Detail-live">
          {cluster.phase === 'stopping'
            ? 'Stopping the cluster; this takes a few seconds.'
            : cluster.phase === 'suspending'
              ? 'Stopping its Ray nodes; the cluster is kept.'
              : 'This panel updates as the cluster moves on.'}
        </p>
      )}
      {(cluster.timeline ?? []).length > 0 && (
        <Section title="Start-up">
          <StartupTimeline
            steps={cluster.timeline}
            waiting={waitingInTimeline ? cluster.reason : null}
          />
        </Section>
      )}
      <Section title="Worker groups">
        <WorkerGroups cluster={cluster} />
      </Section>
      <Section title="Workers over time">
        <WorkerChart
          samples={store.history(name)}
          events={store.events(name)}
          maxWorkers={maxWorkers}
          createdAt={cluster.createdAt}
        />
      </Section>
      <Section title="Utilisation over time">
        <UtilizationChart
          samples={store.utilizationHistory(name)}
          gpu={
            cluster.nodes.some(n => nodeTotal(n, 'GPU') > 0) ||
            store.utilizationHistory(name).some(s => s.gpu !== null)
          }
        />
      </Section>
      <Section title="Nodes">
        {cluster.phase === 'suspended' ? (
          <p className="eksray-Panel-status">
            No node runs while the cluster is suspended.
          </p>
        ) : (
          <NodeTable nodes={cluster.nodes} />
        )}
      </Section>
      <Section title="Events">
        <EventsTimeline
          events={store.events(name)}
          error={store.eventsError(name)}
        />
      </Section>
    </div>
  );
}
