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

/**
 * A compact amount: `2`, `1.5`, `0.25`, `12` (at most two decimals below 1, one below
 * 10, none above).
 */
export function formatAmount(value: number | undefined | null): string {
  if (value === undefined || value === null || !Number.isFinite(value)) {
    return '–';
  }
  const digits = Math.abs(value) >= 10 ? 0 : Math.abs(value) >= 1 ? 1 : 2;
  return String(Number(value.toFixed(digits)));
}

/** Bytes as GiB, compact (`2`, `0.25`): the unit is said once by the caller. */
export function bytesToGiB(bytes: number | undefined | null): number {
  return typeof bytes === 'number' && Number.isFinite(bytes) ? bytes / GIB : 0;
}

/** Dollars, as the CLI says them: `$1,234.56`, `$0.0042` below a cent, `$0.00`. */
export function formatDollars(value: number | undefined | null): string {
  const amount =
    typeof value === 'number' && Number.isFinite(value) ? value : 0;
  const digits = amount !== 0 && Math.abs(amount) < 0.01 ? 4 : 2;
  return `$${amount.toLocaleString('en-US', {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits
  })}`;
}

/**
 * Resource-hours in words, as the CLI says them: `0.52 CPU-h · 1.0 GiB-h` (GPU-hours
 * only when there are some).
 */
export function formatResourceHours(
  hours: { cpu?: number; gpu?: number; memoryGiB?: number } | undefined
): string {
  const parts = [`${(hours?.cpu ?? 0).toFixed(2)} CPU-h`];
  if (hours?.gpu) {
    parts.push(`${hours.gpu.toFixed(2)} GPU-h`);
  }
  parts.push(`${(hours?.memoryGiB ?? 0).toFixed(1)} GiB-h`);
  return parts.join(' · ');
}
