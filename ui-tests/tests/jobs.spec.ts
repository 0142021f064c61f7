/**
 * The Jobs section, against a fake server: the jobs REST endpoints are
 * answered by the test (a running job and a failed one).
 */
import { expect, test } from '@jupyterlab/galata';

import { screenshotPanel, SIDEBAR_ID } from './helpers';

test.use({ autoGoto: false });

/** A job as the server reports it (`Job.to_dict`). */
function fakeJob(
  id: string,
  overrides: Record<string, unknown> = {}
): Record<string, unknown> {
  const now = Date.now();
  const iso = (msAgo: number) => new Date(now - msAgo).toISOString();
  return {
    id,
    name: id,
    owner: 'tester',
    state: 'running',
    reason: null,
    createdAt: iso(200_000),
    updatedAt: iso(60_000),
    startedAt: iso(190_000),
    finishedAt: null,
    spec: { name: id, entrypoint: 'python train.py' },
    clusterName: `${id}-cluster`,
    clusterCreated: true,
    clusterDeletedAt: null,
    attempts: [],
    history: [],
    store: { type: 'local' },
    location: `/tmp/eksray/jobs/tester/${id}`,
    results: [],
    runner: 'local',
    ...overrides
  };
}

test.describe('Jobs', () => {
  test('lists jobs, opens a log and stops a running job', async ({
    page
  }, testInfo) => {
    let train = fakeJob('train-7f3a', { name: 'train' });
    const broken = fakeJob('etl-91bc', {
      name: 'etl',
      state: 'failed',
      reason: 'The entrypoint exited with code 1: ModuleNotFoundError: pandas',
      startedAt: new Date(Date.now() - 400_000).toISOString(),
      finishedAt: new Date(Date.now() - 340_000).toISOString(),
      clusterName: 'shared',
      clusterCreated: false,
      results: [{ path: 'out/summary.csv', size: 2048 }]
    });
    const deletes: string[] = [];
    const logReads: string[] = [];

    await page.route(/\/eksray\/api\/jobs(\?.*)?$/, route =>
      route.fulfill({ json: { jobs: [train, broken], warnings: [] } })
    );
    await page.route(/\/eksray\/api\/jobs\/[^/?]+\/logs(\?.*)?$/, route => {
      const url = new URL(route.request().url());
      logReads.push(url.search);
      const offset = Number(url.searchParams.get('offset') ?? '0');
      const text =
        offset === 0
          ? '[eksray] submitted train-7f3a-1\nepoch 1 loss=0.93\n'
          : '';
      return route.fulfill({
        status: 200,
        contentType: 'text/plain; charset=utf-8',
        headers: {
          'X-Next-Offset': String(offset + Buffer.byteLength(text)),
          'X-Job-State': String(train.state)
        },
        body: text
      });
    });
    await page.route(/\/eksray\/api\/jobs\/[^/?]+(\?.*)?$/, route => {
      const request = route.request();
      const id = decodeURIComponent(
        new URL(request.url()).pathname.split('/').pop() ?? ''
      );
      if (request.method() === 'DELETE') {
        deletes.push(id);
        train = {
          ...train,
          state: 'stopped',
          reason: 'Stopped on request',
          finishedAt: new Date().toISOString()
        };
        return route.fulfill({ json: train });
      }
      return route.fulfill({ json: id === 'etl-91bc' ? broken : train });
    });

    await page.goto();
    await page.sidebar.openTab(SIDEBAR_ID);
    const panel = page.locator(`#${SIDEBAR_ID}`);
    const list = panel.getByRole('list', { name: 'Ray jobs' });
    const running = list.getByRole('listitem', { name: 'Job train, running' });
    const failed = list.getByRole('listitem', { name: 'Job etl, failed' });
    await expect(running).toBeVisible();
    await expect(failed).toBeVisible();
    await expect(running.locator('[data-state="running"]')).toHaveText(
      'running'
    );
    await expect(failed.locator('[data-state="failed"]')).toHaveText('failed');
    await expect(running).toContainText('on train-7f3a-cluster');
    await expect(failed).toContainText('1 min 0 s');
    await expect(failed).toContainText('ModuleNotFoundError: pandas');
    // Only a running job can be stopped.
    await expect(failed.getByRole('button', { name: /^Stop/ })).toHaveCount(0);

    // Where the results are.
    await failed.getByRole('button', { name: 'Results of etl' }).click();
    await expect(failed).toContainText('/tmp/eksray/jobs/tester/etl-91bc');
    await expect(failed).toContainText('results/out/summary.csv');
    await screenshotPanel(page, testInfo, 'jobs-light');

    // The log in a main-area tab, followed with ?offset= while the job runs.
    await running
      .getByRole('button', { name: 'View the log of train' })
      .click();
    const tab = page.locator('#eksray-job-log-train-7f3a');
    await expect(tab).toBeVisible();
    await expect(tab.locator('pre')).toContainText('epoch 1 loss=0.93');
    await expect(tab).toContainText('The job is running');
    await expect.poll(() => logReads.length).toBeGreaterThan(1);
    // Appended once, however often it is read.
    await expect(tab.locator('pre')).toHaveText(
      /^\[eksray\] submitted train-7f3a-1\s+epoch 1 loss=0\.93\s*$/
    );
    await expect
      .poll(() => logReads.some(q => /offset=[1-9]/.test(q)))
      .toBe(true);

    // Stop, after a confirmation.
    await running.getByRole('button', { name: 'Stop train' }).click();
    const dialog = page.locator('.jp-Dialog');
    await expect(dialog).toContainText('Stop Ray job?');
    await dialog.getByRole('button', { name: 'Stop' }).click();
    await expect.poll(() => deletes).toEqual(['train-7f3a']);
    await expect(
      list.getByRole('listitem', { name: 'Job train, stopped' })
    ).toBeVisible();
    await expect(list.getByRole('button', { name: 'Stop train' })).toHaveCount(
      0
    );
  });
});
