/**
 * Worker groups of a cluster: sizes, a progress bar while workers come up, and
 * controls to change replicas and bounds.
 */
import React, { useState } from 'react';

import {
  EKSRayAPIError,
  errorText,
  scaleCluster,
  splitErrorPath
} from '../api';
import { useStore } from '../context';
import { formatCount, formatMemory } from '../format';
import type { ICluster, IGroupScale, IWorkerGroup } from '../models';

type ScaleField = 'replicas' | 'minReplicas' | 'maxReplicas';

const SCALE_FIELDS: { key: ScaleField; label: string; hint: string }[] = [
  {
    key: 'replicas',
    label: 'Replicas',
    hint: 'Workers to run now; the autoscaler keeps the count between min and max.'
  },
  {
    key: 'minReplicas',
    label: 'Min',
    hint: 'The autoscaler never goes below this.'
  },
  {
    key: 'maxReplicas',
    label: 'Max',
    hint: 'The autoscaler never goes above this.'
  }
];

/** A bar from 0 to `max`; `value` filled. */
export function ProgressBar(props: {
  value: number;
  max: number;
  label: string;
}): React.ReactElement {
  const fraction = props.max > 0 ? Math.min(1, props.value / props.max) : 1;
  return (
    <div
      className="eksray-ProgressBar"
      role="progressbar"
      aria-label={props.label}
      aria-valuemin={0}
      aria-valuemax={props.max}
      aria-valuenow={props.value}
    >
      <div
        className="eksray-ProgressBar-fill"
        style={{ width: `${fraction * 100}%` }}
      />
    </div>
  );
}

function groupShape(group: IWorkerGroup): string {
  const r = group.resources ?? {};
  const parts = [`${formatCount(r.CPU ?? 0)} CPU`];
  if (r.GPU) {
    parts.push(`${formatCount(r.GPU)} GPU`);
  }
  if (r.memory) {
    parts.push(formatMemory(r.memory));
  }
  for (const [key, value] of Object.entries(r)) {
    if (!['CPU', 'GPU', 'memory'].includes(key) && value) {
      parts.push(`${key}: ${formatCount(value)}`);
    }
  }
  return parts.join(' · ');
}

function WorkerGroupCard(props: {
  cluster: ICluster;
  group: IWorkerGroup;
}): React.ReactElement {
  const { cluster, group } = props;
  const store = useStore();
  // Values the user typed; a field not edited follows the server.
  const [edits, setEdits] = useState<Partial<Record<ScaleField, string>>>({});
  const [errors, setErrors] = useState<Partial<Record<ScaleField, string>>>({});
  const [message, setMessage] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const coming = group.ready < group.desired;
  const disabled =
    busy ||
    cluster.readOnly ||
    ['stopping', 'suspending', 'suspended'].includes(cluster.phase);

  const valueOf = (key: ScaleField): string => edits[key] ?? String(group[key]);
  const changes: IGroupScale = { groupName: group.groupName };
  let invalid = false;
  for (const { key } of SCALE_FIELDS) {
    if (edits[key] === undefined) {
      continue;
    }
    const value = Number(edits[key]);
    if (edits[key]!.trim() === '' || !Number.isInteger(value) || value < 0) {
      invalid = true;
    } else if (value !== group[key]) {
      changes[key] = value;
    }
  }
  const changed = Object.keys(changes).length > 1;

  const apply = async (event: React.FormEvent) => {
    event.preventDefault();
    if (!changed || invalid) {
      return;
    }
    setBusy(true);
    setErrors({});
    setMessage(null);
    try {
      const updated = await scaleCluster(cluster.name, [changes]);
      store.upsert(updated);
      setEdits({});
    } catch (error) {
      const fieldErrors: Partial<Record<ScaleField, string>> = {};
      const other: string[] = [];
      if (error instanceof EKSRayAPIError && error.errors.length > 0) {
        for (const e of error.errors) {
          // We send one group, so `workerGroups[0].<field>` is about this card.
          const key = splitErrorPath(e.path)[2] as ScaleField | undefined;
          if (key && SCALE_FIELDS.some(f => f.key === key)) {
            fieldErrors[key] = e.message;
          } else {
            other.push(e.message);
          }
        }
        setErrors(fieldErrors);
        setMessage(
          other.length
            ? `Not scaled: ${other.join('; ')}`
            : 'Not scaled: fix the values marked below.'
        );
      } else {
        setMessage(`Not scaled. ${errorText(error)}`);
      }
    } finally {
      setBusy(false);
    }
  };

  const idBase = `eksray-scale-${cluster.name}-${group.groupName}`;
  return (
    <li
      className="eksray-GroupCard"
      aria-label={`Worker group ${group.groupName}`}
    >
      <div className="eksray-GroupCard-header">
        <span className="eksray-GroupCard-name">{group.groupName}</span>
        <span className="eksray-GroupCard-shape">{groupShape(group)}</span>
      </div>
      <dl className="eksray-Counts">
        <div>
          <dt>Desired</dt>
          <dd>{group.desired}</dd>
        </div>
        <div>
          <dt>Ready</dt>
          <dd>{group.ready}</dd>
        </div>
        <div>
          <dt>Min</dt>
          <dd>{group.minReplicas}</dd>
        </div>
        <div>
          <dt>Max</dt>
          <dd>{group.maxReplicas}</dd>
        </div>
      </dl>
      {coming && (
        <div className="eksray-GroupCard-progress">
          <ProgressBar
            value={group.ready}
            max={group.desired}
            label={`Workers of ${group.groupName} ready`}
          />
          <span className="eksray-GroupCard-progressText">
            {group.ready} of {group.desired} workers ready
          </span>
        </div>
      )}
      <form
        className="eksray-ScaleForm"
        onSubmit={apply}
        aria-label={`Scale ${group.groupName}`}
      >
        {SCALE_FIELDS.map(({ key, label, hint }) => (
          <div className="eksray-ScaleForm-field" key={key}>
            <label htmlFor={`${idBase}-${key}`} title={hint}>
              {label}
            </label>
            <input
              id={`${idBase}-${key}`}
              className="jp-mod-styled eksray-NumberInput"
              type="number"
              min={0}
              step={1}
              value={valueOf(key)}
              disabled={disabled}
              aria-invalid={errors[key] ? true : undefined}
              onChange={event => {
                const value = event.target.value;
                setEdits(previous => ({ ...previous, [key]: value }));
                setErrors(previous => ({ ...previous, [key]: undefined }));
              }}
            />
          </div>
        ))}
        <button
          type="submit"
          className="jp-mod-styled jp-mod-accept eksray-Button eksray-ScaleForm-apply"
          disabled={disabled || !changed || invalid}
        >
          {busy ? 'Scaling…' : 'Scale'}
        </button>
        {Object.keys(edits).length > 0 && !busy && (
          <button
            type="button"
            className="jp-mod-styled jp-mod-reject eksray-Button"
            onClick={() => {
              setEdits({});
              setErrors({});
              setMessage(null);
            }}
          >
            Reset
          </button>
        )}
      </form>
      {SCALE_FIELDS.filter(f => errors[f.key]).map(f => (
        <div className="eksray-FieldError" role="alert" key={f.key}>
          {f.label}: {errors[f.key]}
        </div>
      ))}
      {message && (
        <div className="eksray-Error" role="alert">
          {message}
        </div>
      )}
    </li>
  );
}

export function WorkerGroups(props: { cluster: ICluster }): React.ReactElement {
  const { cluster } = props;
  if (cluster.workerGroups.length === 0) {
    return (
      <p className="eksray-Panel-status">
        No worker groups: everything runs on the head node.
      </p>
    );
  }
  return (
    <ul className="eksray-GroupList">
      {cluster.workerGroups.map(group => (
        <WorkerGroupCard
          key={group.groupName}
          cluster={cluster}
          group={group}
        />
      ))}
    </ul>
  );
}
