// The paper's own Python client, generated from the paper's chat.proto
// (e2e/paper/) with grpcio-tools from PyPI, chats with a gRPC-Web user
// through the real server: what the README means by "works unchanged".
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { root, startServer } from './harness.mjs';
import { send, subscribe } from './grpcweb.mjs';

const python = path.join(root, '.tools', 'py', 'bin', 'python');
let server;

before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

/** Runs the paper's client; resolves with { code, output } when it exits. */
function paperClient(args) {
  const child = spawn(python, [path.join(root, 'e2e', 'paper', 'client.py'), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk) => { output += chunk; });
  child.stderr.on('data', (chunk) => { output += chunk; });
  const exited = new Promise((resolve) => child.once('exit', (code) => resolve({ code, output })));
  return { exited, output: () => output };
}

test('the paper\'s Python client chats with a browser user through the server', async () => {
  const base = server.url;
  const browser = subscribe(base, 'browser-bea');
  await browser.ready;
  const heardPython = new Promise((resolve) => {
    browser.on('event', (event) => {
      if (event.type === 'message' && event.message.message === 'hello from python') resolve(event.message);
    });
  });

  const client = paperClient([
    '--server', `127.0.0.1:${server.port}`, '--name', 'py-ada',
    '--say', 'hello from python', '--expect', 'hello from the browser', '--timeout', '30',
  ]);
  const fromPython = await heardPython;
  assert.equal(fromPython.username, 'py-ada');
  assert.ok(fromPython.id > 0 && fromPython.timestamp > 0, 'stamped by the server');

  const reply = await send(base, { username: 'browser-bea', message: 'hello from the browser' });
  assert.equal(reply.grpcStatus, 0, JSON.stringify(reply));
  const { code, output } = await client.exited;
  assert.equal(code, 0, `the paper's client never heard the browser:\n${output}`);
  assert.match(output, /\] browser-bea: hello from the browser/);
  browser.close();
});
