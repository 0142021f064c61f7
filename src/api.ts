/**
 * The one place where the frontend talks to the eksray server extension.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import type {
  ICluster,
  IClusterEvent,
  IClusterList,
  ICreateRequest,
  IErrorBody,
  IEventList,
  IFieldError,
  IGroupScale,
  IJob,
  IJobList,
  IJobLogPage,
  IServerConfig,
  IUsageReport,
  JobState
} from './models';

/** Path of the REST API below the server's base URL. */
export const API_NAMESPACE = 'eksray/api';

/**
 * An error from the eksray API, with a message fit to show to a person.
 */
export class EKSRayAPIError extends Error {
  constructor(
    message: string,
    /** HTTP status code, or 0 when the server could not be reached. */
    readonly status: number,
    /** Per-field problems reported by the server, if any. */
    readonly errors: IFieldError[] = []
  ) {
    super(message);
    this.name = 'EKSRayAPIError';
  }
}

/**
 * Call the eksray REST API.
 *
 * @param path - path below `/eksray/api`, e.g. `clusters`.
 * @param init - fetch options (method, body, ...).
 * @returns the decoded JSON body, or `undefined` for an empty body.
 * @throws {EKSRayAPIError} when the server cannot be reached or answers with an error.
 */
export async function requestAPI<T>(
  path = '',
  init: RequestInit = {}
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, API_NAMESPACE, path);

  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new EKSRayAPIError(
      `Could not reach the Jupyter server (${errorText(error)}).`,
      0
    );
  }

  const text = await response.text();
  let body: unknown = undefined;
  if (text.length > 0) {
    try {
      body = JSON.parse(text);
    } catch {
      if (response.ok) {
        throw new EKSRayAPIError(
          'The server sent a reply that is not valid JSON.',
          response.status
        );
      }
    }
  }

  if (!response.ok) {
    const errorBody = isErrorBody(body) ? body : undefined;
    throw new EKSRayAPIError(
      errorBody?.message ?? defaultMessage(response),
      response.status,
      errorBody?.errors ?? []
    );
  }
  return body as T;
}

/** List every Ray cluster the server knows about. */
export async function listClusters(): Promise<ICluster[]> {
  const data = await requestAPI<IClusterList>('clusters');
  return data?.clusters ?? [];
}

/** One cluster by name. */
export function getCluster(name: string): Promise<ICluster> {
  return requestAPI<ICluster>(clusterPath(name));
}

/**
 * Create a cluster. The server validates the spec (merged over `profile`)
 * and answers 400 with per-field `errors` when something is wrong.
 */
export function createCluster(request: ICreateRequest): Promise<ICluster> {
  return requestAPI<ICluster>('clusters', {
    method: 'POST',
    body: JSON.stringify(request)
  });
}

/** Change replicas and bounds of one or more worker groups. */
export function scaleCluster(
  name: string,
  workerGroups: IGroupScale[]
): Promise<ICluster> {
  return requestAPI<ICluster>(clusterPath(name), {
    method: 'PATCH',
    body: JSON.stringify({ workerGroups })
  });
}

/** Stop a cluster's Ray nodes and keep it (it costs nothing until resumed). */
export function suspendCluster(name: string): Promise<ICluster> {
  return requestAPI<ICluster>(`${clusterPath(name)}/suspend`, {
    method: 'POST'
  });
}

/** Start a suspended cluster again, with the same name and spec. */
export function resumeCluster(name: string): Promise<ICluster> {
  return requestAPI<ICluster>(`${clusterPath(name)}/resume`, {
    method: 'POST'
  });
}

/** Say a cluster is in use now: its idle time starts again. */
export function keepClusterAlive(name: string): Promise<ICluster> {
  return requestAPI<ICluster>(`${clusterPath(name)}/keepalive`, {
    method: 'POST'
  });
}

/** Stop a cluster and forget it; resolves once the server has torn it down. */
export async function deleteCluster(name: string): Promise<void> {
  await requestAPI<void>(clusterPath(name), { method: 'DELETE' });
}

/**
 * A cluster's events, oldest first.
 *
 * @param since - only events after this time (seconds since the epoch).
 */
export async function listEvents(
  name: string,
  since?: number
): Promise<IClusterEvent[]> {
  const query = since === undefined ? '' : `?since=${since}`;
  const data = await requestAPI<IEventList>(
    `${clusterPath(name)}/events${query}`
  );
  return data?.events ?? [];
}

/** Backend, profiles, limits and the cluster JSON schema. */
export function getConfig(): Promise<IServerConfig> {
  return requestAPI<IServerConfig>('config');
}

/**
 * Open the push stream, `<wsUrl>eksray/api/stream`.
 *
 * Authenticated like JupyterLab's own websockets: the browser sends the login
 * cookie with the upgrade request; when the page was given a token it is also
 * passed as `?token=` (websocket upgrades cannot carry an `Authorization`
 * header from a browser).
 */
export function openStream(
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): WebSocket {
  let url = URLExt.join(settings.wsUrl, API_NAMESPACE, 'stream');
  if (settings.token) {
    url += `?token=${encodeURIComponent(settings.token)}`;
  }
  return new settings.WebSocket(url);
}

/** The user's jobs, newest first, and the stores that could not be read. */
export async function listJobs(): Promise<IJobList> {
  const data = await requestAPI<IJobList>('jobs');
  return { jobs: data?.jobs ?? [], warnings: data?.warnings ?? [] };
}

/** One job by id. */
export function getJob(id: string): Promise<IJob> {
  return requestAPI<IJob>(jobPath(id));
}

/**
 * Stop a job. Resolves with the job once it is stopped (or still stopping
 * after the server's wait); a job that had already ended comes back unchanged.
 */
export function stopJob(id: string): Promise<IJob> {
  return requestAPI<IJob>(jobPath(id), { method: 'DELETE' });
}

/** What part of a job's log to read: from `offset` at most `limit` bytes, or the last `tail` bytes. */
export interface IJobLogQuery {
  offset?: number;
  /** At most this many bytes (the server's default: 256 KiB; it clamps larger values). */
  limit?: number;
  /** The last this many bytes, from a line start where there is one in them. */
  tail?: number;
}

/** A page of a job's log (`GET /jobs/{id}/logs`): never the whole log at once. */
export async function getJobLog(
  id: string,
  query: IJobLogQuery = {}
): Promise<IJobLogPage> {
  const settings = ServerConnection.makeSettings();
  const params = new URLSearchParams();
  for (const key of ['offset', 'limit', 'tail'] as const) {
    const value = query[key];
    if (value !== undefined) {
      params.set(key, String(Math.max(0, Math.floor(value))));
    }
  }
  const search = params.toString();
  const url =
    URLExt.join(settings.baseUrl, API_NAMESPACE, jobPath(id), 'logs') +
    (search ? `?${search}` : '');
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, {}, settings);
  } catch (error) {
    throw new EKSRayAPIError(
      `Could not reach the Jupyter server (${errorText(error)}).`,
      0
    );
  }
  if (!response.ok) {
    let body: unknown = undefined;
    try {
      body = JSON.parse(await response.text());
    } catch {
      // Not JSON: the default message says enough.
    }
    throw new EKSRayAPIError(
      isErrorBody(body) ? body.message : defaultMessage(response),
      response.status
    );
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  const header = (name: string, fallback: number): number => {
    const value = Number(response.headers.get(name) ?? NaN);
    return Number.isFinite(value) && value >= 0 ? value : fallback;
  };
  const offset = header('X-Log-Offset', query.offset ?? 0);
  const nextOffset = header('X-Next-Offset', offset + bytes.byteLength);
  return {
    bytes,
    offset,
    nextOffset,
    size: header('X-Log-Size', nextOffset),
    state: (response.headers.get('X-Job-State') as JobState | null) ?? null,
    complete: response.headers.get('X-Log-Complete') === 'true'
  };
}

/**
 * Where a job's result file is downloaded: `GET <baseUrl>eksray/api/jobs/<id>/results/<path>`.
 *
 * A plain same-origin link: the browser sends the Jupyter login cookie with it,
 * like the dashboard links. Each segment of `path` (e.g. `out/2024/a b.csv`)
 * is URL-encoded; the slashes between them are kept.
 */
export function jobResultUrl(
  id: string,
  path: string,
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): string {
  const encoded = path.split('/').map(encodeURIComponent).join('/');
  return URLExt.join(
    settings.baseUrl,
    API_NAMESPACE,
    jobPath(id),
    'results',
    encoded
  );
}

/**
 * What the user's clusters use and cost now and since created, the quota and the monthly
 * budget (`GET /usage`). The server advances its meters at every read.
 */
export function getUsage(): Promise<IUsageReport> {
  return requestAPI<IUsageReport>('usage');
}

/**
 * Where the usage report is downloaded as CSV: `GET <baseUrl>eksray/api/usage?format=csv`
 * (one row per cluster; the server names the file `eksray-usage.csv`).
 *
 * A plain same-origin link, like the job results ({@link jobResultUrl}): the browser sends
 * the Jupyter login cookie with it.
 */
export function usageCsvUrl(
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): string {
  return URLExt.join(settings.baseUrl, API_NAMESPACE, 'usage') + '?format=csv';
}

function jobPath(id: string): string {
  return `jobs/${encodeURIComponent(id)}`;
}

function clusterPath(name: string): string {
  return `clusters/${encodeURIComponent(name)}`;
}

/**
 * Split the path of a server field error into keys: `workerGroups[0].maxReplicas`
 * (or `workerGroups/0/maxReplicas`) gives `['workerGroups', '0', 'maxReplicas']`.
 */
export function splitErrorPath(path: string): string[] {
  return path
    .replace(/\[(\d+)\]/g, '.$1')
    .split(/[./]/)
    .filter(part => part.length > 0);
}

/** A plain-words description of any error thrown while calling the API. */
export function errorText(error: unknown): string {
  if (error instanceof Error) {
    return error.message;
  }
  return String(error);
}

function isErrorBody(body: unknown): body is IErrorBody {
  return (
    typeof body === 'object' &&
    body !== null &&
    typeof (body as IErrorBody).message === 'string'
  );
}

function defaultMessage(response: Response): string {
  switch (response.status) {
    case 403:
      return 'The Jupyter server refused the request: you may need to log in again.';
    case 404:
      return 'The eksray server extension did not answer. Is it installed and enabled?';
    default: {
      const status = [response.status, response.statusText]
        .filter(Boolean)
        .join(' ');
      return `The server answered with an error (HTTP ${status}).`;
    }
  }
}
