// Reply, edit, react and delete between two people in Chromium, through a
// real chat-server: by mouse and by keyboard, what each sees, and what a
// reload (the history, in its current state) shows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { artifacts, connected, join, messagesWithText, openPage, say, serverAndBrowser } from './harness.mjs';

const chat = serverAndBrowser();

/** The row of a message whose text is `text`, once it is stored (has an id). */
async function stored(page, text) {
  const row = messagesWithText(page, text);
  await row.and(page.locator('[id^="msg-"]')).waitFor();
  return row;
}

test('reply, react, edit and delete: both people see each change, and a reload shows the current state', async () => {
  const ada = await openPage(chat.browser, chat.server.url);
  const bob = await openPage(chat.browser, chat.server.url);
  await join(ada, 'Ada');
  await join(bob, 'Bob');
  await say(ada, 'lunch at noon?');

  // Bob replies from the message's toolbar.
  const question = await stored(bob, 'lunch at noon?');
  await question.hover();
  await question.getByTestId('action-reply').click();
  await bob.getByTestId('reply-banner').filter({ hasText: 'Ada' }).waitFor();
  await say(bob, 'yes, see you there');
  assert.equal(await bob.getByTestId('reply-banner').count(), 0, 'the banner goes once sent');
  for (const page of [ada, bob]) {
    const answer = await stored(page, 'yes, see you there');
    const quote = answer.getByTestId('reply-quote');
    await quote.waitFor();
    assert.match(await quote.innerText(), /Ada\s*lunch at noon\?/);
  }

  // Bob reacts with 👍 from the picker; Ada sees the count and the names.
  await question.hover();
  await question.getByTestId('action-react').click();
  await bob.getByTestId('reaction-picker').getByRole('button', { name: 'React with 👍' }).click();
  const adaQuestion = await stored(ada, 'lunch at noon?');
  const chip = adaQuestion.getByTestId('reaction');
  await chip.waitFor();
  assert.equal(await chip.getAttribute('aria-label'), '👍 1, Bob reacted with 👍');
  assert.equal(await chip.getAttribute('title'), 'Bob reacted with 👍');
  assert.equal(await chip.getAttribute('aria-pressed'), 'false', 'not Ada’s');
  assert.equal((await chip.innerText()).replace(/\s+/g, ''), '👍1');
  // Ada adds hers by clicking the chip; then there are two.
  await chip.click();
  await ada.waitForFunction(() => document.querySelector('[data-testid="reaction"][aria-pressed="true"]'));
  assert.equal(await chip.getAttribute('aria-label'), '👍 2, Bob, Ada reacted with 👍');
  await question.getByTestId('reaction').filter({ hasText: '2' }).waitFor();
  // And takes it back.
  await chip.click();
  await ada.waitForFunction(() => document.querySelector('[data-testid="reaction"]')?.getAttribute('aria-pressed') === 'false');

  // Ada edits her message by keyboard: Up arrow in the empty composer,
  // then Enter saves.
  await ada.getByTestId('composer-input').focus();
  await ada.keyboard.press('ArrowUp');
  const editBox = ada.getByTestId('edit-input');
  await editBox.waitFor();
  await editBox.fill('lunch at 12:30?');
  await editBox.press('Enter');
  for (const page of [ada, bob]) {
    const edited = await stored(page, 'lunch at 12:30?');
    await edited.getByTestId('message-edited').waitFor();
  }
  // The quote in Bob's reply follows the edit.
  await messagesWithText(bob, 'yes, see you there').getByTestId('reply-quote').filter({ hasText: '12:30' }).waitFor();
  await ada.screenshot({ path: path.join(artifacts, 'actions-ada.png') });
  await bob.screenshot({ path: path.join(artifacts, 'actions-bob.png') });

  // Escape cancels an edit; nothing changes.
  await ada.getByTestId('composer-input').focus();
  await ada.keyboard.press('ArrowUp');
  await editBox.waitFor();
  await editBox.fill('never saved');
  await editBox.press('Escape');
  assert.equal(await editBox.count(), 0);
  assert.equal(await messagesWithText(ada, 'never saved').count(), 0);

  // Bob cannot edit or delete Ada's message: no such buttons.
  const bobsView = await stored(bob, 'lunch at 12:30?');
  await bobsView.hover();
  assert.equal(await bobsView.getByTestId('action-edit').count(), 0);
  assert.equal(await bobsView.getByTestId('action-delete').count(), 0);

  // Ada deletes it, after saying yes to the question under it: Cancel (or
  // Escape) keeps it, and focus starts on Cancel.
  const adaView = await stored(ada, 'lunch at 12:30?');
  await adaView.hover();
  await adaView.getByTestId('action-delete').click();
  const asking = adaView.getByTestId('confirm-delete');
  await asking.waitFor();
  assert.equal(await asking.getAttribute('role'), 'alertdialog');
  assert.equal(await adaView.getByTestId('confirm-delete-cancel').evaluate((b) => b === document.activeElement), true);
  await ada.keyboard.press('Escape');
  await asking.waitFor({ state: 'detached' });
  await adaView.hover();
  await adaView.getByTestId('action-delete').click();
  await adaView.getByTestId('confirm-delete-cancel').click();
  await asking.waitFor({ state: 'detached' });
  assert.equal(await messagesWithText(bob, 'lunch at 12:30?').count(), 1, 'kept');
  await adaView.hover();
  await adaView.getByTestId('action-delete').click();
  await adaView.getByTestId('confirm-delete-yes').click();
  for (const page of [ada, bob]) {
    await page.getByTestId('message-deleted').filter({ hasText: 'This message was deleted.' }).waitFor();
    assert.equal(await messagesWithText(page, 'lunch at 12:30?').count(), 0);
    await messagesWithText(page, 'yes, see you there').getByTestId('reply-quote').filter({ hasText: 'deleted message' }).waitFor();
  }

  // A reload shows the history as it stands now.
  await bob.reload();
  await connected(bob);
  await bob.getByTestId('message-deleted').waitFor();
  assert.equal(await messagesWithText(bob, 'lunch at noon?').count(), 0);
  assert.equal(await messagesWithText(bob, 'lunch at 12:30?').count(), 0);
  await messagesWithText(bob, 'yes, see you there').getByTestId('reply-quote').waitFor();

  for (const page of [ada, bob]) assert.deepEqual(page.errors, []);
  await ada.context().close();
  await bob.context().close();
});

test('a refused reaction says why, and the page goes on', async () => {
  const ada = await openPage(chat.browser, chat.server.url);
  await join(ada, 'Picky');
  await say(ada, 'react to me');
  const row = await stored(ada, 'react to me');
  await row.hover();
  await row.getByTestId('action-react').click();
  await ada.getByTestId('pick-other').fill('not an emoji');
  await ada.getByTestId('pick-other').press('Enter');
  const error = ada.getByTestId('action-error');
  await error.waitFor();
  assert.match(await error.innerText(), /not one emoji/);
  await say(ada, 'still here');
  await stored(ada, 'still here');
  assert.deepEqual(ada.errors, []);
  await ada.context().close();
});
