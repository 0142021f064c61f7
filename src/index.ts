import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, WidgetTracker } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStateDB } from '@jupyterlab/statedb';

import { ClusterStore } from './clusterStore';
import { addCommands, CommandIDs, PALETTE_COMMANDS } from './commands';
import { DashboardWidget } from './dashboard';
import { JobLogWidget } from './jobLog';
import { JobStore } from './jobStore';
import { LifecycleNotices } from './lifecycleNotices';
import type { IJob } from './models';
import { PushStream } from './pushStream';
import { type ISectionsOpen, type PanelView, ClusterSidebar } from './sidebar';
import { UsageStore } from './usageStore';

/** Must match the name of the settings schema file, `schema/settings/plugin.json`. */
const PLUGIN_ID = 'eksray-jupyter:plugin';

/** Where the panel's view (list, form, a cluster) is remembered across reloads. */
const VIEW_STATE_KEY = `${PLUGIN_ID}:view`;

/** Where the list view's folded sections are remembered across reloads. */
const SECTIONS_STATE_KEY = `${PLUGIN_ID}:sections`;

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'A panel to create, watch, scale and delete Ray clusters managed by the eksray server extension.',
  autoStart: true,
  optional: [ILayoutRestorer, ISettingRegistry, ICommandPalette, IStateDB],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null,
    palette: ICommandPalette | null,
    state: IStateDB | null
  ) => {
    // One socket and one store of each kind per app, shared by the panel,
    // the commands and the tabs.
    const stream = new PushStream({
      serverSettings: app.serviceManager.serverSettings
    });
    const store = new ClusterStore({ stream });
    const jobs = new JobStore({ stream });
    const usage = new UsageStore({ clusters: store });
    // Idle and budget warnings show whether or not the panel is open.
    new LifecycleNotices(stream, {
      showUsage: () => void app.commands.execute(CommandIDs.showUsage)
    });
    const openJobLog = (job: IJob) => {
      const id = JobLogWidget.idFor(job.id);
      let widget = [...app.shell.widgets('main')].find(w => w.id === id);
      if (!widget) {
        widget = new JobLogWidget({ id: job.id, name: job.name || job.id });
        app.shell.add(widget, 'main');
      }
      app.shell.activateById(id);
    };
    const sidebar = new ClusterSidebar({
      store,
      commands: app.commands,
      jobs,
      usage,
      openJobLog
    });
    app.shell.add(sidebar, 'left', { rank: 850 });

    const tracker = new WidgetTracker<DashboardWidget>({
      namespace: 'eksray-dashboard'
    });
    addCommands({ app, store, sidebar, tracker });
    for (const command of PALETTE_COMMANDS) {
      palette?.addItem({ command, category: 'Ray' });
    }

    if (restorer) {
      restorer.add(sidebar, sidebar.id);
      void restorer.restore(tracker, {
        command: CommandIDs.openDashboard,
        args: widget => ({ name: widget.clusterName, restoring: true }),
        name: widget => widget.clusterName
      });
    }

    if (state) {
      void app.restored
        .then(() => state.fetch(VIEW_STATE_KEY))
        .then(saved => {
          const view = saved as PanelView | undefined;
          if (view && ['list', 'create', 'detail'].includes(view.kind)) {
            sidebar.view = view;
          }
          sidebar.viewChanged.connect((_, next) => {
            void state.save(VIEW_STATE_KEY, next);
          });
        });
      void app.restored
        .then(() => state.fetch(SECTIONS_STATE_KEY))
        .then(saved => {
          const sections = saved as Partial<ISectionsOpen> | undefined;
          if (sections && typeof sections === 'object') {
            sidebar.sections = {
              usage: sections.usage !== false,
              jobs: sections.jobs !== false
            };
          }
          sidebar.sectionsChanged.connect((_, next) => {
            void state.save(SECTIONS_STATE_KEY, { ...next });
          });
        });
    }

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
