// Cluster mode in the browser: three chat-server replicas (--nats) on a
// three-node NATS JetStream cluster, behind nginx configured from the
// shipped deploy/cluster/nginx.conf (TLS, HTTP/2, round robin, passive
// health checks). The replica serving a page's stream is killed with
// kill -9 while messages keep coming: the page reconnects through nginx to
// a survivor, resumes after the last id it has, and shows every message
// exactly once, in order. Before that, moderation across replicas: a
// moderator's page on one replica deletes, handles a report from a third
// and mutes, and the offender's page on another replica shows each effect;
// and a page on one replica searches what was written through another
// (its own index, fed from the room's stream) and opens the hit in context.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import http from 'node:http';
import path from 'node:path';
import {
  artifacts, join, joinAsModerator, launchBrowser, messagesWithText, openPage, say, startServer,
} from './harness.mjs';
import { startClusterNginx } from './nginx.mjs';
import { startNatsCluster } from './nats.mjs';
import { agentFor, send, unary } from './grpcweb.mjs';

const tls = { ignoreHTTPSErrors: true };
const KEY = 'cluster moderator key';
let keyDir;
let nats;
const replicas = [];
let nginx;
let browser;

/** GET on a replica itself (nginx hides /metrics): { status, body }. */
function get(port, pathname) {
  return new Promise((resolve, reject) => {
    const request = http.get({ host: '127.0.0.1', port, path: pathname, agent: false }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => { body += chunk; });
      response.once('end', () => resolve({ status: response.statusCode, body }));
      response.once('error', reject);
    });
    request.setTimeout(5_000, () => request.destroy(new Error(`timed out: ${pathname} on ${port}`)));
    request.once('error', reject);
  });
}

async function eventually(what, condition, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value !== undefined && value !== false && value !== null) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Subscribe streams open on a replica, from its /metrics. */
async function subscribeStreams(replica) {
  const { body } = await get(replica.port, '/metrics');
  const line = body.split('\n').find((l) => l.startsWith('chat_streams_open{kind="subscribe"} '));
  return line ? Number(line.split(' ')[1]) : 0;
}

/**
 * The one replica among `candidates` that serves a Subscribe stream (the
 * page's: nobody else subscribes), once exactly one of them counts one.
 */
async function servingThePage(candidates) {
  return eventually('exactly one replica serving the page', async () => {
    const counts = await Promise.all(candidates.map(subscribeStreams));
    const total = counts.reduce((a, b) => a + b, 0);
    return total === 1 ? candidates[counts.indexOf(1)] : undefined;
  });
}

/** Records every data-state the page's connection status takes from now on. */
async function watchConnectionState(page) {
  await page.evaluate(() => {
    const states = [];
    window.connectionStates = states;
    const record = () => {
      const state = document.querySelector('[data-testid="connection-status"]')
        ?.getAttribute('data-state') ?? 'missing';
      if (state !== states.at(-1)) states.push(state);
    };
    record();
    new MutationObserver(record).observe(document.body, {
      subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'],
    });
  });
  return () => page.evaluate(() => window.connectionStates);
}

/**
 * A client that keeps sending through nginx (gRPC-Web, over its own
 * keep-alive connections) until stopped, one message at a time; a failed
 * call is retried with the same nonce until it is acknowledged, as the web
 * app's retry does. `acked` holds { id, message } in the order acknowledged.
 */
function keepSending(base, username) {
  const agent = agentFor(base);
  const sender = { acked: [], failedCalls: 0, stopped: false };
  sender.done = (async () => {
    for (let n = 0; !sender.stopped; n++) {
      const message = `${username} says ${n}`;
      const nonce = `${username}-${n}`;
      const started = Date.now();
      for (;;) {
        let reply;
        try {
          reply = await send(base, { username, message, nonce }, { agent });
        } catch (error) {
          reply = { error: error.message };
        }
        if (reply.httpStatus === 200 && reply.grpcStatus === 0 && reply.id > 0) {
          sender.acked.push({ id: reply.id, message });
          break;
        }
        sender.failedCalls++;
        if (Date.now() - started > 20_000) {
          throw new Error(`${nonce} never acknowledged: ${JSON.stringify(reply)}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      await new Promise((r) => setTimeout(r, 40));
    }
    agent.destroy();
  })();
  return sender;
}

before(async () => {
  keyDir = mkdtempSync(path.join(os.tmpdir(), 'chat-cluster-key-'));
  const keyFile = path.join(keyDir, 'moderator.key');
  writeFileSync(keyFile, `${KEY}\n`);
  chmodSync(keyFile, 0o600);
  nats = await startNatsCluster();
  for (let i = 0; i < 3; i++) {
    replicas.push(await startServer(undefined, {
      // 2 s heartbeats: a stream that dies silently is given up in 5 s.
      args: ['--nats', nats.urls, '--heartbeat', '2'],
      env: { CHAT_RATE_LIMIT: '0', CHAT_MODERATORS: 'Marshal', CHAT_MODERATOR_KEY_FILE: keyFile },
      captureLogs: true,
    }));
  }
  // Ready once healthy (a replica reports 503 until it follows its rooms).
  for (const replica of replicas) {
    await eventually(
      `replica on ${replica.port} healthy`,
      async () => (await get(replica.port, '/healthz').catch(() => ({ status: 0 }))).status === 200,
      30_000,
    );
  }
  nginx = await startClusterNginx({ upstreamPorts: replicas.map((r) => r.port) });
  browser = await launchBrowser(['--ignore-certificate-errors']);
});

after(async () => {
  // Each step on its own, so one failing does not leave the rest running.
  for (const step of [
    () => browser?.close(),
    () => nginx?.stop(),
    ...replicas.map((replica) => async () => {
      replica.kill('SIGKILL');
      await replica.exited;
      // startServer's fresh database dir, unused in cluster mode.
      rmSync(path.dirname(replica.db), { recursive: true, force: true });
    }),
    () => nats?.stop(),
    () => keyDir && rmSync(keyDir, { recursive: true, force: true }),
  ]) {
    try { await step(); } catch (error) { console.error('cleanup:', error); }
  }
});

// First: the kill test below counts the Subscribe streams, so this one
// closes its pages when done.
test('a moderator on one replica deletes, handles a report and mutes; the page on another shows it', async (t) => {
  const pages = [];
  t.after(() => Promise.all(pages.map((page) => page.context().close().catch(() => {}))));
  const marshal = await openPage(browser, replicas[0].url);
  pages.push(marshal);
  await joinAsModerator(marshal, 'Marshal', KEY);
  const gus = await openPage(browser, replicas[1].url);
  pages.push(gus);
  await join(gus, 'Gus');
  const hal = await openPage(browser, replicas[2].url);
  pages.push(hal);
  await join(hal, 'Hal');

  // Deleted through replica 0: Gus's page on replica 1 shows it.
  await say(gus, 'spam from replica one');
  const spam = messagesWithText(marshal, 'spam from replica one');
  await spam.and(marshal.locator('[id^="msg-"]')).waitFor();
  await spam.hover();
  await spam.getByTestId('action-delete').click();
  await marshal.getByTestId('confirm-delete-yes').click();
  await gus.getByTestId('message').filter({ hasText: 'This message was deleted by a moderator.' }).waitFor();

  // Reported through replica 2: the moderator's header on replica 0 counts
  // it, and dismissing it empties the panel.
  await say(gus, 'borderline remark');
  const remark = messagesWithText(hal, 'borderline remark');
  await remark.and(hal.locator('[id^="msg-"]')).waitFor();
  await remark.hover();
  await remark.getByTestId('action-report').click();
  await hal.getByTestId('confirm-report-yes').click();
  // The notice, or the refusal it would be instead (to say why).
  await hal.getByTestId('action-notice').or(hal.getByTestId('action-error')).waitFor();
  assert.equal(await hal.getByTestId('action-error').count(), 0,
    await hal.getByTestId('action-error').allInnerTexts().then((t) => t.join()));
  await marshal.getByTestId('reports-count').filter({ hasText: '1' }).waitFor();
  await marshal.getByTestId('reports-toggle').click();
  const report = marshal.getByTestId('report').filter({ hasText: 'borderline remark' });
  await report.waitFor();
  await report.getByTestId('report-dismiss').click();
  await marshal.getByText('Nothing reported. All quiet.').waitFor();

  // Muted through replica 0: Gus, on replica 1, is refused and told why.
  const gusRow = marshal.getByTestId('online-person').filter({ hasText: 'Gus' });
  await gusRow.getByTestId('moderate-person').click();
  await gusRow.getByRole('button', { name: 'Mute 10 minutes' }).click();
  await gusRow.getByTestId('moderation-said').filter({ hasText: 'Gus is muted in #general for 10 minutes.' }).waitFor();
  await say(gus, 'can I still talk?');
  await gus.getByTestId('muted-notice').filter({ hasText: 'a moderator muted you in #general' }).waitFor();
  await gus.screenshot({ path: path.join(artifacts, 'cluster-muted.png') });
  for (const page of [marshal, gus, hal]) assert.deepEqual(page.errors, []);
});

test('a page on one replica searches what was written through another and opens it in context', async (t) => {
  const agent = agentFor(replicas[0].url);
  t.after(() => agent.destroy());
  const created = await unary(replicas[0].url, 'CreateRoom', 'CreateRoomRequest', { name: 'plans', topic: '' }, 'Room', { agent });
  assert.equal(created.grpcStatus, 0, JSON.stringify(created));
  const target = await send(replicas[0].url, { room: 'plans', username: 'Ivo', message: 'Saša brings ćevapi on Friday' }, { agent });
  assert.equal(target.grpcStatus, 0, JSON.stringify(target));
  await send(replicas[0].url, { room: 'plans', username: 'Jan', message: 'Saša brings bread' }, { agent });
  // Enough after it that a page opening the room would not have it.
  for (let n = 1; n <= 120; n++) {
    await send(replicas[0].url, { room: 'plans', username: 'Jan', message: `plan ${n}` }, { agent });
  }
  // Replica 2's own index has it (fed from the room's stream).
  const query = 'sasa from:ivo "brings cevapi"';
  await eventually('replica 2 finds the message', async () => {
    const found = await unary(replicas[2].url, 'Search', 'SearchRequest', { query }, 'SearchReply');
    return found.grpcStatus === 0 && found.reply.hits.length === 1;
  });

  const page = await openPage(browser, replicas[2].url);
  t.after(() => page.context().close().catch(() => {}));
  await join(page, 'Kim');
  await page.keyboard.press('Control+k');
  await page.getByTestId('search-input').fill(query);
  await page.getByTestId('search-status').filter({ hasText: /^1 result$/ }).waitFor();
  const hit = page.getByTestId('search-hit');
  assert.deepEqual(await hit.locator('mark').allTextContents(), ['Saša', 'brings', 'ćevapi']);
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('Enter');
  await page.waitForFunction((id) => location.hash === `#/room/plans/${id}`, target.id);
  await page.waitForFunction((id) => document.getElementById(`msg-${id}`)?.classList.contains('flash'), target.id);
  assert.deepEqual(page.errors, []);
});

test('kill -9 the replica behind a page: it reconnects through nginx and shows every message once, in order', async (t) => {
  const page = await openPage(browser, nginx.siteUrl, undefined, tls);
  await join(page, 'Watcher');
  const states = await watchConnectionState(page);
  const doomed = await servingThePage(replicas);
  const survivors = replicas.filter((r) => r !== doomed);

  const sender = keepSending(nginx.siteUrl, 'Feeder');
  let failure;
  let reconnectMs;
  sender.done.catch((error) => { failure = error; });
  try {
    await eventually('15 messages acknowledged', () => sender.acked.length >= 15);
    await messagesWithText(page, sender.acked[14].message).first().waitFor();

    const killedAt = performance.now();
    doomed.kill('SIGKILL');
    const status = await doomed.exited;
    assert.equal(status.signal, 'SIGKILL');
    await page.waitForFunction(() => {
      const seen = window.connectionStates;
      const at = seen.indexOf('reconnecting');
      return at >= 0 && seen.slice(at).includes('connected');
    }, null, { timeout: 20_000 });
    reconnectMs = performance.now() - killedAt;
    // Its new stream is on a survivor.
    await servingThePage(survivors);
    await page.screenshot({ path: path.join(artifacts, 'cluster-after-failover.png') });

    // More messages after the reconnect, then the sender stops.
    const atReconnect = sender.acked.length;
    await eventually('10 more messages', () => sender.acked.length >= atReconnect + 10);
  } finally {
    sender.stopped = true;
    await sender.done.catch(() => {});
  }
  if (failure) throw failure;

  const expected = [...sender.acked].sort((a, b) => a.id - b.id);
  // The room has the moderation test's ids before these.
  assert.deepEqual(sender.acked.map((m) => m.id), expected.map((_, i) => expected[0].id + i),
    'one sender, each message stored once: ids n, n+1, n+2... in the order acknowledged');
  await messagesWithText(page, expected.at(-1).message).first().waitFor();
  // Let a stray copy, if any, arrive too.
  await page.waitForTimeout(500);
  const shown = (await page.getByTestId('message-text').allInnerTexts())
    .filter((text) => text.startsWith('Feeder says '));
  assert.deepEqual(shown, expected.map((m) => m.message), 'every acknowledged message once, in order');
  const seen = await states();
  t.diagnostic(`${expected.length} messages (ids ${expected[0].id}..${expected.at(-1).id}, `
    + `${sender.failedCalls} calls failed and were retried); `
    + `the page was connected again ${reconnectMs.toFixed(0)} ms after the kill; states: ${seen.join(' -> ')}`);
  assert.equal(seen.at(-1), 'connected');

  // The page's session is good on the survivor too: it still posts as
  // Watcher (through nginx, to any replica), once.
  await say(page, 'still here after the failover');
  const own = page.locator('[data-testid="message"][data-state="delivered"][data-own="true"]')
    .filter({ hasText: 'still here after the failover' });
  await own.first().waitFor();
  await page.waitForTimeout(300);
  assert.equal(await own.count(), 1);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
