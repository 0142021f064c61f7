/**
 * What every component of the panel may need, handed down through React context.
 */
import type { CommandRegistry } from '@lumino/commands';
import React, { useContext, useSyncExternalStore } from 'react';

import type { ClusterStore } from './clusterStore';

export interface IPanelContext {
  store: ClusterStore;
  /** Buttons run the same commands as the palette (open dashboard, delete...). */
  commands: CommandRegistry;
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
