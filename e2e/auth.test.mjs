// The chat behind nginx's auth_basic (deploy/nginx/chat-auth.conf), the
// server started with `--auth-header X-Remote-User --trust-proxy`: the login
// is the name, nobody is asked for one, and the page never sends an
// `authorization` header of its own (it would replace the browser's login).
// A login on --moderators moderates without a key: it deletes a message and
// mutes someone, whose page shows both.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  artifacts, connected, launchBrowser, messagesWithText, openPage, say, startServer,
} from './harness.mjs';
import { startNginx } from './nginx.mjs';

let server;
let nginx;
let browser;

before(async () => {
  server = await startServer(undefined, {
    args: ['--auth-header', 'X-Remote-User', '--trust-proxy'],
    env: { CHAT_MODERATORS: 'carol' },
  });
  nginx = await startNginx({
    upstreamPort: server.port,
    users: 'ada:{PLAIN}secret\nbob:{PLAIN}hunter2\ncarol:{PLAIN}moderate\n',
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await nginx?.stop();
  await server?.stop();
});

function loggedIn(username, password) {
  return { ignoreHTTPSErrors: true, httpCredentials: { username, password } };
}

test('behind auth_basic, the login is the name: no prompt, no renaming, messages under it', async () => {
  const ada = await openPage(browser, nginx.siteUrl, undefined, loggedIn('ada', 'secret'));
  const bob = await openPage(browser, nginx.siteUrl, undefined, loggedIn('bob', 'hunter2'));
  const bearer = [];
  ada.on('request', (request) => {
    if (/^Bearer /.test(request.headers().authorization ?? '')) bearer.push(request.url());
  });
  for (const page of [ada, bob]) {
    await connected(page, { timeout: 15_000 });
    assert.equal(await page.getByTestId('name-input').count(), 0, 'never asked for a name');
    assert.equal(await page.getByTestId('change-name').isDisabled(), true, 'the login is not ours to change');
  }
  assert.equal(await ada.locator('.me-name').innerText(), 'ada');
  assert.equal(await bob.locator('.me-name').innerText(), 'bob');

  await say(ada, 'logged in as ada');
  const seen = messagesWithText(bob, 'logged in as ada');
  await seen.waitFor();
  assert.equal(await seen.getByTestId('message-author').innerText(), 'ada');
  await messagesWithText(ada, 'logged in as ada').and(ada.locator('[data-state="delivered"]')).waitFor();
  assert.equal(await messagesWithText(ada, 'logged in as ada').getAttribute('data-own'), 'true');
  const online = () => bob.getByTestId('online-person').locator('.person-name').allInnerTexts();
  await bob.waitForFunction(() => document.querySelectorAll('[data-testid="online-person"]').length === 2);
  assert.deepEqual(await online(), ['ada', 'bob']);
  assert.deepEqual(bearer, [], 'no Bearer header behind the proxy');
  await ada.screenshot({ path: path.join(artifacts, 'auth-basic-ada.png') });

  for (const page of [ada, bob]) assert.deepEqual(page.errors, []);
  await ada.context().close();
  await bob.context().close();
});

test('behind auth_basic, a login on --moderators moderates without a key', async () => {
  const dan = await openPage(browser, nginx.siteUrl, undefined, loggedIn('bob', 'hunter2'));
  const carol = await openPage(browser, nginx.siteUrl, undefined, loggedIn('carol', 'moderate'));
  for (const page of [dan, carol]) await connected(page, { timeout: 15_000 });
  // The proxy's word is the proof: a badge, and no key was asked for.
  await carol.getByTestId('moderator-badge').waitFor();
  assert.equal(await carol.getByTestId('key-input').count(), 0);
  assert.equal(await dan.getByTestId('moderator-badge').count(), 0);

  await say(dan, 'spam from behind the proxy');
  const spam = messagesWithText(carol, 'spam from behind the proxy');
  await spam.and(carol.locator('[id^="msg-"]')).waitFor();
  await spam.hover();
  await spam.getByTestId('action-delete').click();
  await carol.getByTestId('delete-reason').fill('spam');
  await carol.getByTestId('confirm-delete-yes').click();
  await dan.getByTestId('message').filter({ hasText: 'This message was deleted by a moderator.' }).waitFor();

  // Muted from the online list: bob's next message is refused, and says so.
  const bobRow = carol.getByTestId('online-person').filter({ hasText: 'bob' });
  await bobRow.getByTestId('moderate-person').click();
  await bobRow.getByRole('button', { name: 'Mute 10 minutes' }).click();
  await bobRow.getByTestId('moderation-said').filter({ hasText: 'bob is muted in #general for 10 minutes.' }).waitFor();
  await say(dan, 'and more');
  await dan.getByTestId('muted-notice').filter({ hasText: 'a moderator muted you in #general' }).waitFor();
  for (const page of [dan, carol]) assert.deepEqual(page.errors, []);
  await dan.context().close();
  await carol.context().close();
});
