/**
 * rjsf templates for the create form: accessible labels (`<label for>`),
 * errors next to their field, and plain fieldsets for objects and arrays,
 * styled with JupyterLab's theme variables.
 */
import {
  ADDITIONAL_PROPERTY_FLAG,
  type ArrayFieldTemplateProps,
  canExpand,
  type DescriptionFieldProps,
  type FieldErrorProps,
  type FieldTemplateProps,
  type ObjectFieldTemplateProps
} from '@rjsf/utils';
import React from 'react';

/** The form's `idPrefix`: the id of its root object. */
export const ROOT_ID = 'eksray-create';

/**
 * Renders one field: an accessible `<label>` bound to the input, the input,
 * the schema's description, then the field's errors. Entries of free-form
 * maps (labels, custom resources) get a key input and a remove button.
 */
function FieldTemplate(props: FieldTemplateProps): React.ReactElement {
  const {
    id,
    label,
    children,
    errors,
    help,
    hidden,
    required,
    displayLabel,
    schema,
    rawDescription,
    onKeyChange,
    onDropPropertyClick,
    disabled,
    readonly
  } = props;
  if (hidden) {
    return <div className="eksray-FormField-hidden">{children}</div>;
  }
  if (ADDITIONAL_PROPERTY_FLAG in schema) {
    return (
      <div className="eksray-FormField eksray-FormField-entry">
        <div className="eksray-FormField-entryRow">
          <input
            className="jp-mod-styled eksray-FormField-key"
            type="text"
            defaultValue={label}
            aria-label={`Name of entry ${label}`}
            disabled={disabled || readonly}
            onBlur={event => onKeyChange(event.target.value)}
          />
          <div className="eksray-FormField-value">{children}</div>
          <button
            type="button"
            className="jp-mod-styled jp-mod-reject eksray-Button"
            aria-label={`Remove entry ${label}`}
            disabled={disabled || readonly}
            onClick={onDropPropertyClick(label)}
          >
            Remove
          </button>
        </div>
        {errors}
      </div>
    );
  }
  const description = rawDescription ?? schema.description;
  const isContainer = schema.type === 'object' || schema.type === 'array';
  return (
    <div
      className={
        isContainer
          ? 'eksray-FormField eksray-FormField-container'
          : 'eksray-FormField'
      }
    >
      {displayLabel && label && (
        <label htmlFor={id} className="eksray-FormField-label">
          {label}
          {required && (
            <span className="eksray-FormField-required" aria-hidden="true">
              {' *'}
            </span>
          )}
        </label>
      )}
      {children}
      {displayLabel && description && !isContainer && (
        <div className="eksray-FormField-description" id={`${id}__description`}>
          {description}
        </div>
      )}
      {errors}
      {help}
    </div>
  );
}

/** A field's errors, announced to screen readers. */
function FieldErrorTemplate(props: FieldErrorProps): React.ReactElement | null {
  const errors = (props.errors ?? []).filter(Boolean);
  if (errors.length === 0) {
    return null;
  }
  return (
    <ul className="eksray-FieldErrors" id={`${props.idSchema.$id}__error`}>
      {errors.map((error, i) => (
        <li key={i} className="eksray-FieldError" role="alert">
          {error}
        </li>
      ))}
    </ul>
  );
}

/** A nested object (head node, autoscaling, a worker group, a map). */
function ObjectFieldTemplate(
  props: ObjectFieldTemplateProps
): React.ReactElement {
  const { idSchema, title, schema, uiSchema, formData, properties } = props;
  const isRoot = idSchema.$id === ROOT_ID;
  const addable = canExpand(schema, uiSchema, formData);
  return (
    <fieldset
      id={idSchema.$id}
      className={isRoot ? 'eksray-FormRoot' : 'eksray-FormGroup'}
    >
      {!isRoot && <legend className="eksray-FormGroup-title">{title}</legend>}
      {!isRoot && schema.description && (
        <p className="eksray-FormField-description eksray-FormGroup-description">
          {schema.description}
        </p>
      )}
      {properties.map(property => property.content)}
      {addable && (
        <button
          type="button"
          className="jp-mod-styled eksray-Button eksray-FormGroup-add"
          onClick={props.onAddClick(schema)}
          disabled={props.disabled || props.readonly}
          aria-label={`Add an entry to ${title}`}
        >
          Add entry
        </button>
      )}
    </fieldset>
  );
}

/** A list of objects (worker groups), with add, remove and reorder. */
function ArrayFieldTemplate(
  props: ArrayFieldTemplateProps
): React.ReactElement {
  const { idSchema, title, items, canAdd, schema } = props;
  const itemTitle =
    (props.uiSchema?.items as { 'ui:title'?: string } | undefined)?.[
      'ui:title'
    ] ?? 'Item';
  return (
    <fieldset id={idSchema.$id} className="eksray-FormGroup eksray-FormArray">
      <legend className="eksray-FormGroup-title">{title}</legend>
      {schema.description && (
        <p className="eksray-FormField-description">{schema.description}</p>
      )}
      {items.length === 0 && (
        <p className="eksray-FormField-description">
          None: everything runs on the head node.
        </p>
      )}
      {items.map(item => (
        <div key={item.key} className="eksray-FormArray-item">
          {item.children}
          {item.hasToolbar && (
            <div className="eksray-FormArray-actions">
              {item.hasMoveUp && (
                <button
                  type="button"
                  className="jp-mod-styled jp-mod-reject eksray-Button"
                  onClick={item.onReorderClick(item.index, item.index - 1)}
                  disabled={item.disabled || item.readonly}
                >
                  Move up
                </button>
              )}
              {item.hasMoveDown && (
                <button
                  type="button"
                  className="jp-mod-styled jp-mod-reject eksray-Button"
                  onClick={item.onReorderClick(item.index, item.index + 1)}
                  disabled={item.disabled || item.readonly}
                >
                  Move down
                </button>
              )}
              {item.hasRemove && (
                <button
                  type="button"
                  className="jp-mod-styled jp-mod-warn eksray-Button"
                  onClick={item.onDropIndexClick(item.index)}
                  disabled={item.disabled || item.readonly}
                  aria-label={`Remove ${itemTitle.toLowerCase()} ${item.index + 1}`}
                >
                  Remove
                </button>
              )}
            </div>
          )}
        </div>
      ))}
      {canAdd && (
        <button
          type="button"
          className="jp-mod-styled eksray-Button eksray-FormGroup-add"
          onClick={props.onAddClick}
          disabled={props.disabled || props.readonly}
        >
          Add {itemTitle.toLowerCase()}
        </button>
      )}
    </fieldset>
  );
}

/** A description rjsf places itself (e.g. above a checkbox). */
function DescriptionFieldTemplate(
  props: DescriptionFieldProps
): React.ReactElement | null {
  if (!props.description) {
    return null;
  }
  return (
    <div id={props.id} className="eksray-FormField-description">
      {props.description}
    </div>
  );
}

/** Every template the create form overrides. */
export const TEMPLATES = {
  FieldTemplate,
  FieldErrorTemplate,
  DescriptionFieldTemplate,
  ObjectFieldTemplate,
  ArrayFieldTemplate
};
