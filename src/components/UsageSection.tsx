/**
 * The Usage section of the list view: per cluster what Ray has in use of what its nodes may
 * schedule, what it costs now and has cost since created (resource-hours where no prices
 * are set), the totals, the quota and the monthly budget, and the report as CSV.
 */
import { downloadIcon } from '@jupyterlab/ui-components';
import React from 'react';

import { usageCsvUrl } from '../api';
import { useUsage } from '../context';
import {
  formatAmount,
  formatClock,
  formatDateTime,
  formatDollars,
  formatPercent,
  formatResourceHours
} from '../format';
import type {
  IBudget,
  IClusterUsage,
  IQuota,
  IUsageReport,
  QuotaLimit
} from '../models';
import { isPriced } from '../usageStore';
import { PhaseBadge } from './ClusterList';
import { CollapsibleSection } from './CollapsibleSection';

/** A fraction's severity: warn from 80 %, error from 100 % (as the budget's states). */
function level(fraction: number): 'ok' | 'warning' | 'exceeded' {
  return fraction >= 1 ? 'exceeded' : fraction >= 0.8 ? 'warning' : 'ok';
}

/**
 * One amount against another as a bar and figures (`CPU ▮▮▯ 1 / 2`), announced as a meter.
 * `severity`: colour the bar by how full it is (quotas), else in the brand colour.
 */
export function UsageMeter(props: {
  label: string;
  used: number;
  total: number;
  /** Unit after the figures, e.g. `GiB`. */
  unit?: string;
  /** Writes the figures (default: compact numbers). */
  format?: (value: number) => string;
  severity?: boolean;
  /** More about the figures, for the tooltip. */
  hint?: string;
}): React.ReactElement {
  const format = props.format ?? formatAmount;
  const { used, total } = props;
  const fraction = total > 0 ? used / total : used > 0 ? 1 : 0;
  const unit = props.unit ? ` ${props.unit}` : '';
  const text = `${format(used)} / ${format(total)}${unit}`;
  const words = `${format(used)} of ${format(total)}${unit}${total > 0 ? ` (${formatPercent(fraction)})` : ''}`;
  const state = props.severity ? level(fraction) : 'ok';
  return (
    <div
      className={`eksray-Meter eksray-Meter-${state}`}
      role="meter"
      aria-label={props.label}
      aria-valuemin={0}
      aria-valuemax={Math.max(total, used)}
      aria-valuenow={used}
      aria-valuetext={words}
      title={`${props.label}: ${words}${props.hint ? `. ${props.hint}` : ''}`}
      data-state={state}
    >
      <span className="eksray-Meter-label">{props.label}</span>
      <span className="eksray-Meter-bar" aria-hidden="true">
        <span
          className="eksray-Meter-fill"
          style={{ width: `${Math.min(1, fraction) * 100}%` }}
        />
      </span>
      <span className="eksray-Meter-value">{text}</span>
    </div>
  );
}

/** The Usage section; its body (and the polling) only while it is open. */
export function UsageSection(props: {
  open: boolean;
  onToggle: (open: boolean) => void;
  /** Show a cluster's details. */
  onOpenCluster?: (name: string) => void;
  /** The clusters that exist now (the report may be a moment behind). */
  clusterNames?: ReadonlySet<string>;
}): React.ReactElement {
  return (
    <CollapsibleSection
      id="usage"
      title="Usage"
      className="eksray-UsageSection"
      open={props.open}
      onToggle={props.onToggle}
    >
      <UsageBody
        onOpenCluster={props.onOpenCluster}
        clusterNames={props.clusterNames}
      />
    </CollapsibleSection>
  );
}

function UsageBody(props: {
  onOpenCluster?: (name: string) => void;
  clusterNames?: ReadonlySet<string>;
}): React.ReactElement | null {
  const usage = useUsage();
  if (!usage) {
    return null;
  }
  const report = usage.report;
  return (
    <>
      {usage.error && (
        <div className="eksray-Error" role="alert">
          {usage.error}
        </div>
      )}
      {report === null ? (
        usage.error ? null : (
          <p className="eksray-Panel-status">Reading the usage…</p>
        )
      ) : (
        <UsageReport
          report={report}
          onOpenCluster={props.onOpenCluster}
          clusterNames={props.clusterNames}
        />
      )}
    </>
  );
}

function UsageReport(props: {
  report: IUsageReport;
  onOpenCluster?: (name: string) => void;
  clusterNames?: ReadonlySet<string>;
}): React.ReactElement {
  const { report } = props;
  const priced = isPriced(report);
  return (
    <div
      className="eksray-Usage-report"
      aria-label="Usage report"
      data-priced={priced}
    >
      {report.clusters.length === 0 ? (
        <p className="eksray-Usage-none">
          No cluster runs: nothing is being counted now.
        </p>
      ) : (
        <ul className="eksray-UsageList" aria-label="Usage by cluster">
          {report.clusters.map(row => (
            <ClusterUsageItem
              key={row.name}
              row={row}
              priced={priced}
              onOpen={
                props.onOpenCluster && props.clusterNames?.has(row.name)
                  ? () => props.onOpenCluster?.(row.name)
                  : undefined
              }
            />
          ))}
        </ul>
      )}
      <Totals report={report} priced={priced} />
      {!priced && (
        <p className="eksray-Usage-note">
          No prices are set, so usage is counted in resource-hours (CPU-h,
          GiB-h) rather than dollars.
        </p>
      )}
      <QuotaFigures quota={report.quota} />
      <BudgetBar budget={report.budget} />
      <div className="eksray-Usage-footer">
        <a
          className="eksray-Usage-export"
          href={usageCsvUrl()}
          download="eksray-usage.csv"
          title="Download every cluster's resources, use, cost and resource-hours as a CSV file"
        >
          <downloadIcon.react tag="span" className="eksray-Button-icon" />
          Export CSV
        </a>
        <span
          className="eksray-Usage-at"
          title={`The meters were read at ${formatDateTime(report.at)}`}
        >
          as of {formatClock(report.at)}
        </span>
      </div>
    </div>
  );
}

/** "$0.12/h now · $1.03 since created", or resource-hours without prices. */
export function costText(row: IClusterUsage, priced: boolean): string {
  const since = priced
    ? `${formatDollars(row.accruedDollars)} since created`
    : `${formatResourceHours(row.resourceHours)} since created`;
  if (row.suspended) {
    return `Suspended: costs nothing now · ${since}`;
  }
  return priced
    ? `${formatDollars(row.dollarsPerHour)}/h now · ${since}`
    : since;
}

function ClusterUsageItem(props: {
  row: IClusterUsage;
  priced: boolean;
  onOpen?: () => void;
}): React.ReactElement {
  const { row, priced } = props;
  const { resources, used } = row;
  return (
    <li
      className="eksray-UsageList-item"
      aria-label={`Usage of ${row.name}`}
      data-cluster={row.name}
    >
      <div className="eksray-UsageList-row">
        {props.onOpen ? (
          <button
            type="button"
            className="eksray-UsageList-name eksray-LinkText"
            onClick={props.onOpen}
            title={`Show cluster ${row.name}`}
          >
            {row.name}
          </button>
        ) : (
          <span className="eksray-UsageList-name" title={row.name}>
            {row.name}
          </span>
        )}
        <PhaseBadge phase={row.phase} />
      </div>
      {row.suspended ? null : (
        <div className="eksray-Meters">
          <UsageMeter
            label="CPU"
            used={used.cpu}
            total={resources.cpu}
            hint="in use by Ray, of what its running nodes may schedule"
          />
          {resources.gpu > 0 || used.gpu > 0 ? (
            <UsageMeter label="GPU" used={used.gpu} total={resources.gpu} />
          ) : null}
          <UsageMeter
            label="Memory"
            used={used.memoryGiB}
            total={resources.memoryGiB}
            unit="GiB"
          />
        </div>
      )}
      <div
        className="eksray-UsageList-cost"
        title={
          row.priceBasis.length
            ? `Prices: ${row.priceBasis.join('; ')}`
            : undefined
        }
      >
        {costText(row, priced)}
      </div>
      {row.priceUnknown.length > 0 && (
        <div className="eksray-Usage-note">
          Price unknown for some nodes: {row.priceUnknown.join('; ')}
        </div>
      )}
    </li>
  );
}

function Totals(props: {
  report: IUsageReport;
  priced: boolean;
}): React.ReactElement | null {
  const { totals, clusters } = props.report;
  const { priced } = props;
  const closed = priced
    ? totals.closedDollars > 0
      ? formatDollars(totals.closedDollars)
      : null
    : // (Only when it would not read as zero: "0.00 CPU-h · 0.0 GiB-h".)
      totals.closedResourceHours.cpu >= 0.005 ||
        totals.closedResourceHours.gpu >= 0.005 ||
        totals.closedResourceHours.memoryGiB >= 0.05
      ? formatResourceHours(totals.closedResourceHours)
      : null;
  const running = [
    `${formatAmount(totals.used.cpu)} / ${formatAmount(totals.resources.cpu)} CPU`
  ];
  if (totals.resources.gpu > 0) {
    running.push(
      `${formatAmount(totals.used.gpu)} / ${formatAmount(totals.resources.gpu)} GPU`
    );
  }
  running.push(
    `${formatAmount(totals.used.memoryGiB)} / ${formatAmount(totals.resources.memoryGiB)} GiB`
  );
  // Without clusters, "0 / 0" says nothing: only what deleted ones cost, if anything.
  const some = clusters.length > 0;
  if (!some && !closed) {
    return null;
  }
  return (
    <div className="eksray-Usage-block">
      <div className="eksray-Usage-subtitle">Total</div>
      <dl className="eksray-Facts eksray-Usage-totals" aria-label="Total usage">
        {some && (
          <>
            <dt>In use</dt>
            <dd title="What Ray has in use, of what the running nodes of all your clusters may schedule">
              {running.join(' · ')}
            </dd>
          </>
        )}
        {!some ? null : priced ? (
          <>
            <dt>Cost now</dt>
            <dd>{formatDollars(totals.dollarsPerHour)}/h</dd>
            <dt>Accrued</dt>
            <dd
              title={`By these ${clusters.length} cluster(s) since they were created`}
            >
              {formatDollars(totals.accruedDollars)}
            </dd>
          </>
        ) : (
          <>
            <dt>Since created</dt>
            <dd title="Resource-hours of these clusters since they were created">
              {formatResourceHours(totals.resourceHours)}
            </dd>
          </>
        )}
        {closed && (
          <>
            <dt>Deleted</dt>
            <dd title="This month, by clusters deleted since">
              {closed} this month
            </dd>
          </>
        )}
      </dl>
    </div>
  );
}

/** The limits an administrator may set, but the budget (a bar of its own). */
const QUOTA_FIGURES: {
  limit: QuotaLimit;
  key: string;
  label: string;
  unit?: string;
  dollars?: boolean;
}[] = [
  { limit: 'maxClusters', key: 'clusters', label: 'Clusters' },
  { limit: 'maxCpus', key: 'cpu', label: 'CPUs' },
  { limit: 'maxGpus', key: 'gpu', label: 'GPUs' },
  { limit: 'maxMemoryGiB', key: 'memoryGiB', label: 'Memory', unit: 'GiB' },
  {
    limit: 'maxDollarsPerHour',
    key: 'dollarsPerHour',
    label: 'Cost',
    unit: 'per hour',
    dollars: true
  }
];

function QuotaFigures(props: { quota: IQuota }): React.ReactElement | null {
  const { quota } = props;
  const figures = QUOTA_FIGURES.filter(
    f => typeof quota.limits[f.limit] === 'number'
  );
  if (figures.length === 0) {
    return null;
  }
  return (
    <div className="eksray-Usage-block" role="group" aria-label="Quota">
      <div className="eksray-Usage-subtitle">
        Quota{' '}
        <span className="eksray-Muted">(each cluster at its maximum size)</span>
      </div>
      <div className="eksray-Meters">
        {figures.map(f => (
          <UsageMeter
            key={f.limit}
            label={f.label}
            used={quota.usage[f.key] ?? 0}
            total={quota.limits[f.limit] as number}
            unit={f.unit}
            format={f.dollars ? formatDollars : undefined}
            severity
            hint={`Limit: ${quota.sources[f.limit] ?? 'set'}`}
          />
        ))}
      </div>
    </div>
  );
}

/** `2026-12` as `December 2026`. */
function monthName(month: string): string {
  const date = new Date(`${month}-01T00:00:00Z`);
  return Number.isNaN(date.getTime())
    ? month
    : date.toLocaleDateString(undefined, {
        month: 'long',
        year: 'numeric',
        timeZone: 'UTC'
      });
}

const BUDGET_STATES: Record<IBudget['state'], string> = {
  ok: '',
  warning: 'Over 80 % of the budget: at 100 % new clusters are refused.',
  exceeded:
    'The budget is used up: new clusters and resumes are refused until next month or a larger budget.'
};

function BudgetBar(props: { budget: IBudget }): React.ReactElement | null {
  const { budget } = props;
  if (budget.monthlyBudget === null || budget.monthlyBudget === undefined) {
    return null;
  }
  const fraction =
    budget.fraction ??
    (budget.monthlyBudget > 0 ? budget.spentDollars / budget.monthlyBudget : 1);
  const words = `${formatDollars(budget.spentDollars)} of ${formatDollars(budget.monthlyBudget)} spent (${formatPercent(fraction)})`;
  return (
    <div
      className={`eksray-Usage-block eksray-Budget eksray-Budget-${budget.state}`}
      data-state={budget.state}
    >
      <div className="eksray-Usage-subtitle">
        Budget for {monthName(budget.month)}
      </div>
      <div
        className="eksray-Budget-bar"
        role="meter"
        aria-label={`Monthly budget for ${monthName(budget.month)}`}
        aria-valuemin={0}
        aria-valuemax={budget.monthlyBudget}
        aria-valuenow={Math.min(budget.spentDollars, budget.monthlyBudget)}
        aria-valuetext={words}
        title={words}
      >
        <span
          className="eksray-Budget-fill"
          style={{ width: `${Math.min(1, fraction) * 100}%` }}
        />
      </div>
      <div className="eksray-Budget-figures">{words}</div>
      {budget.state !== 'ok' && (
        <div className="eksray-Budget-state" role="status">
          {BUDGET_STATES[budget.state]}
        </div>
      )}
    </div>
  );
}
