/**
 * What every component of the panel may need, handed down through React context.
 */
import type { CommandRegistry } from '@lumino/commands';
import React, { useContext, useEffect, useSyncExternalStore } from 'react';

import type { ClusterStore } from './clusterStore';
import type { UsageStore } from './usageStore';

export interface IPanelContext {
  store: ClusterStore;
  /** Buttons run the same commands as the palette (open dashboard, delete...). */
  commands: CommandRegistry;
  /** What the clusters use and cost, if the panel shows it. */
  usage?: UsageStore | null;
}

export const PanelContext = React.createContext<IPanelContext | null>(null);

/** The panel's context; only valid inside a {@link PanelContext} provider. */
export function usePanelContext(): IPanelContext {
  const context = useContext(PanelContext);
  if (context === null) {
    throw new Error('eksray-jupyter: component used outside the panel.');
  }
  return context;
}

/**
 * The shared cluster store; the calling component re-renders on every change
 * of the store (synchronously after a pushed message arrives).
 */
export function useStore(): ClusterStore {
  const { store } = usePanelContext();
  useSyncExternalStore(store.subscribe, () => store.version);
  return store;
}

/**
 * The shared usage store, if any, and a re-render on each of its changes; while the calling
 * component is mounted (and `active`), the store keeps the report current.
 */
export function useUsage(active = true): UsageStore | null {
  const { usage } = usePanelContext();
  useSyncExternalStore(
    usage?.subscribe ?? noSubscription,
    () => usage?.version ?? 0
  );
  useEffect(
    () => (usage && active ? usage.watch() : undefined),
    [usage, active]
  );
  return usage ?? null;
}

function noSubscription(): () => void {
  return () => undefined;
}
