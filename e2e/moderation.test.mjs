// Moderators in Chromium, through a real chat-server started with
// --moderators and --moderator-key-file: the name prompt asks for the key
// when a moderator's name is asked for, the moderator sees a badge and
// Delete on everyone's messages (with a reason), and the author's page
// shows the message deleted by a moderator; a moderator mutes someone
// from the online list, whose composer then says so, lifts it, deletes
// their last hour, and bans someone, whose page then says so; someone
// reports a message and a moderator handles it from the Reports panel; a
// moderator sets the topic and slow mode, and the others' composer counts
// down. axe checks the new states.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  artifacts, connected, join, joinAsModerator as joinWithKey, launchBrowser, messagesWithText, openPage, say,
  startServer,
} from './harness.mjs';
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
    env: { CHAT_MODERATORS: 'Mod,Boss,Chief,Warden,Keeper', CHAT_MODERATOR_KEY_FILE: keyFile, CHAT_RATE_LIMIT: '0' },
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Joins `page` as the moderator `name`, with the key. */
const joinAsModerator = (page, name) => joinWithKey(page, name, KEY);

test('a moderator joins with the key and deletes someone else\'s message with a reason', async () => {
  const ada = await openPage(browser, server.url);
  await join(ada, 'Ada');
  await say(ada, 'buy cheap watches');
  await messagesWithText(ada, 'buy cheap watches').and(ada.locator('[id^="msg-"]')).waitFor();

  // Asking for the moderator's name without the key: refused, and the
  // key field opens by itself (and takes focus).
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

test('a moderator mutes someone from the online list; their composer says so until it is lifted', async () => {
  const bea = await openPage(browser, server.url);
  await join(bea, 'Bea');
  const boss = await openPage(browser, server.url);
  await joinAsModerator(boss, 'Boss');

  // Bea has no menu on anyone; Boss has one on Bea, not on himself.
  await bea.getByTestId('online-person').filter({ hasText: 'Boss' }).waitFor();
  assert.equal(await bea.getByTestId('moderate-person').count(), 0);
  const beaRow = boss.getByTestId('online-person').filter({ hasText: 'Bea' });
  await beaRow.waitFor();
  assert.equal(
    await boss.getByTestId('online-person').filter({ hasText: 'Boss' }).getByTestId('moderate-person').count(),
    0,
  );
  await beaRow.getByTestId('moderate-person').click();
  await beaRow.getByRole('button', { name: 'Mute 10 minutes' }).waitFor();
  await assertAccessible(boss, 'a moderator\'s menu on a person');
  await beaRow.getByRole('button', { name: 'Mute 10 minutes' }).click();
  await beaRow.getByTestId('moderation-said').filter({ hasText: 'Bea is muted in #general for 10 minutes.' }).waitFor();
  await boss.screenshot({ path: path.join(artifacts, 'moderation-mute-menu.png') });

  // Bea's next message is refused, and the composer says why and until when.
  await say(bea, 'hello?');
  const notice = bea.getByTestId('muted-notice');
  await notice.waitFor();
  assert.match(await notice.innerText(), /a moderator muted you in #general until \d{4}-\d\d-\d\d \d\d:\d\d UTC/);
  assert.equal(await bea.getByTestId('composer-input').isDisabled(), true);
  await assertAccessible(bea, 'a muted person\'s composer');
  await bea.screenshot({ path: path.join(artifacts, 'moderation-muted.png') });

  // Lifted: Bea tries again and posts.
  await beaRow.getByTestId('moderate-person').click();
  await beaRow.getByTestId('lift-person').click();
  await beaRow.getByTestId('moderation-said').filter({ hasText: 'Bea may post in #general again.' }).waitFor();
  await bea.getByTestId('muted-retry').click();
  assert.equal(await bea.getByTestId('composer-input').isDisabled(), false);
  await say(bea, 'thanks, I will behave');
  await messagesWithText(boss, 'thanks, I will behave').and(boss.locator('[id^="msg-"]')).waitFor();

  // Boss deletes Bea's last hour after all.
  await beaRow.getByTestId('moderate-person').click();
  await beaRow.getByTestId('purge-person').click();
  await beaRow.getByTestId('moderation-said').filter({ hasText: 'Deleted 1 message Bea sent in the last hour.' }).waitFor();
  await bea.getByTestId('message').filter({ hasText: 'This message was deleted by a moderator.' }).waitFor();
  assert.equal(await messagesWithText(bea, 'thanks, I will behave').count(), 0);
  assert.deepEqual([...bea.errors, ...boss.errors], []);
});

test('someone reports a message; a moderator deletes it from the Reports panel, or dismisses a report', async () => {
  const dee = await openPage(browser, server.url);
  await join(dee, 'Dee');
  const eve = await openPage(browser, server.url);
  await join(eve, 'Eve');
  const warden = await openPage(browser, server.url);
  await joinAsModerator(warden, 'Warden');
  await say(dee, 'you are all idiots');
  await say(dee, 'pineapple belongs on pizza');

  // Eve reports the first, saying why; the moderator's header counts it.
  const insult = messagesWithText(eve, 'you are all idiots');
  await insult.and(eve.locator('[id^="msg-"]')).waitFor();
  await insult.hover();
  await insult.getByTestId('action-report').click();
  const confirm = eve.getByTestId('confirm-report');
  await confirm.waitFor();
  assert.match(await confirm.innerText(), /Report Dee's message to the moderators\?/);
  await eve.waitForFunction(() => document.activeElement?.dataset.testid === 'report-reason');
  await assertAccessible(eve, 'reporting a message');
  await eve.keyboard.type('insulting');
  await eve.keyboard.press('Enter');
  await eve.getByTestId('action-notice').filter({ hasText: 'Reported to the moderators' }).waitFor();
  await warden.getByTestId('reports-count').filter({ hasText: '1' }).waitFor();

  // The moderator opens the panel: the report, its message and why.
  await warden.getByTestId('reports-toggle').click();
  const report = warden.getByTestId('report').filter({ hasText: 'you are all idiots' });
  await report.waitFor();
  assert.match(await report.innerText(), /Eve reported Dee's message in #general/);
  assert.match(await report.innerText(), /Why: insulting/);
  await assertAccessible(warden, 'a moderator\'s reports panel');
  await warden.screenshot({ path: path.join(artifacts, 'moderation-reports.png') });

  // Deleting it from there: Dee's page shows it deleted, the panel empties.
  await report.getByTestId('report-delete').click();
  await dee.getByTestId('message').filter({ hasText: 'This message was deleted by a moderator.' }).waitFor();
  assert.equal(await messagesWithText(dee, 'you are all idiots').count(), 0);
  await warden.getByText('Nothing reported. All quiet.').waitFor();

  // A second report, which the moderator dismisses: the message stays.
  const pizza = messagesWithText(eve, 'pineapple belongs on pizza');
  await pizza.and(eve.locator('[id^="msg-"]')).waitFor();
  await pizza.hover();
  await pizza.getByTestId('action-report').click();
  await eve.getByTestId('confirm-report-yes').click();
  const dismissed = warden.getByTestId('report').filter({ hasText: 'pineapple belongs on pizza' });
  await dismissed.waitFor();
  await dismissed.getByTestId('report-dismiss').click();
  await warden.getByText('Nothing reported. All quiet.').waitFor();
  assert.equal(await messagesWithText(dee, 'pineapple belongs on pizza').count(), 1);
  // Reported once per person: asking again says so.
  await pizza.hover();
  await pizza.getByTestId('action-report').click();
  await eve.getByTestId('confirm-report-yes').click();
  await eve.getByTestId('action-error').filter({ hasText: 'reported message' }).waitFor();
  assert.deepEqual([...dee.errors, ...eve.errors, ...warden.errors], []);
});

test('a moderator sets the topic and slow mode; the others see both and their composer counts down', async () => {
  const fay = await openPage(browser, server.url);
  await join(fay, 'Fay');
  const keeper = await openPage(browser, server.url);
  await joinAsModerator(keeper, 'Keeper');
  assert.equal(await fay.getByTestId('room-settings').count(), 0, 'not Fay\'s to change');

  await keeper.getByTestId('room-settings').click();
  const form = keeper.getByTestId('room-settings-form');
  await form.waitFor();
  await form.getByTestId('room-topic-edit').fill('Be kind to each other');
  await form.getByTestId('room-slow-edit').selectOption('30');
  await assertAccessible(keeper, 'a moderator\'s room settings');
  await keeper.screenshot({ path: path.join(artifacts, 'moderation-room-settings.png') });
  await form.getByTestId('room-settings-save').click();
  await form.waitFor({ state: 'detached' });

  // Fay's header hears of both through her stream.
  await fay.getByTestId('room-topic').filter({ hasText: 'Be kind to each other' }).waitFor();
  await fay.getByTestId('room-slow-mode').filter({ hasText: '30 s' }).waitFor();
  await say(fay, 'first, and then I wait');
  // Confirmed by the server (a sending bubble is faint, which axe would
  // rightly flag), as the countdown may come first.
  await messagesWithText(fay, 'first, and then I wait').and(fay.locator('[id^="msg-"]')).waitFor();
  const countdown = fay.getByTestId('slow-countdown');
  await countdown.waitFor();
  assert.match(await countdown.innerText(), /Slow mode: you can send again in \d+ s \(one message every 30 s here\)\./);
  await fay.getByTestId('composer-input').fill('too soon');
  assert.equal(await fay.getByTestId('send-button').isDisabled(), true);
  await assertAccessible(fay, 'a composer counting down in slow mode');
  await fay.screenshot({ path: path.join(artifacts, 'moderation-slow-mode.png') });
  // Moderators are exempt.
  await say(keeper, 'one');
  await say(keeper, 'two');
  await messagesWithText(fay, 'two').and(fay.locator('[id^="msg-"]')).waitFor();

  // Off again: the chip goes.
  await keeper.getByTestId('room-settings').click();
  await keeper.getByTestId('room-slow-edit').selectOption('0');
  await keeper.getByTestId('room-settings-save').click();
  await fay.getByTestId('room-slow-mode').waitFor({ state: 'detached' });
  assert.deepEqual([...fay.errors, ...keeper.errors], []);
});

// Last in this file: the ban takes the address (127.0.0.1, everyone's here)
// with it, for every page but a moderator's.
test('a moderator bans someone from the online list; their page says so instead of the chat', async () => {
  const cy = await openPage(browser, server.url);
  await join(cy, 'Cy');
  const mod = await openPage(browser, server.url);
  await joinAsModerator(mod, 'Chief');
  const cyRow = mod.getByTestId('online-person').filter({ hasText: 'Cy' });
  await cyRow.waitFor();
  await cyRow.getByTestId('moderate-person').click();
  await cyRow.getByTestId('ban-person').click();
  await mod.getByText('Cy is banned, and so is their address.').waitFor();

  const page = cy.getByTestId('banned-page');
  await page.waitFor();
  assert.match(await cy.getByTestId('banned-reason').innerText(), /^A moderator banned you until a moderator lifts it\.$/);
  assert.equal(await cy.getByTestId('composer-input').count(), 0, 'nothing to type into');
  await assertAccessible(cy, 'the page a banned person sees');
  await cy.screenshot({ path: path.join(artifacts, 'moderation-banned.png') });
  // The moderator, at the same address, goes on.
  await say(mod, 'order restored');
  await messagesWithText(mod, 'order restored').and(mod.locator('[id^="msg-"]')).waitFor();
  assert.deepEqual([...cy.errors, ...mod.errors], []);
});
