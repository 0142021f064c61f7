/**
 * The Ray dashboard in a JupyterLab main-area tab.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { IFrame, launchIcon, ToolbarButton } from '@jupyterlab/ui-components';

import { setUpTab } from './mainAreaTab';

/** A dashboard tab: an iframe on the proxied dashboard of one cluster. */
export class DashboardWidget extends MainAreaWidget<IFrame> {
  constructor(options: { name: string; url: string }) {
    const content = new IFrame({
      // The Ray dashboard is a single-page app that calls its own API: it
      // needs scripts and its (proxied, same-origin) cookies and fetches.
      // Everything it can reach goes through our authenticated proxy.
      sandbox: [
        'allow-scripts',
        'allow-same-origin',
        'allow-forms',
        'allow-popups',
        'allow-downloads'
      ],
      referrerPolicy: 'same-origin'
    });
    content.url = options.url;
    content.addClass('eksray-Dashboard-frame');
    super({ content });
    this.clusterName = options.name;
    this.url = options.url;
    setUpTab(this, {
      id: DashboardWidget.idFor(options.name),
      label: `Ray: ${options.name}`,
      caption: `Ray dashboard of ${options.name}`,
      className: 'eksray-Dashboard',
      reloadTooltip: 'Reload the dashboard',
      onReload: () => {
        this.content.url = '';
        this.content.url = this.url;
      }
    });
    this.toolbar.addItem(
      'open-in-browser',
      new ToolbarButton({
        icon: launchIcon,
        label: 'Open in a browser tab',
        tooltip: 'Open the dashboard in a new browser tab',
        onClick: () => openInBrowser(this.url)
      })
    );
  }

  /** The id of a cluster's dashboard tab. */
  static idFor(name: string): string {
    return `eksray-dashboard-${name}`;
  }

  readonly clusterName: string;
  readonly url: string;
}

/** Open a server-relative URL in a new browser tab. */
export function openInBrowser(url: string): void {
  // `noopener`: the dashboard gets no handle on this JupyterLab window.
  window.open(url, '_blank', 'noopener');
}
