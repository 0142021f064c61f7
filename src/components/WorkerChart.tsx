/**
 * A small chart of a cluster's worker count over time (inline SVG).
 *
 * Built from what this panel has seen: the states pushed to it, and before
 * those, the nodes' "joined"/"left" events (which go back to the cluster's start).
 */
import React, { useEffect, useState } from 'react';

import type { IWorkerSample } from '../clusterStore';
import { formatClock } from '../format';
import type { IClusterEvent } from '../models';

const WIDTH = 260;
const HEIGHT = 100;
const PAD = { left: 20, right: 4, top: 8, bottom: 18 };

/** Shortest time span shown, in ms. */
const MIN_SPAN = 60_000;

export interface IChartPoint {
  time: number;
  workers: number;
  desired: number | null;
}

/**
 * The series to draw: event-derived points until the first sample the panel
 * saw, then the samples, then a last point at `now`.
 */
export function workerSeries(
  samples: IWorkerSample[],
  events: IClusterEvent[] | null,
  now: number,
  createdAt?: number
): IChartPoint[] {
  const points: IChartPoint[] = [];
  const firstSeen = samples.length ? samples[0].time : now;
  let count = 0;
  for (const event of events ?? []) {
    const time = event.timestamp * 1000;
    if (time >= firstSeen) {
      break;
    }
    if (event.reason === 'NodeJoined') {
      count++;
    } else if (event.reason === 'NodeLeft') {
      count = Math.max(0, count - 1);
    } else {
      continue;
    }
    points.push({ time, workers: count, desired: null });
  }
  if (
    points.length > 0 &&
    createdAt !== undefined &&
    createdAt < points[0].time
  ) {
    // The node events tell the story from the start: no workers before the first joined.
    points.unshift({ time: createdAt, workers: 0, desired: null });
  }
  for (const sample of samples) {
    points.push({ ...sample });
  }
  const last = points[points.length - 1];
  if (last) {
    // The current count holds until now.
    points.push({ ...last, time: Math.max(now, last.time) });
  }
  return points;
}

/** An SVG path of a step line through (x, y) pairs. */
export function stepPath(coords: [number, number][]): string {
  return coords
    .map(([x, y], i) => {
      if (i === 0) {
        return `M${x.toFixed(1)},${y.toFixed(1)}`;
      }
      return `H${x.toFixed(1)}V${y.toFixed(1)}`;
    })
    .join('');
}

/** The current time, refreshed every `interval` ms while mounted. */
export function useNow(interval: number): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = window.setInterval(() => setNow(Date.now()), interval);
    return () => window.clearInterval(timer);
  }, [interval]);
  return now;
}

export function WorkerChart(props: {
  samples: IWorkerSample[];
  events: IClusterEvent[] | null;
  maxWorkers: number;
  /** When the cluster was created (ISO 8601). */
  createdAt: string;
}): React.ReactElement {
  const now = useNow(5_000);
  const created = new Date(props.createdAt).getTime();
  const points = workerSeries(
    props.samples,
    props.events,
    now,
    Number.isNaN(created) ? undefined : created
  );
  if (points.length < 2) {
    return (
      <p className="eksray-Panel-status">
        The chart fills in as workers come and go.
      </p>
    );
  }
  // At least the last minute, so that a panel just opened draws a short
  // line at the right rather than stretching a second over the whole width.
  const t1 = Math.max(now, points[points.length - 1].time);
  const t0 = Math.min(points[0].time, t1 - MIN_SPAN);
  const top = Math.max(
    1,
    props.maxWorkers,
    ...points.map(p => Math.max(p.workers, p.desired ?? 0))
  );
  const x = (t: number) =>
    PAD.left + ((t - t0) / (t1 - t0)) * (WIDTH - PAD.left - PAD.right);
  const y = (v: number) =>
    PAD.top + (1 - v / top) * (HEIGHT - PAD.top - PAD.bottom);

  const workers = stepPath(points.map(p => [x(p.time), y(p.workers)]));
  const withDesired = points.filter(p => p.desired !== null);
  const desired =
    withDesired.length > 1
      ? stepPath(withDesired.map(p => [x(p.time), y(p.desired ?? 0)]))
      : null;
  const current = points[points.length - 1];
  const ticks =
    top <= 4 ? [...Array(top + 1).keys()] : [0, Math.round(top / 2), top];

  return (
    <figure className="eksray-Chart">
      <svg
        viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
        className="eksray-Chart-svg"
        role="img"
        aria-label={`Worker count over time; now ${current.workers}`}
      >
        {ticks.map(v => (
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
              {v}
            </text>
          </g>
        ))}
        {desired && <path className="eksray-Chart-desired" d={desired} />}
        <path className="eksray-Chart-workers" d={workers} />
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
      <figcaption className="eksray-Chart-legend">
        <span className="eksray-Chart-key eksray-Chart-key-workers">
          workers alive
        </span>
        <span className="eksray-Chart-key eksray-Chart-key-desired">
          desired
        </span>
      </figcaption>
    </figure>
  );
}
