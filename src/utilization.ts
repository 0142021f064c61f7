/**
 * What Ray has in use on a cluster's nodes, against what it may schedule there: per node
 * (the node table) and for the whole cluster (the utilisation chart), from the pushed
 * cluster states alone.
 */
import type { IClusterNode } from './models';

/** The resources the panel shows utilisation of. */
export type UtilizationKey = 'cpu' | 'gpu' | 'memory' | 'objectStore';

/** Every key, in the order they are shown. */
export const UTILIZATION_KEYS: readonly UtilizationKey[] = [
  'cpu',
  'gpu',
  'memory',
  'objectStore'
];

/** Ray's name of each resource (`resources`, `used` and `utilization` of a node). */
export const RAY_RESOURCE: Record<UtilizationKey, string> = {
  cpu: 'CPU',
  gpu: 'GPU',
  memory: 'memory',
  objectStore: 'object_store_memory'
};

/** Other spellings of Ray's names seen in `used` (the dashboard's camelCase). */
const ALIASES: Record<string, string[]> = {
  object_store_memory: ['objectStoreMemory']
};

/** Fraction 0..1 of each resource in use; `null` where the cluster has none or Ray does not say. */
export type Utilization = Record<UtilizationKey, number | null>;

/** The cluster's utilisation at one moment, for the chart. */
export interface IUtilizationSample extends Utilization {
  /** Milliseconds since the epoch. */
  time: number;
}

/** What a node may schedule of a Ray resource (0 if none). */
export function nodeTotal(node: IClusterNode, resource: string): number {
  const value = node.resources?.[resource];
  return typeof value === 'number' && Number.isFinite(value) ? value : 0;
}

/**
 * What Ray has in use of a resource on a node, from `used` (or, from a server that does not
 * send it, `utilization` times the total); `null` when the node does not say.
 */
export function nodeUsed(node: IClusterNode, resource: string): number | null {
  const used = node.used;
  if (used) {
    for (const name of [resource, ...(ALIASES[resource] ?? [])]) {
      const value = used[name];
      if (typeof value === 'number' && Number.isFinite(value)) {
        return value;
      }
    }
  }
  const fraction = node.utilization?.[resource];
  if (typeof fraction === 'number' && Number.isFinite(fraction)) {
    return fraction * nodeTotal(node, resource);
  }
  // A node that reports usage of other resources has none of this one in use.
  return used && Object.keys(used).length > 0 ? 0 : null;
}

/** Used / total of each resource over the cluster's alive nodes. */
export function clusterUtilization(nodes: IClusterNode[]): Utilization {
  const alive = nodes.filter(n => n.state === 'alive');
  const result = {} as Utilization;
  for (const key of UTILIZATION_KEYS) {
    const resource = RAY_RESOURCE[key];
    let total = 0;
    let used = 0;
    let known = false;
    for (const node of alive) {
      const amount = nodeTotal(node, resource);
      if (amount <= 0) {
        continue;
      }
      total += amount;
      const inUse = nodeUsed(node, resource);
      if (inUse !== null) {
        used += inUse;
        known = true;
      }
    }
    result[key] =
      total > 0 && known ? Math.min(1, Math.max(0, used / total)) : null;
  }
  return result;
}

/** Whether two utilisations differ by more than rounding (0.1 %). */
export function sameUtilization(a: Utilization, b: Utilization): boolean {
  return UTILIZATION_KEYS.every(key => {
    const x = a[key];
    const y = b[key];
    return x === null || y === null ? x === y : Math.abs(x - y) < 0.001;
  });
}
