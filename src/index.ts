import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { rayClustersIcon } from './icons';
import { ClusterSidebar } from './sidebar';

/** Must match the name of the settings schema file, `schema/settings/plugin.json`. */
const PLUGIN_ID = 'eksray-jupyter:plugin';

const CommandIDs = {
  showClusters: 'eksray:show-clusters'
} as const;

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Lists the Ray clusters managed by the eksray server extension.',
  autoStart: true,
  optional: [ILayoutRestorer, ISettingRegistry, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null,
    palette: ICommandPalette | null
  ) => {
    const sidebar = new ClusterSidebar();
    app.shell.add(sidebar, 'left', { rank: 850 });
    restorer?.add(sidebar, sidebar.id);

    app.commands.addCommand(CommandIDs.showClusters, {
      label: 'Show Ray Clusters',
      caption: 'Open the Ray clusters panel',
      icon: rayClustersIcon,
      execute: () => app.shell.activateById(sidebar.id)
    });
    palette?.addItem({ command: CommandIDs.showClusters, category: 'Ray' });

    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          const apply = () => {
            sidebar.defaultProfile = settings.get('defaultProfile')
              .composite as string;
          };
          apply();
          settings.changed.connect(apply);
        })
        .catch(reason => {
          console.error('eksray-jupyter: could not load settings.', reason);
        });
    }
  }
};

export default plugin;
