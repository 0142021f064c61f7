/**
 * Shared helpers of the eksray UI tests.
 */
import type { APIRequestContext, Page, TestInfo } from '@playwright/test';

export const SIDEBAR_ID = 'eksray-sidebar';

/** The Jupyter token of the page (empty when the server needs none). */
export async function jupyterToken(page: Page): Promise<string> {
  return page.evaluate(() => {
    const element = document.getElementById('jupyter-config-data');
    return element ? (JSON.parse(element.textContent || '{}').token ?? '') : '';
  });
}

/** Headers that authenticate a REST call as the page's user. */
export async function authHeaders(
  page: Page
): Promise<Record<string, string>> {
  const token = await jupyterToken(page);
  return token ? { Authorization: `token ${token}` } : {};
}

/**
 * Delete clusters through the REST API (a safety net after a test: the UI
 * should already have deleted them). A missing cluster is fine.
 */
export async function deleteClustersViaAPI(
  page: Page,
  request: APIRequestContext,
  names: string[]
): Promise<void> {
  const headers = await authHeaders(page).catch(() => ({}));
  for (const name of names) {
    const response = await request.delete(
      `/eksray/api/clusters/${encodeURIComponent(name)}`,
      { headers, timeout: 120_000 }
    );
    if (![204, 404].includes(response.status())) {
      console.warn(
        `Cleanup of ${name}: HTTP ${response.status()} ${await response.text()}`
      );
    }
  }
}

/** A unique, valid cluster name for one test run. */
export function uniqueName(prefix: string): string {
  const suffix = Math.random().toString(36).slice(2, 7);
  return `${prefix}-${suffix}`;
}

/**
 * Save a screenshot of the whole panel under the test's output folder: the
 * window is made tall enough for the panel's content, then restored.
 */
export async function screenshotPanel(
  page: Page,
  testInfo: TestInfo,
  name: string
): Promise<string> {
  const path = testInfo.outputPath(`${name}.png`);
  const panel = page.locator(`#${SIDEBAR_ID}`);
  const original = page.viewportSize();
  const content = await panel.evaluate(element => element.scrollHeight);
  if (original && content > original.height - 120) {
    await page.setViewportSize({
      width: original.width,
      height: Math.min(content + 120, 4000)
    });
  }
  await panel.evaluate(element => element.scrollTo(0, 0));
  await panel.screenshot({ path });
  if (original) {
    await page.setViewportSize(original);
  }
  await testInfo.attach(name, { path, contentType: 'image/png' });
  return path;
}

/** Save a screenshot of the whole page under the test's output folder. */
export async function screenshotPage(
  page: Page,
  testInfo: TestInfo,
  name: string
): Promise<string> {
  const path = testInfo.outputPath(`${name}.png`);
  await page.screenshot({ path });
  await testInfo.attach(name, { path, contentType: 'image/png' });
  return path;
}

/** A cluster as the server reports it, for tests that fake the server. */
export function fakeCluster(
  name: string,
  overrides: Record<string, unknown> = {}
): Record<string, unknown> {
  return {
    name,
    backend: 'local',
    owner: 'tester',
    namespace: null,
    phase: 'ready',
    reason: null,
    createdAt: new Date(Date.now() - 5 * 60_000).toISOString(),
    spec: {
      name,
      head: { cpu: 1 },
      workerGroups: [
        { groupName: 'cpu', replicas: 2, minReplicas: 0, maxReplicas: 4 }
      ],
      autoscaling: { enabled: true, idleTimeoutSeconds: 60 }
    },
    workerGroups: [
      {
        groupName: 'cpu',
        replicas: 2,
        desired: 2,
        ready: 2,
        minReplicas: 0,
        maxReplicas: 4,
        resources: { CPU: 1, GPU: 0 }
      }
    ],
    nodes: [
      {
        id: 'head0000',
        group: 'head',
        kind: 'head',
        state: 'alive',
        resources: { CPU: 1, memory: 4 * 1024 ** 3 },
        address: '127.0.0.1:6379',
        startedAt: null,
        utilization: { CPU: 0.25, memory: 0.4 },
        used: { CPU: 0.25, memory: 0.4 * 4 * 1024 ** 3 },
        host: null,
        instanceType: null
      },
      ...[1, 2].map(i => ({
        id: `worker000${i}`,
        group: 'cpu',
        kind: 'worker',
        state: 'alive',
        resources: { CPU: 1, memory: 2 * 1024 ** 3 },
        address: `10.0.0.${i}`,
        startedAt: null,
        utilization: { CPU: 0.5 * i, memory: 0.1 },
        used: { CPU: 0.5 * i, memory: 0.1 * 2 * 1024 ** 3 },
        host: null,
        instanceType: null
      }))
    ],
    dashboardUrl: `/eksray/clusters/${name}/dashboard/`,
    address: '127.0.0.1:6379',
    readOnly: false,
    lastActiveAt: null,
    suspendedAt: null,
    ...overrides
  };
}

/** An event as the server reports it. */
export function fakeEvent(
  id: string,
  message: string,
  overrides: Record<string, unknown> = {}
): Record<string, unknown> {
  const timestamp = Date.now() / 1000;
  return {
    id,
    time: new Date(timestamp * 1000).toISOString(),
    timestamp,
    source: 'autoscaler',
    severity: 'info',
    reason: null,
    message,
    ...overrides
  };
}
