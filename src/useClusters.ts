import { Poll } from '@lumino/polling';
import { useCallback, useEffect, useRef, useState } from 'react';

import { errorText, listClusters } from './api';
import type { ICluster } from './models';

/** How often the cluster list is refreshed while it is shown, in ms. */
export const REFRESH_INTERVAL = 10_000;

/** Longest wait between attempts after repeated failures, in ms. */
export const MAX_REFRESH_INTERVAL = 120_000;

export interface IClustersState {
  /** Last clusters received, or `null` before the first answer. */
  clusters: ICluster[] | null;
  /** Why the last refresh failed, or `null` if it succeeded. */
  error: string | null;
}

/**
 * Keep the list of clusters up to date while `visible` is true.
 *
 * Polls every {@link REFRESH_INTERVAL} ms, backing off up to
 * {@link MAX_REFRESH_INTERVAL} ms while requests fail, and stands by while the
 * panel or the browser tab is hidden. Becoming visible triggers a refresh.
 */
export function useClusters(
  visible: boolean
): IClustersState & { refresh: () => void } {
  const [state, setState] = useState<IClustersState>({
    clusters: null,
    error: null
  });
  const visibleRef = useRef(visible);
  const pollRef = useRef<Poll | null>(null);

  useEffect(() => {
    let active = true;
    const poll = new Poll({
      name: 'eksray-jupyter:clusters',
      factory: async () => {
        try {
          const clusters = await listClusters();
          if (active) {
            setState({ clusters, error: null });
          }
        } catch (error) {
          if (active) {
            setState(previous => ({ ...previous, error: errorText(error) }));
          }
          throw error; // Lets the poll back off.
        }
      },
      frequency: {
        interval: REFRESH_INTERVAL,
        backoff: true,
        max: MAX_REFRESH_INTERVAL
      },
      standby: () => !visibleRef.current || 'when-hidden'
    });
    pollRef.current = poll;
    return () => {
      active = false;
      pollRef.current = null;
      poll.dispose();
    };
  }, []);

  useEffect(() => {
    visibleRef.current = visible;
    if (visible) {
      void pollRef.current?.refresh();
    }
  }, [visible]);

  const refresh = useCallback(() => {
    void pollRef.current?.refresh();
  }, []);

  return { ...state, refresh };
}
