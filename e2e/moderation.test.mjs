// Moderators in Chromium, through a real chat-server started with
// --moderators and --moderator-key-file: the name prompt asks for the key
// when a moderator's name is asked for, the moderator sees a badge and
// Delete on everyone's messages (with a reason), and the author's page
// shows the message deleted by a moderator. axe checks the new states.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { artifacts, connected, join, launchBrowser, messagesWithText, openPage, say, startServer } from './harness.mjs';
import { assertAccessible, PHONE } from './axe.mjs';

const KEY = 'correct horse battery staple';
let server;
let browser;
let dir;

before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'chat-moderation-'));
  const keyFile = path.join(dir, 'moderator.key');
  writeFileSync(keyFile, `${KEY}\n`);
  chmodSync(keyFile, 0o600);
  server = await startServer(undefined, {
    env: { CHAT_MODERATORS: 'Mod', CHAT_MODERATOR_KEY_FILE: keyFile, CHAT_RATE_LIMIT: '0' },
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('a moderator joins with the key and deletes someone else\'s message with a reason', async () => {
  const ada = await openPage(browser, server.url);
  await join(ada, 'Ada');
  await say(ada, 'buy cheap watches');
  await messagesWithText(ada, 'buy cheap watches').and(ada.locator('[id^="msg-"]')).waitFor();

  // Asking for the moderator's name without the key: refused, and the
  // key field opens by itself.
  const mod = await openPage(browser, server.url, PHONE);
  await mod.getByTestId('name-input').fill('mod');
  await mod.getByTestId('name-submit').click();
  await mod.getByTestId('name-error').filter({ hasText: 'moderator key' }).waitFor();
  const keyInput = mod.getByTestId('key-input');
  await keyInput.waitFor();
  assert.equal(await keyInput.getAttribute('type'), 'password');
  const keyFocused = () => mod.waitForFunction(() => document.activeElement?.dataset.testid === 'key-input');
  await keyFocused();
  await assertAccessible(mod, 'name prompt asking for the moderator key');
  await mod.screenshot({ path: path.join(artifacts, 'moderation-key.png') });
  await keyInput.fill('not the key');
  await mod.getByTestId('name-submit').click();
  await mod.getByTestId('name-error').filter({ hasText: 'moderator key' }).waitFor();
  await keyFocused();
  await keyInput.fill(KEY);
  await keyInput.press('Enter');
  await connected(mod);
  await mod.getByTestId('moderator-badge').waitFor();

  // Ada, no moderator, has no Delete on the moderator's message.
  await say(mod, 'please keep it friendly');
  const friendly = messagesWithText(ada, 'please keep it friendly');
  await friendly.and(ada.locator('[id^="msg-"]')).waitFor();
  await friendly.hover();
  await friendly.getByTestId('action-reply').waitFor();
  assert.equal(await friendly.getByTestId('action-delete').count(), 0, 'not Ada\'s to delete');

  // The moderator deletes Ada's message, with a reason.
  const spam = messagesWithText(mod, 'buy cheap watches');
  await spam.and(mod.locator('[id^="msg-"]')).waitFor();
  await spam.hover();
  await spam.getByTestId('action-delete').click();
  const confirm = mod.getByTestId('confirm-delete');
  await confirm.waitFor();
  assert.match(await confirm.innerText(), /Delete Ada's message as a moderator\?/);
  await confirm.getByTestId('delete-reason').fill('spam');
  await assertAccessible(mod, 'a moderator confirming a deletion with a reason');
  await mod.screenshot({ path: path.join(artifacts, 'moderation-confirm.png') });
  await confirm.getByTestId('confirm-delete-yes').focus();
  await mod.keyboard.press('Enter');

  for (const page of [ada, mod]) {
    await page.getByTestId('message').filter({ hasText: 'This message was deleted by a moderator.' }).waitFor();
    assert.equal(await messagesWithText(page, 'buy cheap watches').count(), 0);
  }
  await ada.screenshot({ path: path.join(artifacts, 'moderation-ada.png') });
  assert.deepEqual([...ada.errors, ...mod.errors], []);
});
