/**
 * The steps of a cluster's latest start, with how long after the first each came: where the
 * start-up time went (Ray's daemons locally; scheduling, node provisioning and image pulls
 * on Kubernetes).
 */
import React from 'react';

import { formatDateTime } from '../format';
import type { IMilestone } from '../models';

function offset(seconds: number): string {
  return seconds < 100
    ? `+${seconds.toFixed(1)} s`
    : `+${Math.round(seconds)} s`;
}

export function StartupTimeline(props: {
  steps: IMilestone[];
  /** Why the cluster is not ready yet, while it is starting. */
  waiting: string | null;
}): React.ReactElement {
  const { steps, waiting } = props;
  const first = steps.length ? Date.parse(steps[0].at) : 0;
  const total = steps.length
    ? Math.max(1, (Date.parse(steps[steps.length - 1].at) - first) / 1000)
    : 1;
  return (
    <ol className="eksray-Startup" aria-label="Start-up timeline">
      {steps.map((m, i) => {
        const since = (Date.parse(m.at) - first) / 1000;
        return (
          <li
            key={`${m.step}-${m.node ?? ''}-${i}`}
            className={`eksray-Startup-step eksray-Startup-${m.step}`}
            title={formatDateTime(m.at)}
          >
            <span className="eksray-Startup-offset">{offset(since)}</span>
            <span
              className="eksray-Startup-bar"
              aria-hidden="true"
              style={{ width: `${Math.round((since / total) * 100)}%` }}
            />
            <span className="eksray-Startup-message">
              {m.message}
              {m.seconds !== null ? ` (${m.seconds.toFixed(1)} s)` : ''}
            </span>
          </li>
        );
      })}
      {waiting && (
        <li className="eksray-Startup-step eksray-Startup-waiting">
          <span className="eksray-Startup-offset">now</span>
          <span className="eksray-Startup-message">{waiting}</span>
        </li>
      )}
    </ol>
  );
}
