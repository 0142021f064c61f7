import React from 'react';

import { formatCount, formatMemory, formatPercent } from '../format';
import type { IClusterNode } from '../models';

/** Short names of resources in the Usage column. */
const USAGE_LABELS: Record<string, string> = {
  CPU: 'CPU',
  GPU: 'GPU',
  memory: 'mem'
};

function Usage(props: { node: IClusterNode }): React.ReactElement {
  const utilization = props.node.utilization ?? {};
  const entries = Object.keys(USAGE_LABELS)
    .filter(resource => typeof utilization[resource] === 'number')
    .map(resource => [resource, utilization[resource]] as const);
  if (entries.length === 0) {
    return <span className="eksray-Muted">–</span>;
  }
  return (
    <span className="eksray-Usage">
      {entries.map(([resource, fraction]) => (
        <span
          key={resource}
          className="eksray-Usage-item"
          title={`${resource}: ${formatPercent(fraction)} in use`}
        >
          <span className="eksray-Usage-label">{USAGE_LABELS[resource]}</span>
          <span className="eksray-Usage-bar" aria-hidden="true">
            <span
              className="eksray-Usage-fill"
              style={{ width: `${Math.min(1, fraction) * 100}%` }}
            />
          </span>
          <span className="eksray-Usage-value">{formatPercent(fraction)}</span>
        </span>
      ))}
    </span>
  );
}

/** "1 CPU · 1 GPU · 2.0 GiB": the node's main resources. */
function resourceSummary(node: IClusterNode): string {
  const r = node.resources ?? {};
  const parts = [`${formatCount(r.CPU ?? 0)} CPU`];
  if (r.GPU) {
    parts.push(`${formatCount(r.GPU)} GPU`);
  }
  if (r.memory !== undefined) {
    parts.push(formatMemory(r.memory));
  }
  return parts.join(' · ');
}

/**
 * Every node of a cluster: group, CPU/GPU/memory and address, state, and
 * usage. Three columns, so that it fits the sidebar.
 */
export function NodeTable(props: {
  nodes: IClusterNode[];
}): React.ReactElement {
  if (props.nodes.length === 0) {
    return <p className="eksray-Panel-status">No nodes yet.</p>;
  }
  return (
    <div className="eksray-TableWrapper">
      <table className="eksray-NodeTable" aria-label="Nodes">
        <thead>
          <tr>
            <th scope="col">Node</th>
            <th scope="col">State</th>
            <th scope="col">Usage</th>
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
                <div className="eksray-NodeTable-resources">
                  {resourceSummary(node)}
                </div>
                <div className="eksray-NodeTable-address">
                  {node.address ?? 'no address yet'}
                </div>
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
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
