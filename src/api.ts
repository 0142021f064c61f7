/**
 * The one place where the frontend talks to the eksray server extension.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import type { ICluster, IClusterList, IErrorBody, IFieldError } from './models';

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
