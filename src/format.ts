/**
 * Turning numbers and times from the server into short words for the panel.
 */

const GIB = 1024 ** 3;

/**
 * Format a memory amount.
 *
 * Ray reports node memory in bytes, cluster specs give it in GiB: a value
 * below one MiB can only be GiB.
 */
export function formatMemory(value: number | undefined): string {
  if (value === undefined || value === null || Number.isNaN(value)) {
    return '–';
  }
  const gib = value >= 1024 * 1024 ? value / GIB : value;
  if (gib === 0) {
    return '0';
  }
  return `${gib >= 10 ? gib.toFixed(0) : gib.toFixed(1)} GiB`;
}

/** Format a count of CPUs or GPUs (may be fractional). */
export function formatCount(value: number | undefined): string {
  if (value === undefined || value === null || Number.isNaN(value)) {
    return '–';
  }
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

/** Format a fraction 0..1 as a percentage. */
export function formatPercent(fraction: number): string {
  return `${Math.round(fraction * 100)}%`;
}

/** Local wall-clock time of an ISO timestamp, e.g. `14:03:27`. */
export function formatClock(iso: string | number): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) {
    return String(iso);
  }
  return date.toLocaleTimeString([], {
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit'
  });
}

/** Full local date and time, for tooltips. */
export function formatDateTime(iso: string | number): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

/** How long ago, e.g. `3 min ago`. */
export function formatAge(iso: string, now = Date.now()): string {
  const then = new Date(iso).getTime();
  if (Number.isNaN(then)) {
    return iso;
  }
  const seconds = Math.max(0, Math.round((now - then) / 1000));
  if (seconds < 60) {
    return `${seconds} s ago`;
  }
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min ago`;
  }
  const hours = Math.round(minutes / 60);
  if (hours < 48) {
    return `${hours} h ago`;
  }
  return `${Math.round(hours / 24)} days ago`;
}
