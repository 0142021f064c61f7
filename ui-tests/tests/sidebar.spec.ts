import { expect, test } from '@jupyterlab/galata';

test.describe('Ray clusters sidebar', () => {
  test('opens and shows the empty state', async ({ page }) => {
    await page.sidebar.openTab('eksray-sidebar');

    const panel = page.locator('#eksray-sidebar');
    await expect(panel).toBeVisible();
    await expect(panel.locator('.eksray-Panel-title')).toHaveText(
      'Ray clusters'
    );
    await expect(panel.getByText('No Ray clusters yet')).toBeVisible();
  });
});
