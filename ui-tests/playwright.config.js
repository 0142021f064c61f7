/**
 * Playwright configuration for the eksray-jupyter UI tests.
 *
 * Browsers cannot be downloaded on our machines: the tests drive the Debian
 * `chromium` package (override its path with CHROMIUM_PATH).
 */
const baseConfig = require('@jupyterlab/galata/lib/playwright-config');

module.exports = {
  ...baseConfig,
  reporter: [[process.env.CI ? 'dot' : 'list'], ['html', { open: 'never' }]],
  use: {
    ...baseConfig.use,
    video: 'off',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-dev-shm-usage',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync'
      ]
    }
  },
  webServer: {
    command: 'jlpm start',
    url: 'http://localhost:8888/lab',
    timeout: 120 * 1000,
    reuseExistingServer: !process.env.CI,
    // Let Jupyter stop cleanly (its extensions' shutdown, the state dir removal).
    gracefulShutdown: { signal: 'SIGTERM', timeout: 10 * 1000 }
  }
};
