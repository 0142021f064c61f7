/**
 * A small chart of a cluster's utilisation over time (inline SVG): CPU, GPU (if the
 * cluster has any), memory and object store, each the sum over its alive nodes of what Ray
 * has in use over what it may schedule, 0–100 %.
 *
 * Built from the cluster states pushed to this panel (the `ClusterStore` keeps a sample each
 * time the figures change): no requests of its own.
 */
import React from 'react';

import { formatClock, formatPercent } from '../format';
import {
  type IUtilizationSample,
  UTILIZATION_KEYS,
  type UtilizationKey
} from '../utilization';
import { stepPath, useNow } from './WorkerChart';

const WIDTH = 260;
const HEIGHT = 100;
const PAD = { left: 36, right: 4, top: 8, bottom: 18 };

/** Shortest time span shown, in ms. */
const MIN_SPAN = 60_000;

/** The series' names, in the legend and the figures. */
export const UTILIZATION_LABELS: Record<UtilizationKey, string> = {
  cpu: 'CPU',
  gpu: 'GPU',
  memory: 'memory',
  objectStore: 'object store'
};

/** "CPU 50%, memory 25%, object store 0%": the current figures in words. */
export function utilizationText(
  sample: IUtilizationSample | undefined,
  keys: readonly UtilizationKey[]
): string {
  return keys
    .map(key => {
      const value = sample?.[key];
      return `${UTILIZATION_LABELS[key]} ${value === null || value === undefined ? 'not known' : formatPercent(value)}`;
    })
    .join(', ');
}

/**
 * An SVG path of one series as step lines, with a gap wherever its value is not known
 * (the cluster had no alive node with that resource).
 */
function seriesPath(
  samples: IUtilizationSample[],
  key: UtilizationKey,
  x: (time: number) => number,
  y: (value: number) => number
): string {
  const parts: string[] = [];
  let run: [number, number][] = [];
  const flush = (end?: number) => {
    if (run.length > 0) {
      if (end !== undefined) {
        // The last value holds until the gap starts.
        run.push([end, run[run.length - 1][1]]);
      }
      if (run.length === 1) {
        run.push([run[0][0] + 1, run[0][1]]); // a dot's worth of line
      }
      parts.push(stepPath(run));
    }
    run = [];
  };
  for (const sample of samples) {
    const value = sample[key];
    if (value === null) {
      flush(x(sample.time));
    } else {
      run.push([x(sample.time), y(value)]);
    }
  }
  flush();
  return parts.join('');
}

export function UtilizationChart(props: {
  samples: IUtilizationSample[];
  /** Whether the cluster has GPUs (else their series is left out). */
  gpu: boolean;
}): React.ReactElement {
  const now = useNow(5_000);
  const keys = UTILIZATION_KEYS.filter(key => key !== 'gpu' || props.gpu);
  const samples = props.samples;
  const current = samples[samples.length - 1];
  const known = samples.some(s => keys.some(key => s[key] !== null));
  if (!current || !known) {
    return (
      <p className="eksray-Panel-status">
        The chart fills in while the cluster&apos;s nodes run.
      </p>
    );
  }
  // The current values hold until now.
  const points = [
    ...samples,
    { ...current, time: Math.max(now, current.time) }
  ];
  const t1 = points[points.length - 1].time;
  const t0 = Math.min(points[0].time, t1 - MIN_SPAN);
  const x = (t: number) =>
    PAD.left + ((t - t0) / (t1 - t0)) * (WIDTH - PAD.left - PAD.right);
  const y = (v: number) =>
    PAD.top +
    (1 - Math.min(1, Math.max(0, v))) * (HEIGHT - PAD.top - PAD.bottom);
  const figures = utilizationText(current, keys);

  return (
    <figure
      className="eksray-Chart eksray-UtilizationChart"
      title={`Utilisation now: ${figures}`}
    >
      <svg
        viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
        className="eksray-Chart-svg"
        role="img"
        aria-label={`Utilisation over time, 0 to 100%; now ${figures}`}
      >
        {[0, 0.5, 1].map(v => (
          <g key={v}>
            <line
              className="eksray-Chart-grid"
              x1={PAD.left}
              x2={WIDTH - PAD.right}
              y1={y(v)}
              y2={y(v)}
            />
            <text
              className="eksray-Chart-label"
              x={PAD.left - 4}
              y={y(v) + 3}
              textAnchor="end"
            >
              {formatPercent(v)}
            </text>
          </g>
        ))}
        {keys.map(key => (
          <path
            key={key}
            className={`eksray-Chart-line eksray-Chart-line-${key}`}
            d={seriesPath(points, key, x, y)}
          />
        ))}
        {keys.map(key => {
          // The current value, visible even before the line has any length.
          const value = current[key];
          return value === null ? null : (
            <circle
              key={key}
              className={`eksray-Chart-dot eksray-Chart-dot-${key}`}
              cx={x(t1)}
              cy={y(value)}
              r={2}
            />
          );
        })}
        <text
          className="eksray-Chart-label"
          x={PAD.left}
          y={HEIGHT - 3}
          textAnchor="start"
        >
          {formatClock(t0)}
        </text>
        <text
          className="eksray-Chart-label"
          x={WIDTH - PAD.right}
          y={HEIGHT - 3}
          textAnchor="end"
        >
          now
        </text>
      </svg>
      <figcaption
        className="eksray-Chart-legend eksray-Chart-legend-wrap"
        aria-label="Utilisation now"
      >
        {keys.map(key => {
          const value = current[key];
          return (
            <span
              key={key}
              className={`eksray-Chart-key eksray-Chart-key-${key}`}
              data-series={key}
            >
              {UTILIZATION_LABELS[key]}{' '}
              <span className="eksray-Chart-value">
                {value === null ? '–' : formatPercent(value)}
              </span>
            </span>
          );
        })}
      </figcaption>
    </figure>
  );
}
