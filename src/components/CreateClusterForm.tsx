/**
 * The "new cluster" form, rendered from the cluster JSON schema the server
 * serves. The server validates (it is the one place the rules live); its
 * per-field errors are shown next to the fields they are about.
 */
import { FormComponent } from '@jupyterlab/ui-components';
import type { ReadonlyJSONObject } from '@lumino/coreutils';
import type { IChangeEvent } from '@rjsf/core';
import type { ValidatorType } from '@rjsf/utils';
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
import {
  ADVANCED_FIELDS,
  formSchema,
  NO_PROFILE,
  specFromProfile,
  suggestName,
  toErrorSchema,
  uiSchemaFor,
  usesAdvancedFields,
  valueAt
} from './createFormSchema';
import { ROOT_ID, TEMPLATES } from './formTemplates';
import type {
  IClusterSpec,
  ICreateRequest,
  IFieldError,
  IServerConfig
} from '../models';

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

  const schema = useMemo(
    () => (config ? formSchema(config, profile) : null),
    [config, profile]
  );
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
