/**
 * The "new cluster" form: rendered from the server's JSON schema, prefilled
 * from a profile, and showing the server's validation errors next to the
 * fields they are about.
 */
import { expect, galata, test } from '@jupyterlab/galata';

import {
  authHeaders,
  deleteClustersViaAPI,
  screenshotPanel,
  SIDEBAR_ID
} from './helpers';

test.describe('New cluster form', () => {
  test.afterEach(async ({ page, request }) => {
    // Nothing may have been created; remove it if it was.
    await deleteClustersViaAPI(page, request, ['bad-name', 'Bad_Name']);
  });

  test('prefills from the profile and the schema', async ({ page }, testInfo) => {
    await page.sidebar.openTab(SIDEBAR_ID);
    const panel = page.locator(`#${SIDEBAR_ID}`);
    await panel.getByRole('button', { name: 'New cluster' }).last().click();
    const form = panel.getByRole('form', { name: 'New Ray cluster' });

    // The server's default profile is preselected and fills the form.
    await expect(form.getByRole('combobox', { name: 'Profile' })).toHaveValue(
      'cpu-small'
    );
    const group = form.getByRole('group', { name: 'Worker group', exact: true });
    await expect(group.getByRole('textbox', { name: 'Group name' })).toHaveValue(
      'cpu'
    );
    await expect(group.getByRole('spinbutton', { name: 'Max replicas' })).toHaveValue(
      '2'
    );
    // Fields the profile leaves out get the schema's defaults.
    await expect(group.getByRole('spinbutton', { name: 'GPUs per worker' })).toHaveValue(
      '0'
    );
    // A name is suggested.
    await expect(form.getByRole('textbox', { name: 'Name', exact: true })).toHaveValue(
      /^ray-\d+$/
    );

    // Choosing another profile refills the form (the name is kept).
    await form.getByRole('textbox', { name: 'Name', exact: true }).fill('mine');
    await form.getByRole('combobox', { name: 'Profile' }).selectOption('tagged');
    await expect(form.getByRole('group', { name: 'Worker group', exact: true })).toHaveCount(2);
    await expect(form.getByRole('textbox', { name: 'Name', exact: true })).toHaveValue(
      'mine'
    );
    // Its custom resource is an advanced field: shown, so nothing is hidden.
    await expect(
      form.getByRole('checkbox', { name: /Show advanced fields/ })
    ).toBeChecked();
    await expect(
      form.getByRole('textbox', { name: 'Name of entry tag' })
    ).toHaveValue('tag');
    await screenshotPanel(page, testInfo, 'form-tagged-light');

    // The administrator's lifecycle bounds for this profile are shown, and
    // only the idle actions they allow are offered.
    const timeout = form.getByRole('spinbutton', { name: 'Idle timeout (minutes)' });
    await expect(timeout).toHaveAttribute('max', '240');
    await expect(timeout).toHaveAttribute('min', '10');
    await expect(
      form.getByText(
        'Your administrator: between 10 and 240; it cannot be turned off; 60 if left empty.'
      )
    ).toBeVisible();
    const action = form.getByRole('combobox', { name: 'When idle' });
    await expect(action.locator('option', { hasText: 'delete' })).toHaveCount(0);
    await expect(action.locator('option', { hasText: 'suspend' })).toHaveCount(1);
    // Another profile has no bounds: nothing said, every action offered.
    await form.getByRole('combobox', { name: 'Profile' }).selectOption('cpu-small');
    await expect(form.getByText(/Your administrator:/)).toHaveCount(0);
    await expect(
      form.getByRole('combobox', { name: 'When idle' }).locator('option', { hasText: 'delete' })
    ).toHaveCount(1);

    // Cancel goes back to the list.
    await form.getByRole('button', { name: 'Cancel' }).click();
    await expect(panel.getByText('No Ray clusters yet')).toBeVisible();
  });

  test('shows the server validation errors under the right fields', async ({
    page,
    request
  }, testInfo) => {
    await page.sidebar.openTab(SIDEBAR_ID);
    const panel = page.locator(`#${SIDEBAR_ID}`);
    await panel.getByRole('button', { name: 'New cluster' }).last().click();
    const form = panel.getByRole('form', { name: 'New Ray cluster' });

    const name = form.getByRole('textbox', { name: 'Name', exact: true });
    await name.fill('Bad_Name');
    const group = form.getByRole('group', { name: 'Worker group', exact: true });
    const min = group.getByRole('spinbutton', { name: 'Min replicas' });
    await min.fill('3');
    await group.getByRole('spinbutton', { name: 'Max replicas' }).fill('2');
    await form.getByRole('button', { name: 'Create cluster' }).click();

    // Each message is announced with its field (aria-describedby) and shown below it.
    await expect(name).toHaveAccessibleDescription(/"Bad_Name" is not a valid name/);
    await expect(min).toHaveAccessibleDescription(
      /minReplicas \(3\) must not exceed maxReplicas \(2\)/
    );
    await expect(
      form.getByRole('alert').filter({ hasText: 'is not a valid name' })
    ).toBeVisible();
    await expect(
      form.getByText('The cluster was not created: 2 fields need fixing.')
    ).toBeVisible();
    // The first field to fix gets the focus.
    await expect(name).toBeFocused();
    await screenshotPanel(page, testInfo, 'form-errors-light');

    // Fixing a value clears its error; the other stays.
    await name.fill('bad-name');
    await expect(name).not.toHaveAccessibleDescription(/not a valid name/);
    await expect(min).toHaveAccessibleDescription(/must not exceed/);

    // Nothing was created.
    const response = await request.get('/eksray/api/clusters', {
      headers: await authHeaders(page)
    });
    expect((await response.json()).clusters).toEqual([]);
  });
});

test.describe('The defaultProfile setting', () => {
  test.use({
    mockSettings: {
      ...galata.DEFAULT_SETTINGS,
      'eksray-jupyter:plugin': { defaultProfile: 'tagged' }
    }
  });

  test('preselects its profile in the form', async ({ page }) => {
    await page.sidebar.openTab(SIDEBAR_ID);
    const panel = page.locator(`#${SIDEBAR_ID}`);
    await panel.getByRole('button', { name: 'New cluster' }).last().click();
    const form = panel.getByRole('form', { name: 'New Ray cluster' });
    await expect(form.getByRole('combobox', { name: 'Profile' })).toHaveValue(
      'tagged'
    );
    await expect(
      form.getByRole('group', { name: 'Worker group', exact: true })
    ).toHaveCount(2);
  });
});
