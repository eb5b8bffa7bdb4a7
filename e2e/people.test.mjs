// Three people in three browsers through a real chat-server: who is online,
// who is typing, a name somebody else holds, a reload that keeps the name,
// and a person leaving.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  artifacts, connected, join, messagesWithText, openPage, say, serverAndBrowser, startServer,
} from './harness.mjs';
import * as grpcWeb from './grpcweb.mjs';

const chat = serverAndBrowser();

/** The names in a page's online list, in order. */
async function online(page) {
  return page.getByTestId('online-person').locator('.person-name').allInnerTexts();
}

async function waitForOnline(page, names) {
  const expected = JSON.stringify(names);
  try {
    await page.waitForFunction(
      (want) => JSON.stringify([...document.querySelectorAll('[data-testid="online-person"] .person-name')]
        .map((e) => e.textContent)) === want,
      expected,
      { timeout: 15_000 },
    );
  } catch (error) {
    assert.fail(`online: wanted ${expected}, shown ${JSON.stringify(await online(page))} (${error.message})`);
  }
}

async function typingLine(page) {
  return (await page.getByTestId('typing').innerText()).trim();
}

async function waitForTyping(page, text) {
  await page.waitForFunction(
    (want) => document.querySelector('[data-testid="typing"]')?.textContent.trim() === want,
    text,
    { timeout: 15_000 },
  );
}

test('three people: the online list, joins, typing, a taken name, a reload and a leave', async () => {
  const ada = await openPage(chat.browser, chat.server.url);
  await join(ada, 'Ada');
  await waitForOnline(ada, ['Ada']);
  const bob = await openPage(chat.browser, chat.server.url);
  await join(bob, 'Bob');
  const cy = await openPage(chat.browser, chat.server.url);
  await join(cy, 'Cy');
  for (const page of [ada, bob, cy]) await waitForOnline(page, ['Ada', 'Bob', 'Cy']);

  // Ada saw the others arrive, quietly; nobody is told of their own arrival,
  // and the ones already there when a page opened are in its list, not lines.
  const lines = ada.getByTestId('presence-line');
  await lines.filter({ hasText: 'Cy joined' }).waitFor();
  assert.deepEqual(await lines.allInnerTexts(), ['Bob joined', 'Cy joined']);
  assert.equal(await cy.getByTestId('presence-line').count(), 0);
  assert.equal(await ada.locator('[data-testid="online-person"].own .person-name').innerText(), 'Ada');

  // Typing: one, then two, then the one who sent drops out of the line.
  assert.equal(await typingLine(bob), '');
  await ada.getByTestId('composer-input').pressSequentially('hello every');
  await waitForTyping(bob, 'Ada is typing...');
  await cy.getByTestId('composer-input').pressSequentially('hi');
  await waitForTyping(bob, 'Ada and Cy are typing...');
  assert.equal(await typingLine(ada), 'Cy is typing...', 'nobody sees their own typing');
  await ada.getByTestId('composer-input').pressSequentially('one');
  await ada.getByTestId('composer-input').press('Enter');
  await messagesWithText(bob, 'hello everyone').waitFor();
  await waitForTyping(bob, 'Cy is typing...');
  // Emptying the box takes the notice back.
  await cy.getByTestId('composer-input').fill('');
  await cy.getByTestId('composer-input').press('Backspace');
  await waitForTyping(bob, '');
  await bob.screenshot({ path: path.join(artifacts, 'people-wide.png') });

  // Somebody else holds "ada" (in any case): a plain message and a way out.
  const eve = await openPage(chat.browser, chat.server.url);
  await eve.getByTestId('name-input').fill('ada');
  await eve.getByTestId('name-submit').click();
  const error = eve.getByTestId('name-error');
  await error.filter({ hasText: 'ada is taken' }).waitFor();
  await eve.screenshot({ path: path.join(artifacts, 'people-taken.png') });
  const suggestion = eve.getByTestId('name-suggestion');
  const offered = (await suggestion.innerText()).match(/^Be (ada\d+)\?$/)?.[1];
  assert.ok(offered, `a suggested name, got ${await suggestion.innerText()}`);
  await suggestion.click();
  await connected(eve);
  assert.equal(await eve.locator('.me-name').innerText(), offered);
  // Listed as people read names, whatever their case.
  await waitForOnline(ada, ['Ada', offered, 'Bob', 'Cy']);

  // A sessionless client cannot post as Ada either.
  const forged = await grpcWeb.send(chat.server.url, { username: 'ADA', message: 'I am ada' });
  assert.equal(forged.grpcStatus, 7, JSON.stringify(forged));

  // Bob reloads: same name without being asked, and nobody sees him leave.
  const before = await lines.count();
  await bob.reload();
  await connected(bob);
  assert.equal(await bob.getByTestId('name-input').count(), 0, 'no name prompt after reload');
  assert.equal(await bob.locator('.me-name').innerText(), 'Bob');
  await messagesWithText(bob, 'hello everyone').waitFor();
  assert.equal(await messagesWithText(bob, 'hello everyone').getAttribute('data-own'), 'false');
  await say(bob, 'back again');
  await messagesWithText(ada, 'back again').waitFor();
  assert.equal(await messagesWithText(bob, 'back again').getAttribute('data-own'), 'true');

  // Cy closes the tab: gone from every list, with one quiet line.
  await cy.context().close();
  await lines.filter({ hasText: 'Cy left' }).waitFor({ timeout: 15_000 });
  await waitForOnline(ada, ['Ada', offered, 'Bob']);
  // Bob's reload (long over by now) left no trace.
  const added = (await lines.allInnerTexts()).slice(before);
  assert.deepEqual(added, ['Cy left'], 'only Cy left');

  for (const page of [ada, bob, eve]) assert.deepEqual(page.errors, []);
  await ada.screenshot({ path: path.join(artifacts, 'people-left.png') });
  for (const page of [ada, bob, eve]) await page.context().close();
});

test('on a phone, the count in the header opens the list of people', async () => {
  const other = await openPage(chat.browser, chat.server.url);
  await join(other, 'Grace');
  const phone = await openPage(chat.browser, chat.server.url, { width: 360, height: 740 });
  await join(phone, 'Hopper');
  const list = phone.getByTestId('online-list');
  assert.equal(await list.isVisible(), false, 'the list is a drawer on a phone');
  const count = phone.getByTestId('online-count');
  await phone.waitForFunction(
    () => document.querySelector('[data-testid="online-count"]')?.textContent.trim() === '2',
  );
  await count.click();
  await list.waitFor({ state: 'visible' });
  await waitForOnline(phone, ['Grace', 'Hopper']);
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  assert.equal(overflow, false, 'no horizontal scrolling');
  await phone.screenshot({ path: path.join(artifacts, 'people-phone.png') });
  await phone.getByRole('button', { name: 'Close the list of people online' }).click();
  await list.waitFor({ state: 'hidden' });
  for (const page of [other, phone]) assert.deepEqual(page.errors, []);
  await other.context().close();
  await phone.context().close();
});

test('after a server restart, the page claims its name again by itself', async () => {
  const restartable = await startServer();
  const page = await openPage(chat.browser, restartable.url);
  await join(page, 'Lovelace');
  const db = restartable.db;
  const { port } = restartable;
  await restartable.stop();
  // The new server knows no sessions: the page joins again, unasked.
  const again = await startServer(port, { db });
  try {
    await say(page, 'still me');
    await messagesWithText(page, 'still me').and(page.locator('[data-state="delivered"]')).waitFor({ timeout: 30_000 });
    assert.equal(await page.getByTestId('name-input').count(), 0, 'not asked again');
    assert.equal(await page.locator('.me-name').innerText(), 'Lovelace');
    await waitForOnline(page, ['Lovelace']);
    assert.deepEqual(page.errors, []);
  } finally {
    await page.context().close();
    await again.stop();
  }
});
