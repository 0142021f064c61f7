/**
 * A section of the list view (Usage, Jobs) whose heading folds it away. A folded
 * section's body is not rendered, so nothing in it keeps polling.
 */
import { caretDownIcon, caretRightIcon } from '@jupyterlab/ui-components';
import React from 'react';

export function CollapsibleSection(props: {
  /** Makes the ids of the heading and the body (`eksray-<id>-title`, `eksray-<id>-body`). */
  id: string;
  title: string;
  open: boolean;
  onToggle: (open: boolean) => void;
  /** Extra class of the `<section>`. */
  className?: string;
  /** Shown at the right of the heading, e.g. when the figures were read. */
  aside?: React.ReactNode;
  children: React.ReactNode;
}): React.ReactElement {
  const titleId = `eksray-${props.id}-title`;
  const bodyId = `eksray-${props.id}-body`;
  const Caret = props.open ? caretDownIcon : caretRightIcon;
  return (
    <section
      className={`eksray-Section eksray-Collapsible ${props.className ?? ''}`}
      aria-labelledby={titleId}
    >
      <h3 className="eksray-Section-title eksray-Collapsible-title">
        <button
          type="button"
          id={titleId}
          className="eksray-Collapsible-toggle"
          aria-expanded={props.open}
          aria-controls={bodyId}
          onClick={() => props.onToggle(!props.open)}
          title={props.open ? `Fold ${props.title}` : `Show ${props.title}`}
        >
          <Caret.react tag="span" className="eksray-Collapsible-caret" />
          {props.title}
        </button>
        {props.open && props.aside ? (
          <span className="eksray-Collapsible-aside">{props.aside}</span>
        ) : null}
      </h3>
      {props.open && (
        <div id={bodyId} className="eksray-Collapsible-body">
          {props.children}
        </div>
      )}
    </section>
  );
}
