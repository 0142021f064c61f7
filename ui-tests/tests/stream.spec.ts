/**
 * The push stream, against a fake server: the page's websocket to
 * `eksray/api/stream` is answered by the test, so pushed states, events and
 * deletions are exact and timed.
 */
import { expect, test } from '@jupyterlab/galata';
import type { WebSocketRoute } from '@playwright/test';

import { fakeCluster, fakeEvent, screenshotPanel, SIDEBAR_ID } from './helpers';

const STREAM = /\/eksray\/api\/stream/;

test.use({ autoGoto: false });

test.describe('Push stream', () => {
  test('shows pushed changes within 250 ms, then events and deletions', async ({
    page
  }, testInfo) => {
    let server: WebSocketRoute | undefined;
    await page.routeWebSocket(STREAM, ws => {
      server = ws;
      ws.send(
        JSON.stringify({
          type: 'snapshot',
          clusters: [fakeCluster('pushed'), fakeCluster('other', { phase: 'starting' })]
        })
      );
    });
    await page.route('**/eksray/api/clusters/pushed/events*', route =>
      route.fulfill({
        json: {
          events: [
            fakeEvent('e1', 'Cluster pushed created', {
              source: 'backend',
              reason: 'Created',
              timestamp: Date.now() / 1000 - 120
            }),
            fakeEvent('e2', 'Cluster pushed is ready', {
              source: 'backend',
              reason: 'Ready',
              timestamp: Date.now() / 1000 - 60
            })
          ]
        }
      })
    );
    await page.goto();
    await page.sidebar.openTab(SIDEBAR_ID);
    const panel = page.locator(`#${SIDEBAR_ID}`);
    const list = panel.getByRole('list', { name: 'Ray clusters' });
    await expect(list.getByRole('button', { name: 'pushed, ready' })).toBeVisible();
    await expect(list.getByRole('button', { name: 'other, starting' })).toBeVisible();
    await screenshotPanel(page, testInfo, 'list-light');

    // A change is on screen within 250 ms of its message.
    await page.evaluate(() => {
      const root = document.getElementById('eksray-sidebar')!;
      (window as unknown as { eksrayShown: Promise<number> }).eksrayShown =
        new Promise(resolve => {
          const observer = new MutationObserver(() => {
            const badge = root.querySelector(
              'button[aria-label="pushed, scaling"] [data-phase="scaling"]'
            );
            if (badge) {
              observer.disconnect();
              resolve(performance.now());
            }
          });
          observer.observe(root, {
            subtree: true,
            childList: true,
            characterData: true,
            attributes: true
          });
        });
    });
    // Measured from before the message leaves the test, so the figure also
    // includes the trip to the browser: an upper bound of the panel's delay.
    const sentAt = await page.evaluate(() => performance.now());
    server!.send(
      JSON.stringify({
        type: 'cluster',
        cluster: fakeCluster('pushed', { phase: 'scaling' })
      })
    );
    const shownAt = await page.evaluate(
      () => (window as unknown as { eksrayShown: Promise<number> }).eksrayShown
    );
    const latency = shownAt - sentAt;
    testInfo.annotations.push({
      type: 'push-to-screen',
      description: `${latency.toFixed(1)} ms`
    });
    expect(latency).toBeLessThan(250);
    await expect(list.getByRole('button', { name: 'pushed, scaling' })).toBeVisible();

    // Details: REST events first, pushed ones on top (newest first).
    await list.getByRole('button', { name: 'pushed, scaling' }).click();
    const detail = panel.getByLabel('Cluster pushed');
    const timeline = detail.getByRole('list', { name: 'Events, newest first' });
    await expect(timeline.getByRole('listitem')).toHaveCount(2);
    await expect(timeline.getByRole('listitem').first()).toContainText(
      'Cluster pushed is ready'
    );
    server!.send(
      JSON.stringify({
        type: 'event',
        name: 'pushed',
        event: fakeEvent('e3', 'Adding 1 node(s) of type cpu.', {
          severity: 'warning'
        })
      })
    );
    await expect(timeline.getByRole('listitem')).toHaveCount(3);
    await expect(timeline.getByRole('listitem').first()).toContainText(
      'Adding 1 node(s) of type cpu.'
    );
    await expect(timeline.getByRole('listitem').first()).toContainText('autoscaler');
    await expect(timeline.getByRole('listitem').first()).toContainText('warning');
    // The same event again (e.g. from the REST API) is not shown twice.
    server!.send(
      JSON.stringify({
        type: 'event',
        name: 'pushed',
        event: fakeEvent('e3', 'Adding 1 node(s) of type cpu.')
      })
    );
    const nodes = detail.getByRole('table', { name: 'Nodes' });
    await expect(nodes.getByRole('row')).toHaveCount(4); // header + 3 nodes
    // What Ray has in use of what it may schedule: half a CPU of one.
    await expect(nodes).toContainText('0.5/1');
    await expect(timeline.getByRole('listitem')).toHaveCount(3);
    await screenshotPanel(page, testInfo, 'detail-light');

    // A deletion elsewhere (CLI, another tab) shows at once.
    server!.send(JSON.stringify({ type: 'deleted', name: 'pushed' }));
    await expect(detail).toHaveCount(0);
    await expect(panel.getByText('There is no cluster named “pushed”')).toBeVisible();
    await panel.getByRole('button', { name: 'All clusters' }).click();
    await expect(list.getByRole('button', { name: /^pushed/ })).toHaveCount(0);
    await expect(list.getByRole('button', { name: 'other, starting' })).toBeVisible();
  });

  test('palette commands ask which cluster, then act', async ({ page }) => {
    await page.routeWebSocket(STREAM, ws => {
      ws.send(
        JSON.stringify({
          type: 'snapshot',
          clusters: [fakeCluster('first'), fakeCluster('second')]
        })
      );
    });
    const requests: { method: string; url: string; body: unknown }[] = [];
    await page.route(/\/eksray\/api\/clusters\/(first|second)(\?.*)?$/, route => {
      const request = route.request();
      requests.push({
        method: request.method(),
        url: request.url(),
        body: request.postDataJSON()
      });
      return request.method() === 'DELETE'
        ? route.fulfill({ status: 204 })
        : route.fulfill({ json: fakeCluster('second') });
    });
    await page.goto();
    await page.sidebar.openTab(SIDEBAR_ID);
    const panel = page.locator(`#${SIDEBAR_ID}`);
    await expect(panel.getByRole('button', { name: 'second, ready' })).toBeVisible();

    // Scale: which cluster? how many replicas?
    await page.keyboard.press('Control+Shift+C');
    await page.locator('#command-palette').getByRole('textbox').fill('Scale Ray');
    await page.getByRole('menuitem', { name: 'Scale Ray Cluster…' }).click();
    let dialog = page.getByRole('dialog');
    await expect(dialog).toContainText('Which cluster?');
    await dialog.getByRole('combobox').selectOption('second');
    await dialog.getByRole('button', { name: 'Choose' }).click();
    dialog = page.getByRole('dialog');
    await expect(dialog).toContainText('Replicas of cpu');
    await dialog.getByRole('spinbutton').fill('3');
    await dialog.getByRole('button', { name: 'Scale' }).click();
    await expect.poll(() => requests.length).toBe(1);
    expect(requests[0].method).toBe('PATCH');
    expect(requests[0].url).toMatch(/\/clusters\/second(\?|$)/);
    expect(requests[0].body).toEqual({
      workerGroups: [{ groupName: 'cpu', replicas: 3 }]
    });

    // Delete acts on the cluster shown in the panel, after confirmation.
    await panel.getByRole('button', { name: 'first, ready' }).click();
    await page.keyboard.press('Control+Shift+C');
    await page.locator('#command-palette').getByRole('textbox').fill('Delete Ray');
    await page.getByRole('menuitem', { name: 'Delete Ray Cluster…' }).click();
    dialog = page.getByRole('dialog');
    await expect(dialog).toContainText('“first” will be stopped and deleted');
    await dialog.getByRole('button', { name: 'Delete' }).click();
    await expect.poll(() => requests.length).toBe(2);
    expect(requests[1].method).toBe('DELETE');
    expect(requests[1].url).toMatch(/\/clusters\/first(\?|$)/);
    const list = panel.getByRole('list', { name: 'Ray clusters' });
    await expect(list.getByRole('button', { name: /^first/ })).toHaveCount(0);
    await expect(list.getByRole('button', { name: 'second, ready' })).toBeVisible();
  });

  test('polls while the stream is down and stops once it is back', async ({
    page
  }) => {
    test.setTimeout(120_000);
    let streamUp = false;
    let server: WebSocketRoute | undefined;
    await page.routeWebSocket(STREAM, ws => {
      if (!streamUp) {
        ws.close({ code: 1011, reason: 'down for the test' });
        return;
      }
      server = ws;
      ws.send(
        JSON.stringify({ type: 'snapshot', clusters: [fakeCluster('streamed')] })
      );
    });
    let polls = 0;
    let polled = [fakeCluster('polled')];
    await page.route(/\/eksray\/api\/clusters(\?.*)?$/, route => {
      polls++;
      return route.fulfill({ json: { clusters: polled } });
    });

    await page.goto();
    await page.sidebar.openTab(SIDEBAR_ID);
    const panel = page.locator(`#${SIDEBAR_ID}`);
    const list = panel.getByRole('list', { name: 'Ray clusters' });
    await expect(
      panel.getByText('Live updates are unavailable; refreshing every few seconds instead.')
    ).toBeVisible();
    await expect(list.getByRole('button', { name: 'polled, ready' })).toBeVisible();

    // Polling picks up changes.
    polled = [fakeCluster('polled', { phase: 'scaling' })];
    await expect(list.getByRole('button', { name: 'polled, scaling' })).toBeVisible({
      timeout: 20_000
    });

    // Hidden panel: no polling. (Asserting that nothing happens takes a wait.)
    await page.sidebar.close('left');
    await expect(panel).toBeHidden();
    const pollsWhenHidden = polls;
    await page.waitForTimeout(12_000);
    // At most a request already under way when the panel closed; a 5 s poll would make two more.
    expect(polls - pollsWhenHidden).toBeLessThanOrEqual(1);

    // The stream comes back: its snapshot replaces the polled state and polling stops.
    streamUp = true;
    await page.sidebar.openTab(SIDEBAR_ID);
    await expect(list.getByRole('button', { name: 'streamed, ready' })).toBeVisible({
      timeout: 60_000
    });
    expect(server).toBeDefined();
    await expect(list.getByRole('button', { name: /^polled/ })).toHaveCount(0);
    await expect(panel.getByText('Live updates are unavailable')).toHaveCount(0);
    const pollsWhenLive = polls;
    await page.waitForTimeout(12_000);
    expect(polls - pollsWhenLive).toBeLessThanOrEqual(1); // as above
  });

  test('takes a silent stream for dead: polls, then reconnects', async ({
    page
  }) => {
    test.setTimeout(120_000);
    // Heartbeats every 0.5 s: three missed are 1.75 s of silence.
    let connections = 0;
    let streamUp = false;
    let beats: ReturnType<typeof setInterval> | undefined;
    await page.routeWebSocket(STREAM, ws => {
      connections++;
      if (connections === 1) {
        // Connected, then silent: what a panel saw when the server's observer had stopped.
        ws.send(
          JSON.stringify({
            type: 'snapshot',
            clusters: [fakeCluster('silent')],
            heartbeat: 0.5
          })
        );
        return;
      }
      if (!streamUp) {
        ws.close({ code: 1011, reason: 'down for the test' });
        return;
      }
      ws.send(
        JSON.stringify({
          type: 'snapshot',
          clusters: [fakeCluster('streamed')],
          heartbeat: 0.5
        })
      );
      beats = setInterval(() => ws.send(JSON.stringify({ type: 'heartbeat' })), 500);
    });
    await page.route(/\/eksray\/api\/clusters(\?.*)?$/, route =>
      route.fulfill({ json: { clusters: [fakeCluster('polled')] } })
    );
    try {
      await page.goto();
      await page.sidebar.openTab(SIDEBAR_ID);
      const panel = page.locator(`#${SIDEBAR_ID}`);
      const list = panel.getByRole('list', { name: 'Ray clusters' });
      await expect(list.getByRole('button', { name: 'silent, ready' })).toBeVisible();

      // The heartbeats do not come: the panel says so, and polls.
      await expect(
        panel.getByText('Live updates are unavailable; refreshing every few seconds instead.')
      ).toBeVisible();
      await expect(list.getByRole('button', { name: 'polled, ready' })).toBeVisible();

      // It reconnects (with backoff); heartbeats keep the new connection live.
      streamUp = true;
      await expect(list.getByRole('button', { name: 'streamed, ready' })).toBeVisible({
        timeout: 60_000
      });
      await expect(panel.getByText('Live updates are unavailable')).toHaveCount(0);
      const connected = connections;
      await page.waitForTimeout(4_000); // eight heartbeats: no silence, no reconnection
      expect(connections).toBe(connected);
      await expect(list.getByRole('button', { name: 'streamed, ready' })).toBeVisible();
    } finally {
      clearInterval(beats);
    }
  });

  test('an idle warning is a notification whose "Keep running" keeps the cluster', async ({
    page
  }, testInfo) => {
    let server: WebSocketRoute | undefined;
    await page.routeWebSocket(STREAM, ws => {
      server = ws;
      ws.send(JSON.stringify({ type: 'snapshot', clusters: [fakeCluster('sleepy')] }));
    });
    const keptAlive: string[] = [];
    await page.route(/\/eksray\/api\/clusters\/sleepy\/keepalive(\?.*)?$/, route => {
      keptAlive.push(route.request().method());
      return route.fulfill({
        json: fakeCluster('sleepy', { lastActiveAt: new Date().toISOString() })
      });
    });
    await page.goto();
    await page.sidebar.openTab(SIDEBAR_ID);
    const panel = page.locator(`#${SIDEBAR_ID}`);
    await expect(
      panel.getByRole('list', { name: 'Ray clusters' }).getByRole('button', { name: 'sleepy, ready' })
    ).toBeVisible();

    const due = new Date(Date.now() + 5 * 60_000 + 5_000).toISOString();
    const reason = 'idle for 25 min: no Ray task, actor or job, no busy kernel, no keep-alive';
    server!.send(
      JSON.stringify({ type: 'lifecycle', name: 'sleepy', action: 'warn', reason, pending: 'suspend', due })
    );
    const warning = page.getByText('Ray cluster “sleepy” will be suspended in 5 min: idle for 25 min.');
    await expect(warning).toBeVisible();
    await screenshotPanel(page, testInfo, 'idle-warning-light');
    await page.getByRole('button', { name: 'Keep running' }).click();
    await expect(page.getByText('“sleepy” is kept running.')).toBeVisible();
    expect(keptAlive).toEqual(['POST']);
    await expect(warning).toHaveCount(0);

    // A warning the keeper withdraws (the cluster is in use again) goes away by itself.
    server!.send(
      JSON.stringify({ type: 'lifecycle', name: 'sleepy', action: 'warn', reason, pending: 'suspend', due })
    );
    await expect(warning).toBeVisible();
    server!.send(
      JSON.stringify({ type: 'lifecycle', name: 'sleepy', action: 'clear', reason: 'in use again', pending: null, due: null })
    );
    await expect(warning).toHaveCount(0);
    // An action taken is said too.
    server!.send(
      JSON.stringify({ type: 'lifecycle', name: 'sleepy', action: 'suspend', reason, pending: null, due: null })
    );
    await expect(page.getByText('Ray cluster “sleepy” was suspended: idle for 25 min.')).toBeVisible();
  });
});
