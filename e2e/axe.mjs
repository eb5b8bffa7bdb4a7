// axe-core on a page as it is, in the light and the dark theme: the
// accessibility checks the browser tests share (WCAG 2.2 AA; serious and
// critical violations fail, lesser ones are listed).
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const axePath = createRequire(import.meta.url).resolve('axe-core');
export const WIDE = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };
export const SIZES = { wide: WIDE, phone: PHONE };
export const THEMES = ['light', 'dark'];
const ASSERTED = new Set(['serious', 'critical']);
// Asserted whatever their impact: a dialog is a div[role=dialog] (a form
// may not have that role), and every screen has a heading of level 1.
const ASSERTED_RULES = new Set(['aria-allowed-role', 'page-has-heading-one']);
const asserted = (v) => ASSERTED.has(v.impact) || ASSERTED_RULES.has(v.id);

/**
 * Runs axe-core on the page as it is, in `colorScheme`. Returns the
 * violations (all impacts; the caller picks which to assert).
 */
export async function axe(page, colorScheme) {
  await page.emulateMedia({ colorScheme });
  // Let the new theme's styles apply (and any transition settle) first.
  await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) {
    await page.addScriptTag({ path: axePath });
  }
  const { violations } = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return violations;
}

/** A violation list as a developer wants to read it. */
function describe(violations) {
  return violations.map((v) => [
    `  [${v.impact}] ${v.id}: ${v.help}`,
    `    ${v.helpUrl}`,
    ...v.nodes.map((node) => [
      `    - ${node.target.join(' >> ')}`,
      `      ${node.html.length > 160 ? `${node.html.slice(0, 160)}…` : node.html}`,
      ...(node.failureSummary ?? '').split('\n').map((line) => `      ${line}`),
    ].join('\n')),
  ].join('\n')).join('\n');
}

/**
 * Checks the page in both themes; asserts no serious or critical violation
 * in either, listing all of them (and, for information, the lesser ones).
 */
export async function assertAccessible(page, screen) {
  const failures = [];
  for (const theme of THEMES) {
    const violations = await axe(page, theme);
    const serious = violations.filter(asserted);
    const lesser = violations.filter((v) => !asserted(v));
    if (lesser.length > 0) {
      console.log(`# ${screen}, ${theme}: ${lesser.length} minor/moderate (not asserted):\n${describe(lesser)}`);
    }
    if (serious.length > 0) failures.push(`${screen}, ${theme} theme:\n${describe(serious)}`);
  }
  await page.emulateMedia({ colorScheme: null });
  if (failures.length > 0) {
    const report = failures.join('\n\n');
    console.log(`# axe: serious/critical violations\n${report}`);
    assert.fail(`serious or critical accessibility violations:\n${report}`);
  }
}

