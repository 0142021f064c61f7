import { expect, test } from '@jupyterlab/galata';
import type { WebSocketRoute } from '@playwright/test';

import { fakeCluster, fakeEvent, screenshotPanel, SIDEBAR_ID } from './helpers';

test.describe('Ray clusters sidebar', () => {
  test('opens and shows the empty state', async ({ page }, testInfo) => {
    await page.sidebar.openTab(SIDEBAR_ID);

    const panel = page.locator(`#${SIDEBAR_ID}`);
    await expect(panel).toBeVisible();
    await expect(panel.getByRole('heading', { name: 'Ray clusters' })).toBeVisible();
    await expect(panel.getByText('No Ray clusters yet')).toBeVisible();
    await expect(panel.getByRole('button', { name: 'New cluster' })).toHaveCount(2);
    await screenshotPanel(page, testInfo, 'empty-light');
  });

  test('is restored with its view after a reload', async ({ page }) => {
    await page.sidebar.openTab(SIDEBAR_ID);
    const panel = page.locator(`#${SIDEBAR_ID}`);
    // JupyterLab saves the workspace (layout and state) a moment after a change.
    const saved = page.waitForRequest(
      request =>
        request.url().includes('/api/workspaces') && request.method() === 'PUT'
    );
    await panel.getByRole('button', { name: 'New cluster' }).first().click();
    await expect(panel.getByRole('form', { name: 'New Ray cluster' })).toBeVisible();
    await saved;

    await page.reload();
    await expect(panel).toBeVisible();
    await expect(panel.getByRole('form', { name: 'New Ray cluster' })).toBeVisible();
  });

  test('commands are in the palette', async ({ page }) => {
    await page.keyboard.press('Control+Shift+C');
    const palette = page.locator('#command-palette');
    await expect(palette).toBeVisible();
    await palette.getByRole('textbox').fill('Ray');
    for (const label of [
      'Show Ray Clusters',
      'New Ray Cluster…',
      'Open Ray Dashboard',
      'Scale Ray Cluster…',
      'Delete Ray Cluster…'
    ]) {
      await expect(
        palette.getByRole('menuitem', { name: label, exact: true })
      ).toBeVisible();
    }
    await palette.getByRole('menuitem', { name: 'New Ray Cluster…' }).click();
    await expect(
      page.getByRole('form', { name: 'New Ray cluster' })
    ).toBeVisible();
  });
});

test.describe('Dark theme', () => {
  test.use({ autoGoto: false });

  test('the panel follows the dark theme', async ({ page }, testInfo) => {
    let server: WebSocketRoute | undefined;
    await page.routeWebSocket(/\/eksray\/api\/stream/, ws => {
      server = ws;
      ws.send(
        JSON.stringify({
          type: 'snapshot',
          clusters: [
            fakeCluster('dark-demo'),
            fakeCluster('starting-one', { phase: 'starting' }),
            fakeCluster('broken', {
              phase: 'failed',
              reason: "The head node's ray process exited (port in use)"
            })
          ]
        })
      );
    });
    await page.route('**/eksray/api/clusters/dark-demo/events*', route =>
      route.fulfill({
        json: {
          events: [
            fakeEvent('e1', 'Cluster dark-demo is ready', {
              source: 'backend',
              reason: 'Ready'
            }),
            fakeEvent('e2', 'Adding 1 node(s) of type cpu.'),
            fakeEvent('e3', 'Worker node 1234abcd of group cpu left the cluster', {
              source: 'ray',
              severity: 'warning',
              reason: 'NodeLeft'
            })
          ]
        }
      })
    );
    await page.goto();
    await page.theme.setDarkTheme();
    await expect(page.locator('body')).toHaveAttribute(
      'data-jp-theme-light',
      'false'
    );

    await page.sidebar.openTab(SIDEBAR_ID);
    const panel = page.locator(`#${SIDEBAR_ID}`);
    const list = panel.getByRole('list', { name: 'Ray clusters' });
    await expect(list.getByRole('button', { name: 'dark-demo, ready' })).toBeVisible();
    expect(server).toBeDefined();

    // The panel is drawn with the theme's colours: dark background, light text.
    const colours = await panel.evaluate(element => {
      const style = getComputedStyle(element);
      const luminance = (colour: string) => {
        const [r, g, b] = (colour.match(/\d+/g) ?? ['0', '0', '0'])
          .slice(0, 3)
          .map(Number);
        return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
      };
      return {
        background: luminance(style.backgroundColor),
        text: luminance(style.color)
      };
    });
    expect(colours.background).toBeLessThan(0.3);
    expect(colours.text).toBeGreaterThan(0.6);
    await screenshotPanel(page, testInfo, 'list-dark');

    await list.getByRole('button', { name: 'dark-demo, ready' }).click();
    const detail = panel.getByLabel('Cluster dark-demo');
    await expect(detail.getByRole('table', { name: 'Nodes' })).toBeVisible();
    await expect(
      detail.getByRole('list', { name: 'Events, newest first' }).getByRole('listitem')
    ).toHaveCount(3);
    await screenshotPanel(page, testInfo, 'detail-dark');

    await panel.getByRole('button', { name: 'New cluster' }).click();
    const form = panel.getByRole('form', { name: 'New Ray cluster' });
    await expect(form.getByRole('textbox', { name: 'Name', exact: true })).toBeVisible();
    await screenshotPanel(page, testInfo, 'form-dark');
  });
});
