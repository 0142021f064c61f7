import React from 'react';

import {
  bytesToGiB,
  formatAmount,
  formatCount,
  formatMemory,
  formatPercent
} from '../format';
import type { IClusterNode } from '../models';
import { nodeTotal, nodeUsed } from '../utilization';

/** The resources of the Usage column: Ray's name, short label, full name, in GiB? */
const USAGE_RESOURCES: {
  resource: string;
  label: string;
  name: string;
  bytes: boolean;
}[] = [
  { resource: 'CPU', label: 'CPU', name: 'CPU', bytes: false },
  { resource: 'GPU', label: 'GPU', name: 'GPU', bytes: false },
  { resource: 'memory', label: 'mem', name: 'memory', bytes: true },
  {
    resource: 'object_store_memory',
    label: 'obj',
    name: 'object store',
    bytes: true
  }
];

/**
 * What Ray has in use on the node against what it may schedule there, per resource the
 * node has: `CPU 0.5/1`, `mem 0.5/2 GiB`, with a bar (hidden in a narrow sidebar).
 */
function Usage(props: { node: IClusterNode }): React.ReactElement {
  const { node } = props;
  const entries = USAGE_RESOURCES.flatMap(spec => {
    const total = nodeTotal(node, spec.resource);
    const used = nodeUsed(node, spec.resource);
    if (total <= 0 || used === null) {
      return [];
    }
    return [{ ...spec, total, used, fraction: Math.min(1, used / total) }];
  });
  if (entries.length === 0 || node.state !== 'alive') {
    return <span className="eksray-Muted">–</span>;
  }
  return (
    <span className="eksray-Usage">
      {entries.map(entry => {
        const used = entry.bytes ? bytesToGiB(entry.used) : entry.used;
        const total = entry.bytes ? bytesToGiB(entry.total) : entry.total;
        const unit = entry.bytes ? ' GiB' : '';
        const text = `${formatAmount(used)}/${formatAmount(total)}${unit}`;
        return (
          <span
            key={entry.resource}
            className="eksray-Usage-item"
            title={`${entry.name}: ${formatAmount(used)} of ${formatAmount(total)}${unit} in use (${formatPercent(entry.fraction)})`}
          >
            <span className="eksray-Usage-label">{entry.label}</span>
            <span className="eksray-Usage-bar" aria-hidden="true">
              <span
                className="eksray-Usage-fill"
                style={{ width: `${entry.fraction * 100}%` }}
              />
            </span>
            <span className="eksray-Usage-value">{text}</span>
          </span>
        );
      })}
    </span>
  );
}

/** The Kubernetes node a Ray node runs on, and its instance type. */
function Host(props: { node: IClusterNode }): React.ReactElement {
  const { node } = props;
  return (
    <>
      <div
        className="eksray-NodeTable-hostname"
        title="The Kubernetes node it runs on"
      >
        {node.host ?? 'not scheduled yet'}
      </div>
      {node.instanceType && (
        <div className="eksray-NodeTable-instance" title="Its instance type">
          {node.instanceType}
        </div>
      )}
    </>
  );
}

/**
 * "1 CPU · 1 GPU · 2.0 GiB": what Ray schedules on the node; in a narrow column
 * it wraps between the parts only.
 */
function ResourceSummary(props: { node: IClusterNode }): React.ReactElement {
  const r = props.node.resources ?? {};
  const parts = [`${formatCount(r.CPU ?? 0)} CPU`];
  if (r.GPU) {
    parts.push(`${formatCount(r.GPU)} GPU`);
  }
  if (r.memory !== undefined) {
    parts.push(formatMemory(r.memory));
  }
  return (
    <>
      {parts.map((part, i) => (
        <React.Fragment key={part}>
          {i > 0 ? ' · ' : ''}
          <span className="eksray-Nowrap">{part}</span>
        </React.Fragment>
      ))}
    </>
  );
}

/** An address that wraps, if it must, before its port. */
function Address(props: { address: string | null }): React.ReactElement {
  const { address } = props;
  if (!address) {
    return <>no address yet</>;
  }
  const colon = address.lastIndexOf(':');
  return colon > 0 ? (
    <>
      {address.slice(0, colon)}
      <wbr />
      {address.slice(colon)}
    </>
  ) : (
    <>{address}</>
  );
}

/**
 * Every node of a cluster: group, what Ray schedules on it (CPU, GPU, memory) and its
 * address, state, and what is in use of each resource; on Kubernetes also the machine it
 * runs on and its instance type. Narrow, so that it fits the sidebar.
 */
export function NodeTable(props: {
  nodes: IClusterNode[];
}): React.ReactElement {
  if (props.nodes.length === 0) {
    return <p className="eksray-Panel-status">No nodes yet.</p>;
  }
  const hosts = props.nodes.some(n => n.host || n.instanceType);
  return (
    <div className="eksray-TableWrapper">
      <table className="eksray-NodeTable" aria-label="Nodes">
        <thead>
          <tr>
            <th scope="col">Node</th>
            <th scope="col">State</th>
            <th scope="col" title="What Ray has in use of what it may schedule">
              Usage
            </th>
            {hosts && (
              <th
                scope="col"
                className="eksray-NodeTable-hostColumn"
                title="The Kubernetes node and its instance type"
              >
                Host
              </th>
            )}
          </tr>
        </thead>
        <tbody>
          {props.nodes.map(node => (
            <tr
              key={node.id}
              className={`eksray-NodeTable-row eksray-NodeState-${node.state}`}
              title={`Node ${node.id}`}
            >
              <td>
                <div className="eksray-NodeTable-group">
                  {node.group}
                  {node.kind === 'head' && node.group !== 'head'
                    ? ' (head)'
                    : ''}
                </div>
                <div
                  className="eksray-NodeTable-resources"
                  title="What Ray may schedule on this node"
                >
                  <ResourceSummary node={node} />
                </div>
                <div className="eksray-NodeTable-address">
                  <Address address={node.address} />
                </div>
                {hosts && (
                  // In a narrow sidebar, instead of the Host column.
                  <div className="eksray-NodeTable-hostInline">
                    <Host node={node} />
                  </div>
                )}
              </td>
              <td>
                <span
                  className={`eksray-NodeState eksray-NodeState-${node.state}`}
                >
                  {node.state}
                </span>
              </td>
              <td>
                <Usage node={node} />
              </td>
              {hosts && (
                <td className="eksray-NodeTable-hostColumn">
                  <Host node={node} />
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
