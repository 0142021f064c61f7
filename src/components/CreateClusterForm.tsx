/**
 * The "new cluster" form, rendered from the cluster JSON schema the server
 * serves. The server validates (it is the one place the rules live); its
 * per-field errors are shown next to the fields they are about.
 */
import { FormComponent } from '@jupyterlab/ui-components';
import type { ReadonlyJSONObject } from '@lumino/coreutils';
import type { IChangeEvent } from '@rjsf/core';
import {
  type ErrorSchema,
  type RJSFSchema,
  type UiSchema,
  type ValidatorType
} from '@rjsf/utils';
import validator from '@rjsf/validator-ajv8';
import React, { useEffect, useMemo, useState } from 'react';

import {
  createCluster,
  EKSRayAPIError,
  errorText,
  getConfig,
  splitErrorPath
} from '../api';
import { useStore } from '../context';
import { ROOT_ID, TEMPLATES } from './formTemplates';
import type {
  IClusterSpec,
  ICreateRequest,
  IFieldError,
  IServerConfig
} from '../models';

/** Schema fields that only the Kubernetes (kuberay) backend uses. */
const KUBERNETES_ONLY_FIELDS = ['image', 'rayVersion', 'namespace'];

/** Value of the profile picker meaning "no profile". */
const NO_PROFILE = '';

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
const ADVANCED_FIELDS = new Set([
  'resources',
  'rayStartParams',
  'labels',
  'upscalingMode'
]);

const HIDDEN = { 'ui:widget': 'hidden' };

/** Layout of the form; advanced fields hidden unless asked for. */
function uiSchemaFor(advanced: boolean): UiSchema<ReadonlyJSONObject> {
  const extra = advanced ? {} : { resources: HIDDEN, rayStartParams: HIDDEN };
  return {
    'ui:order': [
      'name',
      'head',
      'workerGroups',
      'autoscaling',
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
function valueAt(data: unknown, keys: string[]): unknown {
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
function formSchema(config: IServerConfig): RJSFSchema {
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
function suggestName(taken: Set<string>): string {
  for (let i = 1; ; i++) {
    const name = `ray-${i}`;
    if (!taken.has(name)) {
      return name;
    }
  }
}

/** Whether a spec sets any advanced field (then the form shows them). */
function usesAdvancedFields(value: unknown): boolean {
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
function specFromProfile(
  config: IServerConfig,
  profile: string,
  name: string
): IClusterSpec {
  const base = profile ? (config.profiles[profile] ?? {}) : {};
  return { ...JSON.parse(JSON.stringify(base)), name };
}

/**
 * rjsf's validator, typed for JupyterLab's `FormComponent` (whose form data is
 * a `ReadonlyJSONObject`). Only used by rjsf to resolve the schema: validation
 * itself is the server's.
 */
const VALIDATOR = validator as unknown as ValidatorType<ReadonlyJSONObject>;

export interface ICreateClusterFormProps {
  /** Profile to preselect (the `defaultProfile` setting); empty for the server's. */
  defaultProfile: string;
  onCreated: (name: string) => void;
  onCancel: () => void;
}

export function CreateClusterForm(
  props: ICreateClusterFormProps
): React.ReactElement {
  const store = useStore();
  const [config, setConfig] = useState<IServerConfig | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [attempt, setAttempt] = useState(0);
  const [profile, setProfile] = useState(NO_PROFILE);
  const [formData, setFormData] = useState<IClusterSpec>({});
  const [fieldErrors, setFieldErrors] = useState<IFieldError[]>([]);
  const [message, setMessage] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [advanced, setAdvanced] = useState(false);

  useEffect(() => {
    let active = true;
    getConfig()
      .then(loaded => {
        if (!active) {
          return;
        }
        const preferred = [props.defaultProfile, loaded.defaultProfile ?? ''];
        const initial =
          preferred.find(p => p && p in loaded.profiles) ?? NO_PROFILE;
        const taken = new Set((store.clusters ?? []).map(c => c.name));
        const spec = specFromProfile(loaded, initial, suggestName(taken));
        setConfig(loaded);
        setProfile(initial);
        setFormData(spec);
        if (usesAdvancedFields(spec)) {
          setAdvanced(true);
        }
      })
      .catch(error => {
        if (active) {
          setLoadError(errorText(error));
        }
      });
    return () => {
      active = false;
    };
    // The form is set up once per opening (or retry); later setting or
    // store changes must not reset what the user typed.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [attempt]);

  const schema = useMemo(() => (config ? formSchema(config) : null), [config]);
  const uiSchema = useMemo(() => uiSchemaFor(advanced), [advanced]);

  // After a rejected submit, take the user to the first field to fix.
  const [focusRequest, setFocusRequest] = useState(0);
  useEffect(() => {
    const first = fieldErrors[0];
    if (focusRequest === 0 || !first) {
      return;
    }
    const id = [ROOT_ID, ...splitErrorPath(first.path)].join('_');
    const input = document.getElementById(id);
    input?.focus();
    input?.scrollIntoView({ block: 'center' });
    // Only when a submit was rejected, not when an error is cleared.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [focusRequest]);
  const { errorSchema, unplaced } = useMemo(
    () => toErrorSchema(fieldErrors),
    [fieldErrors]
  );

  const onChange = (event: IChangeEvent) => {
    const previous = formData;
    const next = event.formData as IClusterSpec;
    // An error stays until the value it is about changes.
    setFieldErrors(errors =>
      errors.filter(e => {
        const keys = splitErrorPath(e.path);
        return (
          keys.length === 0 ||
          JSON.stringify(valueAt(previous, keys)) ===
            JSON.stringify(valueAt(next, keys))
        );
      })
    );
    setFormData(next);
  };

  const onProfileChange = (value: string) => {
    if (!config) {
      return;
    }
    const spec = specFromProfile(config, value, formData.name ?? '');
    setProfile(value);
    setFieldErrors([]);
    setMessage(null);
    setFormData(spec);
    if (usesAdvancedFields(spec)) {
      // The profile sets e.g. custom resources: show what will be submitted.
      setAdvanced(true);
    }
  };

  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setMessage(null);
    const request: ICreateRequest = { ...formData };
    if (profile) {
      request.profile = profile;
    }
    try {
      const cluster = await createCluster(request);
      store.upsert(cluster);
      props.onCreated(cluster.name);
    } catch (error) {
      if (error instanceof EKSRayAPIError && error.errors.length > 0) {
        setFieldErrors(error.errors);
        setFocusRequest(n => n + 1);
        if (
          error.errors.some(e =>
            splitErrorPath(e.path).some(key => ADVANCED_FIELDS.has(key))
          )
        ) {
          setAdvanced(true);
        }
        setMessage(
          error.errors.length === 1
            ? 'The cluster was not created: one field needs fixing.'
            : `The cluster was not created: ${error.errors.length} fields need fixing.`
        );
      } else {
        setFieldErrors([]);
        setMessage(`The cluster was not created. ${errorText(error)}`);
      }
    } finally {
      setBusy(false);
    }
  };

  if (loadError) {
    return (
      <div className="eksray-CreateForm">
        <div className="eksray-Error" role="alert">
          Could not load the cluster form: {loadError}
        </div>
        <div className="eksray-CreateForm-actions">
          <button
            type="button"
            className="jp-mod-styled jp-mod-reject eksray-Button"
            onClick={props.onCancel}
          >
            Back
          </button>
          <button
            type="button"
            className="jp-mod-styled jp-mod-accept eksray-Button"
            onClick={() => {
              setLoadError(null);
              setAttempt(n => n + 1);
            }}
          >
            Try again
          </button>
        </div>
      </div>
    );
  }
  if (!config || !schema) {
    return <p className="eksray-Panel-status">Loading the cluster form…</p>;
  }

  const profiles = Object.keys(config.profiles);
  const unknownDefault =
    props.defaultProfile && !(props.defaultProfile in config.profiles);
  const limits = Object.entries(config.limits).map(([key, value]) =>
    key in LIMIT_LABELS ? LIMIT_LABELS[key](value) : `${key} ${value}`
  );
  const limitNote = limits.length ? ` Limits: ${limits.join(', ')}.` : '';

  return (
    <form
      className="eksray-CreateForm"
      onSubmit={submit}
      aria-label="New Ray cluster"
      noValidate
    >
      <h3 className="eksray-Section-title">New cluster</h3>
      <p className="eksray-CreateForm-hint">
        Runs on the <strong>{config.backend}</strong> backend as{' '}
        <strong>{config.owner}</strong>.{limitNote}
      </p>
      <div className="eksray-FormField">
        <label htmlFor="eksray-profile" className="eksray-FormField-label">
          Profile
        </label>
        <select
          id="eksray-profile"
          className="eksray-Select"
          value={profile}
          onChange={event => onProfileChange(event.target.value)}
          disabled={busy}
        >
          {profiles.map(name => (
            <option key={name} value={name}>
              {name}
            </option>
          ))}
          <option value={NO_PROFILE}>No profile (schema defaults)</option>
        </select>
        <div className="eksray-FormField-description">
          A template from your administrator; every field below can still be
          changed.
        </div>
        {unknownDefault && (
          <div className="eksray-Warning">
            Your default profile “{props.defaultProfile}” (Settings → Ray
            clusters) does not exist on this server.
          </div>
        )}
      </div>
      <label className="eksray-CreateForm-advanced">
        <input
          type="checkbox"
          checked={advanced}
          onChange={event => setAdvanced(event.target.checked)}
        />{' '}
        Show advanced fields (custom resources, ray start parameters, labels)
      </label>
      <fieldset className="eksray-CreateForm-fields" disabled={busy}>
        <FormComponent
          schema={schema}
          uiSchema={uiSchema}
          formData={formData as ReadonlyJSONObject}
          onChange={onChange}
          validator={VALIDATOR}
          templates={TEMPLATES}
          extraErrors={errorSchema}
          showErrorList={false}
          noHtml5Validate
          formContext={{ defaultFormData: {} }}
          idPrefix={ROOT_ID}
          compact
        />
      </fieldset>
      {message && (
        <div className="eksray-Error" role="alert">
          <div>{message}</div>
          {unplaced.length > 0 && (
            <ul className="eksray-Error-list">
              {unplaced.map((e, i) => (
                <li key={i}>
                  {e.path ? `${e.path}: ` : ''}
                  {e.message}
                </li>
              ))}
            </ul>
          )}
        </div>
      )}
      <div className="eksray-CreateForm-actions">
        <button
          type="button"
          className="jp-mod-styled jp-mod-reject eksray-Button"
          onClick={props.onCancel}
          disabled={busy}
        >
          Cancel
        </button>
        <button
          type="submit"
          className="jp-mod-styled jp-mod-accept eksray-Button"
          disabled={busy}
        >
          {busy ? 'Creating…' : 'Create cluster'}
        </button>
      </div>
    </form>
  );
}

/** How each limit of `GET /config` reads in the form's hint. */
const LIMIT_LABELS: Record<string, (value: number) => string> = {
  maxLocalNodes: value => `${value} Ray nodes on this machine`,
  maxClustersPerOwner: value => `${value} clusters per user`
};
