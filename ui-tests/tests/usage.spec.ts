/**
 * What clusters use and cost: the Usage section of the list, the utilisation chart, the
 * node table and the cost line of a cluster's details, budget notifications.
 *
 * Against the real server where it can be driven there: the local backend, started without
 * prices (so resource-hours, never "$0.00"), with a quota and a monthly budget
 * (jupyter_server_test_config.py); the clusters are created through the REST API and
 * deleted after each test. Faked only what the test server cannot be brought to quickly:
 * a budget message on the stream (the real stream passes through, one message is added),
 * and prices, GPUs, Kubernetes hosts and a spent budget (the stream and GET /usage answered
 * by the test).
 */
import * as fs from 'fs';

import { expect, test } from '@jupyterlab/galata';
import type { APIRequestContext, Page, WebSocketRoute } from '@playwright/test';

import {
  authHeaders,
  deleteClustersViaAPI,
  fakeCluster,
  screenshotPage,
  screenshotPanel,
  SIDEBAR_ID,
  uniqueName
} from './helpers';

const RAY_TIMEOUT = 180_000;
const STREAM = /\/eksray\/api\/stream/;
const USAGE = /\/eksray\/api\/usage(\?.*)?$/;
const GIB = 1024 ** 3;

test.use({ autoGoto: false });

/** A cluster of one head node (1 CPU) that may grow by one 1-CPU worker. */
async function createSmallCluster(
  page: Page,
  request: APIRequestContext,
  name: string
): Promise<void> {
  const response = await request.post('/eksray/api/clusters', {
    headers: await authHeaders(page),
    data: {
      name,
      profile: 'cpu-small',
      workerGroups: [
        { groupName: 'cpu', replicas: 0, minReplicas: 0, maxReplicas: 1, cpu: 1 }
      ]
    },
    timeout: 60_000
  });
  expect(response.status(), await response.text()).toBe(201);
}

test.describe('Usage, against the real server', () => {
  const created: string[] = [];

  test.afterEach(async ({ page, request }) => {
    await deleteClustersViaAPI(page, request, created.splice(0));
  });

  test('a cluster in resource-hours, the quota, the budget, CSV export, utilisation', async ({
    page,
    request
  }, testInfo) => {
    test.setTimeout(5 * 60_000);
    const name = uniqueName('ui-usage');
    await page.goto();
    await page.sidebar.openTab(SIDEBAR_ID);
    const panel = page.locator(`#${SIDEBAR_ID}`);
    const section = panel.getByRole('region', { name: 'Usage' });
    await expect(section.getByText('No cluster runs')).toBeVisible();
    // The test server's quota and budget (no prices: nothing spent).
    const budget = section.getByRole('meter', { name: /^Monthly budget/ });
    await expect(budget).toHaveAttribute(
      'aria-valuetext',
      '$0.00 of $100.00 spent (0%)'
    );

    created.push(name);
    await createSmallCluster(page, request, name);
    // The stream brings the new cluster, and the section reads the usage again at once.
    const item = section.getByRole('listitem', { name: `Usage of ${name}` });
    await expect(item).toBeVisible({ timeout: 15_000 });
    const list = panel.getByRole('list', { name: 'Ray clusters' });
    await expect(list.getByRole('button', { name: `${name}, ready` })).toBeVisible({
      timeout: RAY_TIMEOUT
    });
    await expect(item.locator('[data-phase]')).toHaveText('ready');

    // What Ray has in use of what the running head may schedule (1 CPU, 2 GiB a CPU).
    const cpu = item.getByRole('meter', { name: 'CPU' });
    await expect(cpu).toContainText('0 / 1');
    await expect(cpu).toHaveAttribute('aria-valuetext', '0 of 1 (0%)');
    await expect(item.getByRole('meter', { name: 'Memory' })).toContainText('0 / 2 GiB');
    await expect(item.getByRole('meter', { name: 'GPU' })).toHaveCount(0);
    // No prices: resource-hours, not dollars.
    await expect(item).toContainText(/\d+\.\d\d CPU-h · \d+\.\d GiB-h since created/);
    await expect(item).not.toContainText('$');
    await expect(section.getByText('No prices are set')).toBeVisible();
    const totals = section.getByLabel('Total usage');
    await expect(totals).toContainText(/Since created\s*\d+\.\d\d CPU-h · \d+\.\d GiB-h/);
    await expect(totals).not.toContainText('$');

    // The quota counts each cluster at its maximum (head + 1 worker); only limits set are shown.
    const quota = section.getByRole('group', { name: 'Quota' });
    await expect(quota.getByRole('meter', { name: 'CPUs' })).toContainText('2 / 16');
    await expect(quota.getByRole('meter', { name: 'Memory' })).toContainText('4 / 64 GiB');
    await expect(quota.getByRole('meter')).toHaveCount(2);
    await expect(section.locator('.eksray-Budget')).toHaveAttribute('data-state', 'ok');
    await screenshotPanel(page, testInfo, 'usage-light');

    // Export CSV: the report from GET /usage?format=csv, downloaded with the page's login.
    const link = section.getByRole('link', { name: 'Export CSV' });
    await expect(link).toHaveAttribute('href', /\/eksray\/api\/usage\?format=csv$/);
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      link.click()
    ]);
    expect(download.suggestedFilename()).toBe('eksray-usage.csv');
    const csv = fs.readFileSync(await download.path(), 'utf-8');
    const [header, ...rows] = csv.trim().split('\n');
    expect(header).toMatch(/^name,phase,cpu,gpu,memoryGiB,/);
    expect(header.split(',')).toContain('cpuHours');
    expect(rows.filter(row => row.startsWith(`${name},ready,1,0,2,`))).toHaveLength(1);
    await expect(section).toBeVisible(); // the page stayed

    // The cluster's details: its usage since created, the utilisation chart, the nodes.
    await item.getByRole('button', { name, exact: true }).click();
    const detail = panel.getByLabel(`Cluster ${name}`);
    await expect(detail.getByRole('heading', { name })).toBeVisible();
    const usageTerm = detail.getByRole('term').filter({ hasText: /^Usage$/ });
    await expect(usageTerm).toBeVisible();
    await expect(detail.locator('.eksray-Facts-cost')).toHaveText(
      /^\d+\.\d\d CPU-h · \d+\.\d GiB-h since created$/
    );
    const chart = detail.getByRole('img', { name: /^Utilisation over time/ });
    await expect(chart).toBeVisible();
    await expect(chart).toHaveAttribute(
      'aria-label',
      /; now CPU \d+%, memory \d+%, object store \d+%$/
    );
    const legend = detail.getByLabel('Utilisation now');
    await expect(legend.locator('[data-series]')).toHaveText([
      /^CPU \d+%$/,
      /^memory \d+%$/,
      /^object store \d+%$/
    ]);
    const nodes = detail.getByRole('table', { name: 'Nodes' });
    const head = nodes.getByRole('row', { name: /^head/ });
    await expect(head).toContainText('1 CPU · 2.0 GiB');
    await expect(head).toContainText('CPU0/1');
    await expect(head).toContainText('mem0/2 GiB');
    await expect(nodes.getByRole('columnheader', { name: 'Host' })).toHaveCount(0);
    await screenshotPanel(page, testInfo, 'detail-usage-light');

    await page.theme.setDarkTheme();
    await expect(page.locator('body')).toHaveAttribute('data-jp-theme-light', 'false');
    await expect(chart).toBeVisible();
    await screenshotPanel(page, testInfo, 'detail-usage-dark');
    await panel.getByRole('button', { name: 'All clusters' }).click();
    await expect(section.getByRole('listitem', { name: `Usage of ${name}` })).toBeVisible();
    await screenshotPanel(page, testInfo, 'usage-dark');
    await page.theme.setLightTheme();
  });

  test('a create past the quota is refused with the whole reason', async ({
    page
  }, testInfo) => {
    await page.goto();
    await page.sidebar.openTab(SIDEBAR_ID);
    const panel = page.locator(`#${SIDEBAR_ID}`);
    await panel.getByRole('button', { name: 'New cluster' }).last().click();
    const form = panel.getByRole('form', { name: 'New Ray cluster' });
    const name = uniqueName('ui-quota');
    created.push(name); // in case it is not refused
    await form.getByRole('textbox', { name: 'Name', exact: true }).fill(name);
    const group = form.getByRole('group', { name: 'Worker group', exact: true });
    await group.getByRole('spinbutton', { name: 'Max replicas' }).fill('20');
    await form.getByRole('button', { name: 'Create cluster' }).click();

    const alert = form.getByRole('alert').filter({ hasText: 'exceed your quota' });
    await expect(alert).toHaveText(
      `The cluster was not created. Creating cluster '${name}' would exceed your quota — ` +
        'CPUs: 21 would exceed the limit of 16 (default; in use now: 0). Delete or suspend ' +
        'a cluster, ask for less (fewer workers, a lower maxReplicas), or ask your ' +
        'administrator for a larger quota. Suspended clusters count only as clusters.'
    );
    // All of it readable: wrapped, nothing cut off or scrolled away sideways.
    const fits = await alert.evaluate(
      element =>
        element.scrollWidth <= element.clientWidth &&
        getComputedStyle(element).overflow !== 'hidden'
    );
    expect(fits).toBe(true);
    await screenshotPanel(page, testInfo, 'form-quota-light');
  });

  test('a budget message on the stream is a notification, shown once', async ({
    page
  }, testInfo) => {
    // The real stream passes through; the test adds the budget messages.
    const sockets: WebSocketRoute[] = [];
    await page.routeWebSocket(STREAM, ws => {
      ws.connectToServer();
      sockets.push(ws);
    });
    await page.goto();
    await page.sidebar.openTab(SIDEBAR_ID);
    const panel = page.locator(`#${SIDEBAR_ID}`);
    await expect(panel.getByText('No Ray clusters yet')).toBeVisible();
    expect(sockets).toHaveLength(1);

    const warning = {
      type: 'budget',
      state: 'warning',
      message:
        'You have spent $80.00 of your $100.00 budget for 2026-12 (80%). At 100 % new clusters are refused.',
      month: '2026-12',
      spentDollars: 80,
      monthlyBudget: 100,
      fraction: 0.8
    };
    sockets[0].send(JSON.stringify(warning));
    const toasts = page.locator('.Toastify__toast');
    const warned = toasts.filter({ hasText: 'You have spent $80.00' });
    await expect(warned).toHaveText(/You have spent \$80\.00 of your \$100\.00 budget for 2026-12 \(80%\)\. At 100 % new clusters are refused\./);
    await expect(warned).toHaveClass(/Toastify__toast--warning/);

    // The same message again (another server, a reconnection) is not shown twice; the
    // message at 100 % is an error, cut to the sentences that fit a toast (140 characters).
    sockets[0].send(JSON.stringify(warning));
    sockets[0].send(
      JSON.stringify({
        ...warning,
        state: 'exceeded',
        message:
          'You have spent $1,234.56: your $1,000.00 budget for 2026-12 is used up. New clusters and resumes are refused until next month or a larger budget.',
        spentDollars: 1234.56,
        monthlyBudget: 1000,
        fraction: 1.2346
      })
    );
    const exceeded = toasts.filter({ hasText: 'is used up' });
    await expect(exceeded).toContainText(
      'You have spent $1,234.56: your $1,000.00 budget for 2026-12 is used up.'
    );
    await expect(exceeded).toHaveClass(/Toastify__toast--error/);
    await expect(warned).toHaveCount(1);
    // (Once they have slid in.)
    await expect(exceeded).toBeInViewport({ ratio: 1 });
    await expect(warned).toBeInViewport({ ratio: 1 });
    await screenshotPage(page, testInfo, 'budget-notices-light');

    // "Show usage" unfolds the Usage section in the panel.
    await panel.getByRole('button', { name: 'Usage', exact: true }).click();
    const section = panel.getByRole('region', { name: 'Usage' });
    await expect(section.getByRole('button', { name: 'Usage' })).toHaveAttribute(
      'aria-expanded',
      'false'
    );
    await exceeded.getByRole('button', { name: 'Show usage' }).click();
    await expect(section.getByRole('button', { name: 'Usage' })).toHaveAttribute(
      'aria-expanded',
      'true'
    );
    await expect(section.getByRole('meter', { name: /^Monthly budget/ })).toBeVisible();
  });
});

// --- faked server: prices, GPUs, hosts, a spent budget ------------------------------------

/** A node of a kuberay cluster with what Ray uses on it. */
function kubeNode(
  id: string,
  kind: 'head' | 'worker',
  resources: Record<string, number>,
  used: Record<string, number>,
  host: string,
  instanceType: string
): Record<string, unknown> {
  return {
    id,
    group: kind === 'head' ? 'head' : 'gpu',
    kind,
    state: 'alive',
    resources,
    used,
    utilization: Object.fromEntries(
      Object.entries(resources).map(([k, v]) => [k, v ? (used[k] ?? 0) / v : 0])
    ),
    address: `10.0.1.${id.length}`,
    startedAt: null,
    host,
    instanceType
  };
}

/** A GPU cluster on Kubernetes: a CPU head, two GPU workers; `gpuUsed` per worker. */
function gpuCluster(cpuUsed: number, gpuUsed: number): Record<string, unknown> {
  const worker = (i: number) =>
    kubeNode(
      `worker${i}`,
      'worker',
      { CPU: 4, GPU: 1, memory: 32 * GIB, object_store_memory: 9 * GIB },
      {
        CPU: cpuUsed,
        GPU: gpuUsed,
        memory: 15 * GIB,
        object_store_memory: 1.75 * GIB
      },
      `ip-10-0-1-2${i}.ec2.internal`,
      'g5.2xlarge'
    );
  return fakeCluster('gpu-train', {
    backend: 'kuberay',
    namespace: 'ml',
    workerGroups: [
      {
        groupName: 'gpu',
        replicas: 2,
        desired: 2,
        ready: 2,
        minReplicas: 0,
        maxReplicas: 2,
        resources: { CPU: 4, GPU: 1 }
      }
    ],
    nodes: [
      kubeNode(
        'head0',
        'head',
        { CPU: 1, memory: 8 * GIB, object_store_memory: 2 * GIB },
        { CPU: 0, memory: 0, object_store_memory: 0.5 * GIB },
        'ip-10-0-0-5.ec2.internal',
        'm6i.large'
      ),
      worker(1),
      worker(2)
    ]
  });
}

const resources = (cpu: number, gpu: number, memoryGiB: number, objectStoreGiB: number) => ({
  cpu,
  gpu,
  memoryGiB,
  objectStoreGiB
});

/** A usage report with prices: one GPU cluster running, one suspended; the budget spent. */
function pricedReport(): Record<string, unknown> {
  const createdAt = new Date(Date.now() - 30 * 3600_000).toISOString();
  return {
    owner: 'tester',
    backend: 'kuberay',
    at: new Date().toISOString(),
    currency: 'USD',
    prices: { cpuHour: 0.05, gpuHour: 1.2, memoryGiBHour: 0.004 },
    clusters: [
      {
        name: 'gpu-train',
        phase: 'ready',
        suspended: false,
        createdAt,
        resources: resources(9, 2, 72, 20),
        used: resources(6, 2, 30, 4),
        utilization: { cpu: 0.667, gpu: 1, memoryGiB: 0.417, objectStoreGiB: 0.2 },
        maxResources: resources(9, 2, 72, 20),
        dollarsPerHour: 4.236,
        accruedDollars: 121.5,
        monthDollars: 100.2,
        resourceHours: { cpu: 256.5, gpu: 57, memoryGiB: 2052 },
        priceBasis: ['AWS on-demand price of the instance type'],
        priceUnknown: []
      },
      {
        name: 'paused',
        phase: 'suspended',
        suspended: true,
        createdAt,
        resources: resources(0, 0, 0, 0),
        used: resources(0, 0, 0, 0),
        utilization: {},
        maxResources: resources(4, 0, 16, 4),
        dollarsPerHour: 0,
        accruedDollars: 3.2,
        monthDollars: 3.2,
        resourceHours: { cpu: 40, gpu: 0, memoryGiB: 160 },
        priceBasis: [],
        priceUnknown: []
      }
    ],
    totals: {
      resources: resources(9, 2, 72, 20),
      used: resources(6, 2, 30, 4),
      dollarsPerHour: 4.236,
      accruedDollars: 124.7,
      resourceHours: { cpu: 296.5, gpu: 57, memoryGiB: 2212 },
      closedDollars: 409,
      closedResourceHours: { cpu: 900, gpu: 300, memoryGiB: 4000 }
    },
    quota: {
      limits: {
        maxClusters: 3,
        maxCpus: 16,
        maxGpus: 2,
        maxMemoryGiB: null,
        maxDollarsPerHour: 10,
        monthlyBudget: 500
      },
      sources: {
        maxClusters: 'default',
        maxCpus: 'group ml',
        maxGpus: 'group ml',
        maxMemoryGiB: 'none set',
        maxDollarsPerHour: 'default',
        monthlyBudget: 'user tester'
      },
      groups: ['ml'],
      usage: {
        clusters: 2,
        cpu: 13,
        gpu: 2,
        memoryGiB: 88,
        objectStoreGiB: 24,
        dollarsPerHour: 4.5
      }
    },
    budget: {
      month: '2026-12',
      spentDollars: 512.4,
      monthlyBudget: 500,
      fraction: 1.0248,
      state: 'exceeded'
    }
  };
}

/** Drag the handle between the left sidebar and the main area `by` pixels to the right. */
async function widenSidebar(page: Page, by: number): Promise<void> {
  const stack = await page.locator('#jp-left-stack').boundingBox();
  expect(stack).not.toBeNull();
  const width = stack!.width;
  const handle = page
    .locator('#jp-main-split-panel > .lm-SplitPanel-handle')
    .first();
  const box = await handle.boundingBox();
  expect(box).not.toBeNull();
  const x = box!.x + box!.width / 2;
  const y = box!.y + box!.height / 2;
  await page.mouse.move(x, y);
  await page.mouse.down();
  await page.mouse.move(x + by, y, { steps: 5 });
  await page.mouse.up();
  await expect
    .poll(async () => (await page.locator('#jp-left-stack').boundingBox())?.width)
    .toBeGreaterThan(width + by / 2);
}

test.describe('Usage, against a faked server', () => {
  test('dollars, quota near its limits, a spent budget, a GPU cluster on Kubernetes', async ({
    page
  }, testInfo) => {
    let server: WebSocketRoute | undefined;
    await page.routeWebSocket(STREAM, ws => {
      server = ws;
      ws.send(
        JSON.stringify({
          type: 'snapshot',
          clusters: [
            gpuCluster(3, 1),
            fakeCluster('paused', { phase: 'suspended', nodes: [] })
          ]
        })
      );
      ws.send(JSON.stringify({ type: 'jobs', jobs: [], warnings: [] }));
    });
    await page.route(USAGE, route => route.fulfill({ json: pricedReport() }));
    await page.route('**/eksray/api/clusters/*/events*', route =>
      route.fulfill({ json: { events: [] } })
    );
    await page.goto();
    await page.sidebar.openTab(SIDEBAR_ID);
    const panel = page.locator(`#${SIDEBAR_ID}`);
    const section = panel.getByRole('region', { name: 'Usage' });

    const gpu = section.getByRole('listitem', { name: 'Usage of gpu-train' });
    await expect(gpu).toContainText('$4.24/h now · $121.50 since created');
    await expect(gpu.getByRole('meter', { name: 'GPU' })).toContainText('2 / 2');
    await expect(gpu.getByRole('meter', { name: 'Memory' })).toContainText('30 / 72 GiB');
    const paused = section.getByRole('listitem', { name: 'Usage of paused' });
    await expect(paused).toContainText('Suspended: costs nothing now · $3.20 since created');
    await expect(paused.getByRole('meter')).toHaveCount(0);
    await expect(section.getByText('No prices are set')).toHaveCount(0);
    await expect(section.getByLabel('Total usage')).toContainText('$4.24/h');
    await expect(section.getByLabel('Total usage')).toContainText('$124.70');
    await expect(section.getByLabel('Total usage')).toContainText('$409.00 this month');

    // Quota: each limit set, coloured by how full it is.
    const quota = section.getByRole('group', { name: 'Quota' });
    await expect(quota.getByRole('meter')).toHaveCount(4);
    await expect(quota.getByRole('meter', { name: 'Clusters' })).toHaveAttribute('data-state', 'ok');
    await expect(quota.getByRole('meter', { name: 'CPUs' })).toHaveAttribute('data-state', 'warning');
    await expect(quota.getByRole('meter', { name: 'GPUs' })).toHaveAttribute('data-state', 'exceeded');
    await expect(quota.getByRole('meter', { name: 'Cost' })).toContainText('$4.50 / $10.00 per hour');
    await expect(quota.getByRole('meter', { name: 'CPUs' })).toHaveAttribute(
      'title',
      'CPUs: 13 of 16 (81%). Limit: group ml'
    );
    // The budget, used up.
    const budget = section.locator('.eksray-Budget');
    await expect(budget).toHaveAttribute('data-state', 'exceeded');
    await expect(budget).toContainText('$512.40 of $500.00 spent (102%)');
    await expect(budget.getByRole('status')).toHaveText(
      'The budget is used up: new clusters and resumes are refused until next month or a larger budget.'
    );
    await screenshotPanel(page, testInfo, 'usage-priced-light');

    // The GPU cluster's details: its cost, GPU utilisation over time, its Kubernetes hosts.
    await gpu.getByRole('button', { name: 'gpu-train' }).click();
    const detail = panel.getByLabel('Cluster gpu-train');
    await expect(detail.locator('.eksray-Facts-cost')).toHaveText(
      '$4.24/h now · $121.50 since created'
    );
    const legend = detail.getByLabel('Utilisation now');
    // (3+3)/9 CPUs, (1+1)/2 GPUs, 30/72 GiB memory, 4/20 GiB object store.
    await expect(legend.locator('[data-series]')).toHaveText([
      'CPU 67%',
      'GPU 100%',
      'memory 42%',
      'object store 20%'
    ]);
    server!.send(JSON.stringify({ type: 'cluster', cluster: gpuCluster(4, 0.25) }));
    await expect(legend.locator('[data-series]')).toHaveText([
      'CPU 89%',
      'GPU 25%',
      'memory 42%',
      'object store 20%'
    ]);
    const chart = detail.getByRole('img', { name: /^Utilisation over time/ });
    await expect(chart).toHaveAttribute(
      'aria-label',
      'Utilisation over time, 0 to 100%; now CPU 89%, GPU 25%, memory 42%, object store 20%'
    );
    // Two samples: each series is a line with a step.
    await expect(chart.locator('.eksray-Chart-line-gpu')).toHaveAttribute('d', /H.*V.*H/);

    // Its nodes: what Ray schedules and uses on each; the Kubernetes node and instance
    // type under the address in a narrow sidebar, in a column of their own in a wide one.
    const nodes = detail.getByRole('table', { name: 'Nodes' });
    const worker = nodes.getByRole('row', { name: /^gpu/ }).first();
    await expect(worker).toContainText('4 CPU · 1 GPU · 32 GiB');
    await expect(worker).toContainText('GPU0.25/1');
    await expect(worker).toContainText('obj1.8/9 GiB');
    // (In the page twice, one of them shown: under the address, or in the Host column.)
    const host = worker.getByText('ip-10-0-1-21.ec2.internal').filter({ visible: true });
    await expect(host).toHaveCount(1);
    await expect(worker.getByText('g5.2xlarge').filter({ visible: true })).toHaveCount(1);
    await expect(nodes.getByRole('columnheader', { name: 'Host' })).toBeHidden();
    await screenshotPanel(page, testInfo, 'detail-gpu-light');
    await widenSidebar(page, 260);
    await expect(nodes.getByRole('columnheader', { name: 'Host' })).toBeVisible();
    await expect(worker.getByRole('cell').last()).toHaveText(
      'ip-10-0-1-21.ec2.internalg5.2xlarge'
    );
    await expect(host).toHaveCount(1);
    await screenshotPanel(page, testInfo, 'detail-gpu-wide-light');

    await page.theme.setDarkTheme();
    await expect(page.locator('body')).toHaveAttribute('data-jp-theme-light', 'false');
    await screenshotPanel(page, testInfo, 'detail-gpu-dark');
    await panel.getByRole('button', { name: 'All clusters' }).click();
    await expect(budget).toBeVisible();
    await screenshotPanel(page, testInfo, 'usage-priced-dark');
    await page.theme.setLightTheme();
  });

  test('reads every 10 s only while shown and unfolded, and at once when a cluster changes', async ({
    page
  }) => {
    // The page's clock runs as usual but can be moved on: no waiting for the 10 s.
    await page.clock.install();
    const reads: string[] = [];
    let server: WebSocketRoute | undefined;
    await page.route(USAGE, route => {
      reads.push(route.request().url());
      return route.fulfill({ json: pricedReport() });
    });
    await page.routeWebSocket(STREAM, ws => {
      server = ws;
    });
    await page.goto();
    await page.sidebar.openTab(SIDEBAR_ID);
    const panel = page.locator(`#${SIDEBAR_ID}`);
    const section = panel.getByRole('region', { name: 'Usage' });

    // Open and shown: a read at once.
    await expect.poll(() => reads.length).toBe(1);
    await expect(section.getByRole('listitem', { name: 'Usage of gpu-train' })).toBeVisible();
    // The clusters arrive: a read at once.
    expect(server).toBeDefined();
    server!.send(JSON.stringify({ type: 'snapshot', clusters: [gpuCluster(3, 1)] }));
    server!.send(JSON.stringify({ type: 'jobs', jobs: [], warnings: [] }));
    await expect.poll(() => reads.length).toBe(2);

    // Then every 10 s.
    await page.clock.fastForward(9_000);
    expect(reads.length).toBe(2);
    await page.clock.fastForward(1_500);
    await expect.poll(() => reads.length).toBe(3);

    // Utilisation changes do not change the cost: no read. A scale does: a read at once.
    server!.send(JSON.stringify({ type: 'cluster', cluster: gpuCluster(4, 0.5) }));
    const scaled = gpuCluster(4, 0.5);
    (scaled.workerGroups as Record<string, unknown>[])[0].desired = 3;
    server!.send(JSON.stringify({ type: 'cluster', cluster: scaled }));
    await expect.poll(() => reads.length).toBe(4);

    // Folded: no reads.
    const toggle = section.getByRole('button', { name: 'Usage' });
    await toggle.click();
    await expect(toggle).toHaveAttribute('aria-expanded', 'false');
    await page.clock.fastForward(35_000);
    expect(reads.length).toBe(4);
    // Unfolded: a read at once.
    await toggle.click();
    await expect.poll(() => reads.length).toBe(5);

    // The panel hidden: no reads; shown again: a read at once.
    await page.sidebar.close('left');
    await expect(panel).toBeHidden();
    await page.clock.fastForward(35_000);
    expect(reads.length).toBe(5);
    await page.sidebar.openTab(SIDEBAR_ID);
    await expect.poll(() => reads.length).toBe(6);
    expect(reads.every(url => !url.includes('format=csv'))).toBe(true);
  });
});
