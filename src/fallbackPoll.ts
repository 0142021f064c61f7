/**
 * The poll a store runs instead of the push stream while the stream does not
 * bring its data: started and stopped by the store, it backs off on errors
 * and stands by while nobody looks at the panel or the page is hidden.
 */
import { Poll } from '@lumino/polling';

/** How often a store polls while the stream does not bring its data. */
export interface IFallbackPollOptions {
  /** Milliseconds between polls. */
  pollInterval?: number;
  /** Longest wait between polls after repeated failures, in ms. */
  maxPollInterval?: number;
}

/** A stopped poll that calls `fetch`; a `fetch` that rejects makes it back off. */
export function createFallbackPoll(
  options: IFallbackPollOptions & {
    /** The poll's name, for debugging. */
    name: string;
    /** One round of fetching. */
    fetch: () => Promise<void>;
    /** Whether someone looks at the data; the poll stands by when not. */
    visible: () => boolean;
  }
): Poll {
  return new Poll({
    name: options.name,
    auto: false,
    factory: options.fetch,
    frequency: {
      interval: options.pollInterval ?? 5_000,
      backoff: true,
      max: options.maxPollInterval ?? 120_000
    },
    standby: () => !options.visible() || 'when-hidden'
  });
}
