// Headless Chromium from Debian (apt-get install chromium; ./dev setup installs it), driven by
// playwright-core. Never `playwright install`: the browser is the system's. Each launch gets a
// fresh profile directory, removed on close.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { ownedTempPrefix } from '../../src/sim/layout.ts';

export const CHROMIUM = '/usr/bin/chromium';
export const ARTIFACTS = path.resolve(import.meta.dirname, '../../test-artifacts');

export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export interface Browser {
  context: BrowserContext;
  /** A new page at 1280x800 whose console errors and uncaught exceptions are collected in `errors`. */
  page(): Promise<{ page: Page; errors: string[] }>;
  close(): Promise<void>;
}

/**
 * executablePath: a wrapper that runs Chromium elsewhere (e.g. in a network namespace) with the same arguments.
 * extraArgs: more switches, e.g. --host-resolver-rules to make a name resolve to loopback.
 */
export async function launchChromium(executablePath = CHROMIUM, extraArgs: string[] = []): Promise<Browser> {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (./dev setup installs it)`);
  const profile = fs.mkdtempSync(ownedTempPrefix('test'));
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profile, { executablePath, headless: true, args: [...CHROMIUM_ARGS, ...extraArgs], viewport: { width: 1280, height: 800 }, timeout: 60_000 });
  } catch (e) {
    fs.rmSync(profile, { recursive: true, force: true });
    throw e;
  }
  return {
    context,
    async page() {
      const page = await context.newPage();
      const errors: string[] = [];
      page.on('console', (m) => m.type() === 'error' && errors.push(`console: ${m.text()}`));
      page.on('pageerror', (e) => errors.push(`exception: ${e.message}`));
      return { page, errors };
    },
    async close() {
      await context.close().catch(() => {});
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

export async function screenshot(page: Page, name: string): Promise<string> {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}
