/**
 * A real local Ray cluster, driven from the panel as a user would: create it
 * from the form, watch it become ready, scale a group, open its dashboard and
 * delete it.
 *
 * Ray takes 15-60 s to start on a small machine: expectations that wait for
 * Ray have generous timeouts (never fixed sleeps).
 */
import { expect, test } from '@jupyterlab/galata';

import {
  deleteClustersViaAPI,
  screenshotPage,
  screenshotPanel,
  SIDEBAR_ID,
  uniqueName
} from './helpers';

const RAY_TIMEOUT = 180_000;

test.describe('Ray cluster lifecycle', () => {
  const created: string[] = [];

  test.afterEach(async ({ page, request }) => {
    await deleteClustersViaAPI(page, request, created.splice(0));
  });

  test('create, scale, open the dashboard and delete a local cluster', async ({
    page
  }, testInfo) => {
    test.setTimeout(10 * 60_000);
    const name = uniqueName('ui-life');
    created.push(name);

    await page.sidebar.openTab(SIDEBAR_ID);
    const panel = page.locator(`#${SIDEBAR_ID}`);
    await expect(panel.getByText('No Ray clusters yet')).toBeVisible();

    // --- create from the form ----------------------------------------------
    await panel.getByRole('button', { name: 'New cluster' }).last().click();
    const form = panel.getByRole('form', { name: 'New Ray cluster' });
    await expect(form).toBeVisible();
    await form.getByRole('combobox', { name: 'Profile' }).selectOption('cpu-small');
    await form.getByRole('textbox', { name: 'Name', exact: true }).fill(name);
    const group = form.getByRole('group', { name: 'Worker group' });
    await expect(group.getByRole('textbox', { name: 'Group name' })).toHaveValue(
      'cpu'
    );
    await group.getByRole('spinbutton', { name: 'Replicas', exact: true }).fill('1');
    await group.getByRole('spinbutton', { name: 'Max replicas' }).fill('2');
    await form.getByRole('spinbutton', { name: 'CPUs', exact: true }).fill('1');
    await form
      .getByRole('spinbutton', { name: 'Idle timeout (seconds)' })
      .fill('3600');
    await screenshotPanel(page, testInfo, 'form-light');
    await form.getByRole('button', { name: 'Create cluster' }).click();

    // --- it becomes ready --------------------------------------------------
    const detail = panel.getByLabel(`Cluster ${name}`);
    await expect(detail.getByRole('heading', { name })).toBeVisible();
    const badge = detail.locator('.eksray-Detail-header [data-phase]');
    await expect(badge).toHaveText(/^(ready|failed)$/, { timeout: RAY_TIMEOUT });
    if ((await badge.textContent()) === 'failed') {
      // Say why (the panel shows the reason), rather than time out.
      const reason = await detail.getByRole('alert').first().textContent();
      throw new Error(`The cluster failed to start: ${reason}`);
    }
    const nodes = detail.getByRole('table', { name: 'Nodes' });
    await expect(nodes.getByRole('row', { name: /cpu .* alive/ })).toHaveCount(1);
    await expect(detail.getByText('Cluster ' + name + ' is ready')).toBeVisible();
    // Pushed by the server's stream, not polled.
    await expect(panel.getByText('Live updates are unavailable')).toHaveCount(0);

    // Where the start-up time went, from Ray's own logs: head, GCS, dashboard, nodes, ready.
    const startup = detail.getByRole('list', { name: 'Start-up timeline' });
    const steps = startup.getByRole('listitem');
    await expect(steps.first()).toContainText('+0.0 s');
    await expect(steps.first()).toContainText('Head process started');
    await expect(startup.getByText('GCS up: the cluster\'s address answers')).toBeVisible();
    await expect(
      startup.getByText('Head node registered with Ray: drivers can connect')
    ).toBeVisible();
    await expect(startup.getByText(/^Worker \w+ of group cpu registered with Ray$/)).toBeVisible();
    await expect(steps.last()).toContainText('Ready: every group has its workers');
    await screenshotPanel(page, testInfo, 'detail-ready-light');

    // --- scale a group up: min replicas 2 -----------------------------------
    const card = detail.getByRole('listitem', { name: 'Worker group cpu' });
    await card.getByRole('spinbutton', { name: 'Min' }).fill('2');
    await card.getByRole('button', { name: 'Scale' }).click();
    const timeline = detail.getByRole('list', { name: 'Events, newest first' });
    await expect(
      timeline.getByText(/Scaled cpu: .*minReplicas 0→2/)
    ).toBeVisible();
    await expect(
      timeline.getByText('Adding 1 node(s) of type cpu.')
    ).toBeVisible({ timeout: RAY_TIMEOUT });
    await expect(nodes.getByRole('row', { name: /^cpu/ })).toHaveCount(2, {
      timeout: RAY_TIMEOUT
    });
    await expect(nodes.getByRole('row', { name: /cpu .* alive/ })).toHaveCount(
      2,
      { timeout: RAY_TIMEOUT }
    );
    await expect(badge).toHaveText('ready', { timeout: RAY_TIMEOUT });
    await expect(card.getByRole('definition').nth(1)).toHaveText('2'); // ready
    await screenshotPanel(page, testInfo, 'detail-scaled-light');

    // --- the dashboard in a JupyterLab tab ------------------------------------
    await detail.getByRole('button', { name: 'Open dashboard', exact: true }).click();
    const tab = page.getByRole('tab', { name: `Ray: ${name}` });
    await expect(tab).toBeVisible();
    const dashboard = page.frameLocator('.eksray-Dashboard iframe');
    await expect(dashboard.getByText('Overview').first()).toBeVisible({
      timeout: 60_000
    });
    await expect(dashboard.getByText('Cluster').first()).toBeVisible();
    await screenshotPage(page, testInfo, 'dashboard-tab');

    // ... and in a new browser tab.
    const popup = page.context().waitForEvent('page');
    await detail
      .getByRole('button', { name: 'Open dashboard in a new browser tab' })
      .click();
    const browserTab = await popup;
    await browserTab.waitForLoadState();
    expect(browserTab.url()).toContain(`/eksray/clusters/${name}/dashboard/`);
    await expect(browserTab).toHaveTitle(/Ray Dashboard/);
    await browserTab.close();

    // --- suspend (with confirmation), then resume --------------------------
    await detail.getByRole('button', { name: 'Suspend', exact: true }).click();
    const confirm = page.getByRole('dialog');
    await expect(confirm.getByText('Suspend Ray cluster?')).toBeVisible();
    await confirm.getByRole('button', { name: 'Suspend', exact: true }).click();
    await expect(badge).toHaveText('suspended', { timeout: 60_000 });
    await expect(
      detail.getByRole('term').filter({ hasText: /^Suspended$/ })
    ).toBeVisible();
    await expect(nodes.getByRole('row', { name: /alive/ })).toHaveCount(0);
    await expect(
      detail.getByText('No node runs while the cluster is suspended.')
    ).toBeVisible();
    await expect(
      timeline.getByText(`Cluster ${name} is suspended`, { exact: false })
    ).toBeVisible();
    await screenshotPanel(page, testInfo, 'detail-suspended-light');
    await detail.getByRole('button', { name: 'Resume', exact: true }).click();
    await expect(badge).toHaveText('ready', { timeout: RAY_TIMEOUT });
    await expect(nodes.getByRole('row', { name: /cpu .* alive/ })).toHaveCount(
      2,
      { timeout: RAY_TIMEOUT }
    );

    // --- delete, with confirmation ------------------------------------------
    await detail.getByRole('button', { name: 'Delete' }).click();
    const dialog = page.getByRole('dialog');
    await expect(dialog.getByText('Delete Ray cluster?')).toBeVisible();
    await dialog.getByRole('button', { name: 'Delete' }).click();
    // The panel goes back to the list, where the cluster is stopping, then gone.
    const list = panel.getByRole('list', { name: 'Ray clusters' });
    await expect(
      list.getByRole('button', { name: `${name}, stopping` })
    ).toBeVisible();
    await expect(panel.getByText('No Ray clusters yet')).toBeVisible({
      timeout: 120_000
    });
    await expect(tab).toHaveCount(0);
    created.splice(created.indexOf(name), 1);
  });
});
