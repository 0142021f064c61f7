/**
 * How the cluster JSON schema becomes the "new cluster" form: the fields shown
 * for the server's backend, their layout (advanced fields on request), form
 * data for a profile, and the server's per-field errors placed on the fields
 * they are about.
 */
import type { ReadonlyJSONObject } from '@lumino/coreutils';
import type { ErrorSchema, RJSFSchema, UiSchema } from '@rjsf/utils';

import { splitErrorPath } from '../api';
import type {
  IClusterSpec,
  IFieldError,
  ILifecycleBound,
  IServerConfig
} from '../models';

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

/** Lifecycle fields an administrator can bound (`c.EKSRay.lifecycle_bounds`). */
const BOUNDED_LIFECYCLE_FIELDS = [
  'idleTimeoutMinutes',
  'suspendedTtlHours',
  'maxLifetimeHours'
];

/** The profile name the admin's bounds use for every other profile. */
const ANY_PROFILE = '*';

/** The admin's lifecycle bounds for clusters made from `profile` (as the server picks them). */
export function lifecycleBoundsFor(
  config: IServerConfig,
  profile: string
): Record<string, ILifecycleBound> {
  const all = config.lifecycleBounds ?? {};
  return (profile && all[profile]) || all[ANY_PROFILE] || {};
}

/** "between 30 and 240", "at most 240", "at least 30", or "" (no limit). */
function range(bound: ILifecycleBound): string {
  const { minimum: low, maximum: high } = bound;
  if (low !== undefined && high !== undefined) {
    return `between ${low} and ${high}`;
  }
  if (high !== undefined) {
    return `at most ${high}`;
  }
  return low !== undefined ? `at least ${low}` : '';
}

/**
 * The lifecycle part of the schema narrowed by the admin's bounds for the
 * profile: limits and allowed actions as the server enforces them, and a line
 * under each bounded field saying what the administrator set.
 */
function boundedLifecycle(
  lifecycle: Record<string, unknown>,
  bounds: Record<string, ILifecycleBound>
): Record<string, unknown> {
  const properties = {
    ...(lifecycle.properties as Record<string, Record<string, unknown>>)
  };
  for (const field of BOUNDED_LIFECYCLE_FIELDS) {
    const bound = bounds[field];
    if (!bound || !properties[field]) {
      continue;
    }
    const own = properties[field];
    const said: string[] = [];
    const limits = range(bound);
    if (limits) {
      said.push(limits);
    }
    if (bound.allowOff === false) {
      said.push('it cannot be turned off');
    }
    if (bound.default !== undefined) {
      said.push(`${bound.default} if left empty`);
    }
    properties[field] = {
      ...own,
      // 0 turns the field off: below the minimum only where that is not allowed.
      ...(bound.minimum !== undefined && bound.allowOff === false
        ? { minimum: bound.minimum }
        : {}),
      ...(bound.maximum !== undefined ? { maximum: bound.maximum } : {}),
      description: [
        own.description,
        said.length ? `Your administrator: ${said.join('; ')}.` : ''
      ]
        .filter(Boolean)
        .join(' ')
    };
  }
  const action = bounds.idleAction as
    { allowed?: string[]; default?: string } | undefined;
  if (action?.allowed && properties.idleAction) {
    properties.idleAction = {
      ...properties.idleAction,
      enum: action.allowed,
      description: [
        properties.idleAction.description,
        `Your administrator allows: ${action.allowed.join(', ')}.`
      ]
        .filter(Boolean)
        .join(' ')
    };
  }
  return { ...lifecycle, properties };
}

/**
 * The schema as the form shows it: fields of other backends left out, and the
 * lifecycle fields narrowed by the admin's bounds for `profile`.
 */
export function formSchema(
  config: IServerConfig,
  profile: string = NO_PROFILE
): RJSFSchema {
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
  const lifecycle = properties.lifecycle as Record<string, unknown> | undefined;
  if (lifecycle?.properties) {
    properties.lifecycle = boundedLifecycle(
      lifecycle,
      lifecycleBoundsFor(config, profile)
    );
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
