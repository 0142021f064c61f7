/**
 * What the extension's main-area tabs (a cluster's dashboard, a job's log)
 * have in common: the Ray icon, a close button, and a toolbar button that
 * loads the content again.
 */
import type { MainAreaWidget } from '@jupyterlab/apputils';
import { refreshIcon, ToolbarButton } from '@jupyterlab/ui-components';

import { rayClustersIcon } from './icons';

/** How one of the extension's tabs is named and reloaded. */
export interface ITabOptions {
  /** The widget's id, unique in the shell. */
  id: string;
  label: string;
  caption: string;
  /** The CSS class of the tab's widget. */
  className: string;
  /** What the reload button says it does. */
  reloadTooltip: string;
  onReload: () => void;
}

/** Give a freshly made main-area widget its id, title and reload button. */
export function setUpTab(tab: MainAreaWidget, options: ITabOptions): void {
  tab.id = options.id;
  tab.title.label = options.label;
  tab.title.caption = options.caption;
  tab.title.icon = rayClustersIcon;
  tab.title.closable = true;
  tab.addClass(options.className);
  tab.toolbar.addItem(
    'reload',
    new ToolbarButton({
      icon: refreshIcon,
      tooltip: options.reloadTooltip,
      onClick: options.onReload
    })
  );
}
