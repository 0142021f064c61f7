/**
 * The Jobs section, against a fake server: the push stream and the jobs REST
 * endpoints are answered by the test (a running job and a failed one).
 */
import { expect, test } from '@jupyterlab/galata';
import type { Page, WebSocketRoute } from '@playwright/test';

import { fakeCluster, screenshotPanel, SIDEBAR_ID } from './helpers';

const STREAM = /\/eksray\/api\/stream/;
const JOB_LIST = /\/eksray\/api\/jobs(\?.*)?$/;

test.use({ autoGoto: false });

/** Answer the page's stream with no clusters and these jobs; returns the sockets it got. */
async function fakeStream(
  page: Page,
  jobs: () => Record<string, unknown>[],
  up: () => boolean = () => true
): Promise<WebSocketRoute[]> {
  const sockets: WebSocketRoute[] = [];
  await page.routeWebSocket(STREAM, ws => {
    if (!up()) {
      ws.close({ code: 1011, reason: 'down for the test' });
      return;
    }
    sockets.push(ws);
    ws.send(JSON.stringify({ type: 'snapshot', clusters: [] }));
    ws.send(JSON.stringify({ type: 'jobs', jobs: jobs(), warnings: [] }));
  });
  return sockets;
}

/** Count the page's `GET /eksray/api/jobs` (the list: polls and refreshes). */
function countListRequests(page: Page): { count: number } {
  const counter = { count: 0 };
  page.on('request', request => {
    if (request.method() === 'GET' && JOB_LIST.test(request.url())) {
      counter.count++;
    }
  });
  return counter;
}

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
      results: [
        { path: 'out/summary.csv', size: 2048 },
        { path: 'out/2024/my metrics.csv', size: 17 }
      ]
    });
    const deletes: string[] = [];
    const logReads: string[] = [];

    await fakeStream(page, () => [train, broken]);
    await page.route(JOB_LIST, route =>
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

    // Each result downloads through GET /eksray/api/jobs/{id}/results/{path}.
    await expect(
      failed.getByRole('link', { name: 'Download results/out/summary.csv' })
    ).toHaveAttribute(
      'href',
      /^(https?:\/\/[^/]+)?\/([^?#]*\/)?eksray\/api\/jobs\/etl-91bc\/results\/out\/summary\.csv$/
    );
    const nested = failed.getByRole('link', {
      name: 'Download results/out/2024/my metrics.csv'
    });
    await expect(nested).toHaveAttribute('download', 'my metrics.csv');
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      nested.click()
    ]);
    expect(download.suggestedFilename()).toBe('my metrics.csv');
    // (Chromium does not pass `<a download>` requests through page.route.)
    expect(download.url()).toMatch(
      /\/eksray\/api\/jobs\/etl-91bc\/results\/out\/2024\/my%20metrics\.csv$/
    );
    // The page stays where it was.
    await expect(failed).toBeVisible();

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

test.describe('Jobs and their clusters', () => {
  test("a job's cluster opens its details while it exists", async ({
    page
  }) => {
    await page.routeWebSocket(STREAM, ws => {
      ws.send(
        JSON.stringify({
          type: 'snapshot',
          clusters: [fakeCluster('train-7f3a-cluster')]
        })
      );
      ws.send(
        JSON.stringify({
          type: 'jobs',
          jobs: [
            fakeJob('train-7f3a'),
            fakeJob('old-1a2b', {
              state: 'succeeded',
              finishedAt: new Date().toISOString(),
              clusterDeletedAt: new Date().toISOString()
            })
          ],
          warnings: []
        })
      );
    });
    await page.route(
      /\/eksray\/api\/clusters\/train-7f3a-cluster(\?.*)?$/,
      route => route.fulfill({ json: fakeCluster('train-7f3a-cluster') })
    );
    await page.goto();
    await page.sidebar.openTab(SIDEBAR_ID);
    const panel = page.locator(`#${SIDEBAR_ID}`);
    const list = panel.getByRole('list', { name: 'Ray jobs' });
    const old = list.getByRole('listitem', { name: 'Job old-1a2b, succeeded' });
    // A deleted cluster is named, not linked.
    await expect(old).toContainText('on old-1a2b-cluster (deleted)');
    await expect(
      old.getByRole('button', { name: 'old-1a2b-cluster' })
    ).toHaveCount(0);
    await list
      .getByRole('listitem', { name: 'Job train-7f3a, running' })
      .getByRole('button', { name: 'train-7f3a-cluster' })
      .click();
    await expect(
      panel.getByRole('heading', { name: 'train-7f3a-cluster' })
    ).toBeVisible();
  });
});

test.describe('Jobs on the push stream', () => {
  test('a state change arrives on the socket, without polling; polls only while the stream is down', async ({
    page
  }) => {
    test.setTimeout(120_000);
    const train = fakeJob('train-7f3a', { name: 'train' });
    const etl = fakeJob('etl-91bc', { name: 'etl', state: 'pending' });
    let streamUp = true;
    let polled = [fakeJob('train-7f3a', { name: 'train', state: 'failed' })];
    const sockets = await fakeStream(
      page,
      () => [train, etl],
      () => streamUp
    );
    const lists = countListRequests(page);
    await page.route(JOB_LIST, route =>
      route.fulfill({ json: { jobs: polled, warnings: [] } })
    );

    await page.goto();
    await page.sidebar.openTab(SIDEBAR_ID);
    const list = page
      .locator(`#${SIDEBAR_ID}`)
      .getByRole('list', { name: 'Ray jobs' });
    await expect(
      list.getByRole('listitem', { name: 'Job train, running' })
    ).toBeVisible();
    await expect(
      list.getByRole('listitem', { name: 'Job etl, pending' })
    ).toBeVisible();
    expect(sockets).toHaveLength(1);

    // The supervisor records the end: the server pushes the job.
    sockets[0].send(
      JSON.stringify({
        type: 'job',
        job: {
          ...train,
          state: 'succeeded',
          finishedAt: new Date().toISOString()
        }
      })
    );
    await expect(
      list.getByRole('listitem', { name: 'Job train, succeeded' })
    ).toBeVisible();
    // A new job goes on top (newest first); a deleted one goes away.
    sockets[0].send(
      JSON.stringify({
        type: 'job',
        job: fakeJob('new-aaaaa', {
          name: 'new',
          state: 'starting',
          createdAt: new Date().toISOString()
        })
      })
    );
    sockets[0].send(JSON.stringify({ type: 'jobDeleted', id: 'etl-91bc' }));
    await expect(list.getByRole('listitem')).toHaveCount(2);
    await expect(list.getByRole('listitem').first()).toHaveAccessibleName(
      'Job new, starting'
    );
    sockets[0].send(
      JSON.stringify({
        type: 'jobWarnings',
        warnings: ['The S3 bucket gone does not exist.']
      })
    );
    await expect(
      page
        .locator(`#${SIDEBAR_ID}`)
        .getByText('The S3 bucket gone does not exist.')
    ).toBeVisible();
    // All of it came over the socket: the list was never fetched.
    expect(lists.count).toBe(0);

    // The stream goes down: the jobs are polled meanwhile...
    streamUp = false;
    await sockets[0].close({ code: 1011, reason: 'server restart' });
    await expect(
      list.getByRole('listitem', { name: 'Job train, failed' })
    ).toBeVisible({ timeout: 20_000 });
    expect(lists.count).toBeGreaterThan(0);

    // ... until it is back: its jobs replace the polled ones, and polling stops.
    streamUp = true;
    await expect(
      list.getByRole('listitem', { name: 'Job train, running' })
    ).toBeVisible({ timeout: 60_000 });
    const listsWhenLive = lists.count;
    polled = [];
    sockets[sockets.length - 1].send(
      JSON.stringify({ type: 'job', job: { ...train, state: 'stopped' } })
    );
    await expect(
      list.getByRole('listitem', { name: 'Job train, stopped' })
    ).toBeVisible();
    expect(lists.count).toBe(listsWhenLive);
  });
});
