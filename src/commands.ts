/**
 * The extension's commands. The panel's buttons and the command palette run
 * the same ones; a command that needs a cluster takes `name`, else acts on the
 * cluster shown in the panel, else asks which.
 */
import type { JupyterFrontEnd } from '@jupyterlab/application';
import {
  Dialog,
  InputDialog,
  type WidgetTracker,
  showDialog,
  showErrorMessage
} from '@jupyterlab/apputils';
import type { ReadonlyPartialJSONObject } from '@lumino/coreutils';

import {
  deleteCluster,
  errorText,
  keepClusterAlive,
  resumeCluster,
  scaleCluster,
  suspendCluster
} from './api';
import type { ClusterStore } from './clusterStore';
import { CommandIDs } from './commandIds';
import { DashboardWidget, openInBrowser } from './dashboard';
import { rayClustersIcon } from './icons';
import type { ICluster, IGroupScale } from './models';
import type { ClusterSidebar } from './sidebar';

export { CommandIDs };

export interface ICommandsOptions {
  app: JupyterFrontEnd;
  store: ClusterStore;
  sidebar: ClusterSidebar;
  tracker: WidgetTracker<DashboardWidget>;
}

function stringArg(
  args: ReadonlyPartialJSONObject,
  key: string
): string | undefined {
  const value = args[key];
  return typeof value === 'string' && value ? value : undefined;
}

function numberArg(
  args: ReadonlyPartialJSONObject,
  key: string
): number | undefined {
  const value = args[key];
  return typeof value === 'number' ? value : undefined;
}

export function addCommands(options: ICommandsOptions): void {
  const { app, store, sidebar, tracker } = options;
  const { commands, shell } = app;

  /**
   * The cluster a command acts on: the `name` argument, else the one shown in
   * the panel, else the only candidate, else the user's choice. `null` when
   * there is none or the user cancelled (and was told why where needed).
   */
  async function pickCluster(
    args: ReadonlyPartialJSONObject,
    action: string,
    usable: (cluster: ICluster) => boolean = () => true
  ): Promise<ICluster | null> {
    store.start();
    if (store.clusters === null) {
      await store.refresh();
    }
    if (store.clusters === null) {
      await showErrorMessage(
        `Cannot ${action}`,
        `Could not get the list of Ray clusters: ${store.error ?? 'no answer'}`
      );
      return null;
    }
    const named = stringArg(args, 'name') ?? sidebar.selected;
    if (named) {
      const cluster = store.get(named);
      if (cluster) {
        return cluster;
      }
      if (args.restoring) {
        // A tab restored from the last session, of a cluster now gone.
        return null;
      }
      if (stringArg(args, 'name')) {
        await showErrorMessage(
          `Cannot ${action}`,
          `There is no Ray cluster named “${named}”.`
        );
        return null;
      }
    }
    const candidates = (store.clusters ?? []).filter(usable);
    if (candidates.length === 0) {
      await showDialog({
        title: `Cannot ${action}`,
        body: (store.clusters ?? []).length
          ? 'No Ray cluster can do that right now.'
          : 'There is no Ray cluster yet. Create one with “New Ray Cluster”.',
        buttons: [Dialog.okButton()]
      });
      return null;
    }
    if (candidates.length === 1) {
      return candidates[0];
    }
    const result = await InputDialog.getItem({
      title: `Which cluster? (${action})`,
      items: candidates.map(c => c.name),
      okLabel: 'Choose'
    });
    return result.button.accept && result.value
      ? (store.get(result.value) ?? null)
      : null;
  }

  const showPanel = () => {
    store.start();
    shell.activateById(sidebar.id);
  };

  commands.addCommand(CommandIDs.showClusters, {
    label: 'Show Ray Clusters',
    caption: 'Open the Ray clusters panel',
    icon: rayClustersIcon,
    execute: showPanel
  });

  commands.addCommand(CommandIDs.showUsage, {
    label: 'Show Ray Usage and Costs',
    caption:
      'What your Ray clusters use and cost, your quota and your monthly budget',
    execute: () => {
      showPanel();
      sidebar.view = { kind: 'list' };
      sidebar.sections = { ...sidebar.sections, usage: true };
      requestAnimationFrame(() =>
        document
          .getElementById('eksray-usage-title')
          ?.scrollIntoView({ block: 'start' })
      );
    }
  });

  commands.addCommand(CommandIDs.refresh, {
    label: 'Refresh Ray Clusters',
    execute: () => store.refresh()
  });

  commands.addCommand(CommandIDs.newCluster, {
    label: 'New Ray Cluster…',
    caption: 'Create a Ray cluster from a form',
    execute: () => {
      showPanel();
      sidebar.view = { kind: 'create' };
    }
  });

  commands.addCommand(CommandIDs.openDashboard, {
    label: args =>
      args.name ? `Open Ray Dashboard of ${args.name}` : 'Open Ray Dashboard',
    caption: 'Open the Ray dashboard in a JupyterLab tab',
    execute: async args => {
      const cluster = await pickCluster(
        args,
        'open the dashboard',
        c => c.dashboardUrl !== null
      );
      if (!cluster) {
        return;
      }
      if (!cluster.dashboardUrl) {
        if (args.restoring) {
          return;
        }
        await showErrorMessage(
          'The dashboard is not up yet',
          `The Ray dashboard of “${cluster.name}” is available once its head node is up (now: ${cluster.phase}).`
        );
        return;
      }
      const existing = tracker.find(w => w.clusterName === cluster.name);
      if (existing) {
        shell.activateById(existing.id);
        return existing;
      }
      const widget = new DashboardWidget({
        name: cluster.name,
        url: cluster.dashboardUrl
      });
      void tracker.add(widget);
      shell.add(widget, 'main');
      shell.activateById(widget.id);
      return widget;
    }
  });

  commands.addCommand(CommandIDs.openDashboardInBrowser, {
    label: 'Open Ray Dashboard in a Browser Tab',
    caption: 'Open the Ray dashboard in a new browser tab',
    execute: async args => {
      // Ask before any await where possible: browsers block pop-ups that do
      // not follow a click directly.
      const named = stringArg(args, 'name') ?? sidebar.selected;
      const known = named ? store.get(named) : undefined;
      if (known?.dashboardUrl) {
        openInBrowser(known.dashboardUrl);
        return;
      }
      const cluster = await pickCluster(
        args,
        'open the dashboard',
        c => c.dashboardUrl !== null
      );
      if (cluster?.dashboardUrl) {
        openInBrowser(cluster.dashboardUrl);
      } else if (cluster) {
        await showErrorMessage(
          'The dashboard is not up yet',
          `The Ray dashboard of “${cluster.name}” is available once its head node is up.`
        );
      }
    }
  });

  commands.addCommand(CommandIDs.scaleCluster, {
    label: 'Scale Ray Cluster…',
    caption:
      'Change the replicas (and bounds) of a worker group; arguments: name, group, replicas, minReplicas, maxReplicas',
    execute: async args => {
      const cluster = await pickCluster(
        args,
        'scale',
        c => !c.readOnly && c.workerGroups.length > 0
      );
      if (!cluster) {
        return;
      }
      let groupName = stringArg(args, 'group');
      if (!groupName) {
        if (cluster.workerGroups.length === 1) {
          groupName = cluster.workerGroups[0].groupName;
        } else {
          const result = await InputDialog.getItem({
            title: `Scale which worker group of ${cluster.name}?`,
            items: cluster.workerGroups.map(g => g.groupName),
            okLabel: 'Choose'
          });
          if (!result.button.accept || !result.value) {
            return;
          }
          groupName = result.value;
        }
      }
      const group = cluster.workerGroups.find(g => g.groupName === groupName);
      if (!group) {
        await showErrorMessage(
          'Cannot scale',
          `“${cluster.name}” has no worker group named “${groupName}”.`
        );
        return;
      }
      const change: IGroupScale = { groupName: group.groupName };
      for (const key of ['replicas', 'minReplicas', 'maxReplicas'] as const) {
        const value = numberArg(args, key);
        if (value !== undefined) {
          change[key] = value;
        }
      }
      if (Object.keys(change).length === 1) {
        const result = await InputDialog.getNumber({
          title: `Replicas of ${group.groupName} (between ${group.minReplicas} and ${group.maxReplicas})`,
          value: group.replicas,
          okLabel: 'Scale'
        });
        if (!result.button.accept || result.value === null) {
          return;
        }
        change.replicas = result.value;
      }
      try {
        store.upsert(await scaleCluster(cluster.name, [change]));
      } catch (error) {
        await showErrorMessage(
          `Could not scale ${cluster.name}`,
          errorText(error)
        );
      }
    }
  });

  commands.addCommand(CommandIDs.suspendCluster, {
    label: args =>
      args.name ? `Suspend Ray Cluster ${args.name}` : 'Suspend Ray Cluster…',
    caption:
      'Stop the Ray nodes of a cluster and keep it; it costs nothing until resumed',
    execute: async args => {
      const cluster = await pickCluster(
        args,
        'suspend a cluster',
        c =>
          !c.readOnly &&
          ['ready', 'scaling', 'starting', 'failed'].includes(c.phase)
      );
      if (!cluster) {
        return;
      }
      const { name } = cluster;
      const answer = await showDialog({
        title: 'Suspend Ray cluster?',
        body: `Every Ray node of “${name}” stops, and with them whatever runs there (tasks, actors, objects in memory). The cluster, its settings and events are kept: resume it to start it again. Kernels connected to it lose their Ray session.`,
        buttons: [
          Dialog.cancelButton(),
          Dialog.warnButton({ label: 'Suspend' })
        ]
      });
      if (!answer.button.accept) {
        return;
      }
      try {
        store.upsert(await suspendCluster(name));
      } catch (error) {
        await showErrorMessage(`Could not suspend ${name}`, errorText(error));
      }
    }
  });

  commands.addCommand(CommandIDs.resumeCluster, {
    label: args =>
      args.name ? `Resume Ray Cluster ${args.name}` : 'Resume Ray Cluster…',
    caption: 'Start a suspended Ray cluster again, with the same settings',
    execute: async args => {
      const cluster = await pickCluster(
        args,
        'resume a cluster',
        c => c.phase === 'suspended'
      );
      if (!cluster) {
        return;
      }
      try {
        store.upsert(await resumeCluster(cluster.name));
      } catch (error) {
        await showErrorMessage(
          `Could not resume ${cluster.name}`,
          errorText(error)
        );
      }
    }
  });

  commands.addCommand(CommandIDs.keepClusterAlive, {
    label: args =>
      args.name
        ? `Keep Ray Cluster ${args.name} Running`
        : 'Keep Ray Cluster Running…',
    caption: 'Say a cluster is in use: its idle time starts again',
    execute: async args => {
      const cluster = await pickCluster(
        args,
        'keep a cluster running',
        c => !['suspending', 'suspended', 'stopping'].includes(c.phase)
      );
      if (!cluster) {
        return;
      }
      try {
        store.upsert(await keepClusterAlive(cluster.name));
      } catch (error) {
        await showErrorMessage(
          `Could not keep ${cluster.name} running`,
          errorText(error)
        );
      }
    }
  });

  commands.addCommand(CommandIDs.deleteCluster, {
    label: args =>
      args.name ? `Delete Ray Cluster ${args.name}…` : 'Delete Ray Cluster…',
    caption: 'Stop a Ray cluster and delete it',
    execute: async args => {
      const cluster = await pickCluster(
        args,
        'delete a cluster',
        c => !c.readOnly
      );
      if (!cluster) {
        return;
      }
      const { name } = cluster;
      const answer = await showDialog({
        title: 'Delete Ray cluster?',
        body: `“${name}” will be stopped and deleted, with every Ray node and everything running on them. This cannot be undone.`,
        buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
      });
      if (!answer.button.accept) {
        return;
      }
      if (sidebar.selected === name) {
        sidebar.view = { kind: 'list' };
      }
      store.markDeleting(name, true);
      try {
        await deleteCluster(name);
        store.remove(name);
        for (const widget of tracker.filter(w => w.clusterName === name)) {
          widget.dispose();
        }
      } catch (error) {
        store.markDeleting(name, false);
        await store.refresh();
        await showErrorMessage(`Could not delete ${name}`, errorText(error));
      }
    }
  });
}

/** The commands shown in the palette (category "Ray"). */
export const PALETTE_COMMANDS = [
  CommandIDs.showClusters,
  CommandIDs.showUsage,
  CommandIDs.newCluster,
  CommandIDs.openDashboard,
  CommandIDs.openDashboardInBrowser,
  CommandIDs.scaleCluster,
  CommandIDs.deleteCluster,
  CommandIDs.suspendCluster,
  CommandIDs.resumeCluster,
  CommandIDs.keepClusterAlive,
  CommandIDs.refresh
];
