/**
 * How the cluster JSON schema becomes the "new cluster" form: the fields shown
 * for the server's backend, their layout (advanced fields on request), form
 * data for a profile, and the server's per-field errors placed on the fields
 * they are about.
 */
import type { ReadonlyJSONObject } from '@lumino/coreutils';
import type { ErrorSchema, RJSFSchema, UiSchema } from '@rjsf/utils';

import { splitErrorPath } from '../api';
import type { IClusterSpec, IFieldError, IServerConfig } from '../models';

/** Schema fields that only the Kubernetes (kuberay) backend uses. */
const KUBERNETES_ONLY_FIELDS = ['image', 'rayVersion', 'namespace'];

/** Value of the profile picker meaning "no profile". */
export const NO_PROFILE = '';

/** Order of a worker group's fields: sizes first, then shape. */
const GROUP_ORDER = [
  'groupName',
  'replicas',
  'minReplicas',
  'maxReplicas',
  'cpu',
  'memory',
  'gpu',
  '*'
];

/** Fields most clusters do not need; shown on request. */
export const ADVANCED_FIELDS = new Set([
  'resources',
  'rayStartParams',
  'labels',
  'upscalingMode'
]);

const HIDDEN = { 'ui:widget': 'hidden' };

/** Layout of the form; advanced fields hidden unless asked for. */
export function uiSchemaFor(advanced: boolean): UiSchema<ReadonlyJSONObject> {
  const extra = advanced ? {} : { resources: HIDDEN, rayStartParams: HIDDEN };
  return {
    'ui:order': [
      'name',
      'head',
      'workerGroups',
      'autoscaling',
      'lifecycle',
      'labels',
      'image',
      'rayVersion',
      'namespace',
      '*'
    ],
    name: { 'ui:placeholder': 'e.g. my-cluster' },
    head: { 'ui:order': ['cpu', 'memory', 'gpu', '*'], ...extra },
    workerGroups: {
      items: { 'ui:order': GROUP_ORDER, 'ui:title': 'Worker group', ...extra }
    },
    lifecycle: {
      'ui:order': [
        'idleTimeoutMinutes',
        'idleAction',
        'suspendedTtlHours',
        'maxLifetimeHours'
      ]
    },
    autoscaling: {
      'ui:order': ['enabled', 'idleTimeoutSeconds', 'upscalingMode'],
      ...(advanced ? {} : { upscalingMode: HIDDEN })
    },
    ...(advanced ? {} : { labels: HIDDEN })
  };
}

/**
 * Turn the server's field errors into rjsf `extraErrors`. Errors without a
 * field (or about `profile`, which is not a form field) are returned apart, to
 * be shown above the form.
 */
export function toErrorSchema(errors: IFieldError[]): {
  errorSchema: ErrorSchema;
  unplaced: IFieldError[];
} {
  const errorSchema: Record<string, unknown> = {};
  const unplaced: IFieldError[] = [];
  for (const error of errors) {
    const keys = splitErrorPath(error.path);
    if (keys.length === 0 || keys[0] === 'profile') {
      unplaced.push(error);
      continue;
    }
    let node = errorSchema;
    for (const key of keys) {
      node[key] = (node[key] as Record<string, unknown>) ?? {};
      node = node[key] as Record<string, unknown>;
    }
    const list = (node.__errors as string[]) ?? [];
    list.push(error.message);
    node.__errors = list;
  }
  return { errorSchema: errorSchema as ErrorSchema, unplaced };
}

/** The value at an error path, to tell whether the user changed it. */
export function valueAt(data: unknown, keys: string[]): unknown {
  let node = data;
  for (const key of keys) {
    if (node === null || typeof node !== 'object') {
      return undefined;
    }
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

/** The schema as the form shows it: fields of other backends left out. */
export function formSchema(config: IServerConfig): RJSFSchema {
  // `$schema`/`$id` name draft 2020-12; rjsf only needs the structure, and
  // validation happens on the server. The root title and description would
  // repeat the panel's heading.
  const schema = { ...config.clusterSchema };
  for (const key of ['$schema', '$id', 'title', 'description']) {
    delete schema[key];
  }
  const properties = { ...(schema.properties as Record<string, unknown>) };
  if (config.backend === 'local') {
    for (const field of KUBERNETES_ONLY_FIELDS) {
      delete properties[field];
    }
  }
  return { ...schema, properties } as RJSFSchema;
}

/** A name like `ray-1` that no cluster has yet. */
export function suggestName(taken: Set<string>): string {
  for (let i = 1; ; i++) {
    const name = `ray-${i}`;
    if (!taken.has(name)) {
      return name;
    }
  }
}

/** Whether a spec sets any advanced field (then the form shows them). */
export function usesAdvancedFields(value: unknown): boolean {
  if (Array.isArray(value)) {
    return value.some(usesAdvancedFields);
  }
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).some(
      ([key, item]) => ADVANCED_FIELDS.has(key) || usesAdvancedFields(item)
    );
  }
  return false;
}

/** Form data for a profile: a deep copy, so edits never touch the config. */
export function specFromProfile(
  config: IServerConfig,
  profile: string,
  name: string
): IClusterSpec {
  const base = profile ? (config.profiles[profile] ?? {}) : {};
  return { ...JSON.parse(JSON.stringify(base)), name };
}
