/**
 * The log tab reads a job's log in pages, against a fake server that answers
 * `GET /eksray/api/jobs/{id}/logs` with `offset`/`limit`/`tail` like the real
 * one: the end first, earlier output on demand, new output by offset, and no
 * more than the tab's cap (2 MiB) in the page.
 */
import { expect, test } from '@jupyterlab/galata';
import type { Page } from '@playwright/test';

import { SIDEBAR_ID } from './helpers';

test.use({ autoGoto: false });

const KIB = 1024;
const PAGE = 256 * KIB; // what the tab asks for at a time
const CAP = 2048 * KIB; // the most it keeps

/** Numbered lines, `bytes` long in all. */
function makeLog(bytes: number): string {
  const lines: string[] = [];
  let size = 0;
  for (let i = 0; size < bytes; i++) {
    const line = `line ${String(i).padStart(6, '0')} ${'x'.repeat(i % 61)}\n`;
    lines.push(line);
    size += line.length;
  }
  return lines.join('');
}

function fakeJob(state: string): Record<string, unknown> {
  const now = new Date().toISOString();
  return {
    id: 'big-1a2b3',
    name: 'big',
    owner: 'tester',
    state,
    reason: null,
    createdAt: now,
    updatedAt: now,
    startedAt: now,
    finishedAt: null,
    spec: { name: 'big', entrypoint: 'python big.py' },
    clusterName: 'big-1a2b3',
    clusterCreated: true,
    clusterDeletedAt: null,
    attempts: [],
    history: [],
    store: { type: 'local' },
    location: '/tmp/eksray/jobs/tester/big-1a2b3',
    results: [],
    runner: 'local'
  };
}

/** A fake job whose log the test grows and ends; every log query it got. */
async function fakeServer(page: Page, initial: string) {
  const server = { log: initial, state: 'running', queries: [] as string[] };
  await page.routeWebSocket(/\/eksray\/api\/stream/, ws => {
    ws.send(JSON.stringify({ type: 'snapshot', clusters: [] }));
    ws.send(
      JSON.stringify({
        type: 'jobs',
        jobs: [fakeJob(server.state)],
        warnings: []
      })
    );
  });
  await page.route(/\/eksray\/api\/jobs\/big-1a2b3\/logs(\?.*)?$/, route => {
    const url = new URL(route.request().url());
    server.queries.push(url.search);
    const log = server.log; // ASCII: a character is a byte
    const size = log.length;
    let start: number;
    let end: number;
    const tail = url.searchParams.get('tail');
    if (tail !== null) {
      start = Math.max(0, size - Math.min(Number(tail), 1024 * KIB));
      if (start > 0 && log[start - 1] !== '\n') {
        start = log.indexOf('\n', start) + 1;
      }
      end = size;
    } else {
      start = Number(url.searchParams.get('offset') ?? '0');
      const limit = Math.min(
        Number(url.searchParams.get('limit') ?? String(PAGE)),
        1024 * KIB
      );
      end = Math.min(size, start + limit);
    }
    const terminal = server.state !== 'running';
    return route.fulfill({
      status: 200,
      contentType: 'text/plain; charset=utf-8',
      headers: {
        'X-Log-Offset': String(start),
        'X-Next-Offset': String(end),
        'X-Log-Size': String(size),
        'X-Job-State': server.state,
        'X-Log-Complete': String(terminal && end >= size)
      },
      body: log.slice(start, end)
    });
  });
  return server;
}

test('the log tab shows the end first, loads earlier output and keeps at most 2 MiB', async ({
  page
}) => {
  test.setTimeout(120_000);
  const log = makeLog(CAP + 600 * KIB);
  const server = await fakeServer(page, log);
  await page.goto();
  await page.sidebar.openTab(SIDEBAR_ID);
  await page
    .locator(`#${SIDEBAR_ID}`)
    .getByRole('button', { name: 'View the log of big' })
    .click();
  const tab = page.locator('#eksray-job-log-big-1a2b3');
  const pre = tab.locator('pre');
  const text = () => pre.evaluate(element => element.textContent ?? '');

  // The end first: one tail read, not the whole log.
  await expect(pre).toContainText(log.slice(-40));
  const first = new URLSearchParams(server.queries[0]);
  expect(first.get('tail')).toBe(String(PAGE));
  expect(first.get('offset')).toBeNull();
  let shown = await text();
  expect(shown.length).toBeLessThanOrEqual(PAGE);
  expect(log.endsWith(shown)).toBe(true);
  expect(shown.startsWith('line ')).toBe(true); // from a line start
  await expect(tab).toContainText('The job is running; the log follows it.');
  await expect(tab).toContainText('Showing the last');

  // Earlier output on demand, a page at a time, put on top.
  const earlier = tab.getByRole('button', { name: /^Load earlier output/ });
  await earlier.click();
  await expect.poll(async () => (await text()).length).toBeGreaterThan(PAGE);
  shown = await text();
  expect(log.endsWith(shown)).toBe(true);

  // New output is appended by offset while the job runs.
  server.log += 'epoch 1 done\n';
  await expect(pre).toContainText('epoch 1 done');
  expect(server.queries.some(q => q.includes(`offset=${log.length}`))).toBe(
    true
  );
  expect((await text()).endsWith('epoch 1 done\n')).toBe(true);

  // Loading earlier beyond the cap drops the newest output and stops following.
  const latest = tab.getByRole('button', { name: 'Show the latest output' });
  for (;;) {
    await expect(earlier).toBeEnabled(); // the last load is done
    if (await latest.isVisible()) {
      break;
    }
    await earlier.click();
  }
  shown = await text();
  expect(shown.length).toBeLessThanOrEqual(CAP);
  expect(shown).not.toContain('epoch 1 done');
  expect(server.log.includes(shown)).toBe(true);
  await expect(tab).toContainText('newer output is not shown');

  // Back to the end, following again; the job ends.
  await latest.click();
  await expect(latest).toBeHidden();
  await expect(pre).toContainText('epoch 1 done');
  server.log += 'all done\n';
  server.state = 'succeeded';
  await expect(pre).toContainText('all done');
  await expect(tab).toContainText(
    'The job succeeded; this is the end of its log.'
  );
  expect(log.endsWith((await text()).replace('epoch 1 done\nall done\n', ''))).toBe(true);
});
