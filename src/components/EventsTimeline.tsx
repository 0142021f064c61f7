import React, { useMemo, useState } from 'react';

import { formatClock, formatDateTime } from '../format';
import type { IClusterEvent } from '../models';

/** Events listed before "Show older events". */
const PAGE = 50;

const ALL = '';

/** A cluster's events, newest first, filterable by source. */
export function EventsTimeline(props: {
  events: IClusterEvent[] | null;
  error: string | null;
}): React.ReactElement {
  const [source, setSource] = useState(ALL);
  const [shown, setShown] = useState(PAGE);
  const { events, error } = props;

  const sources = useMemo(
    () => [...new Set((events ?? []).map(e => e.source))].sort(),
    [events]
  );
  const newestFirst = useMemo(() => {
    const list = (events ?? []).filter(e => !source || e.source === source);
    return list.reverse();
  }, [events, source]);

  if (error && events === null) {
    return (
      <div className="eksray-Error" role="alert">
        Could not load the events: {error}
      </div>
    );
  }
  if (events === null) {
    return <p className="eksray-Panel-status">Loading events…</p>;
  }
  return (
    <div className="eksray-Events">
      {sources.length > 1 && (
        <div className="eksray-Events-filter">
          <label htmlFor="eksray-events-source">Source</label>
          <select
            id="eksray-events-source"
            className="eksray-Select"
            value={source}
            onChange={event => setSource(event.target.value)}
          >
            <option value={ALL}>All sources</option>
            {sources.map(s => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </div>
      )}
      {error && (
        <div className="eksray-Error" role="alert">
          Events may be out of date: {error}
        </div>
      )}
      {newestFirst.length === 0 ? (
        <p className="eksray-Panel-status">No events yet.</p>
      ) : (
        <ol className="eksray-Timeline" aria-label="Events, newest first">
          {newestFirst.slice(0, shown).map(event => (
            <li
              key={event.id}
              className={`eksray-Timeline-item eksray-Severity-${event.severity}`}
            >
              <div className="eksray-Timeline-meta">
                <time
                  dateTime={event.time}
                  title={formatDateTime(event.time)}
                  className="eksray-Timeline-time"
                >
                  {formatClock(event.time)}
                </time>
                <span
                  className={`eksray-Tag eksray-Severity-tag eksray-Severity-${event.severity}`}
                >
                  {event.severity}
                </span>
                <span className="eksray-Tag eksray-Source">{event.source}</span>
                {event.reason && (
                  <span className="eksray-Timeline-reason">{event.reason}</span>
                )}
              </div>
              <div className="eksray-Timeline-message">{event.message}</div>
            </li>
          ))}
        </ol>
      )}
      {newestFirst.length > shown && (
        <button
          type="button"
          className="jp-mod-styled eksray-Button eksray-LinkButton"
          onClick={() => setShown(n => n + PAGE)}
        >
          Show older events ({newestFirst.length - shown} more)
        </button>
      )}
    </div>
  );
}
