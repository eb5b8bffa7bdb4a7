#!/usr/bin/env node
// Message latency, gRPC-Web over HTTP/1.1 straight to chat-server versus
// through nginx (TLS, rendered from deploy/nginx/ as in the proxy tests), in
// one run against one server.
//
//   node e2e/bench-proxy.mjs [--count N] [--warmup N]
//
// For each path: one Subscribe stream (waited on until its Ready event), then
// N sequential Send calls, each timed from just before the Send request to
// the moment that message (matched by nonce) arrives on the stream. Each
// path gets its own stream and keep-alive connections, and --warmup untimed
// messages first (default 20) so connection and TLS setup are not counted.
// Prints a table, then one JSON line.
import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { startServer } from './harness.mjs';
import { startNginx } from './nginx.mjs';
import { agentFor, send, subscribe } from './grpcweb.mjs';

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '500' },
    warmup: { type: 'string', default: '20' },
  },
});
const count = Number(values.count);
const warmup = Number(values.warmup);
if (!Number.isInteger(count) || count < 1) throw new Error('--count must be a positive integer');
if (!Number.isInteger(warmup) || warmup < 0) throw new Error('--warmup must be a non-negative integer');

/** Nearest-rank percentile of sorted `values`. */
function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function summarize(latencies) {
  const sorted = [...latencies].sort((a, b) => a - b);
  const round = (x) => Math.round(x * 1000) / 1000;
  return {
    n: sorted.length,
    p50: round(percentile(sorted, 50)),
    p90: round(percentile(sorted, 90)),
    p99: round(percentile(sorted, 99)),
    max: round(sorted.at(-1)),
    mean: round(sorted.reduce((a, b) => a + b, 0) / sorted.length),
  };
}

/** Sends `warmup` + `count` messages to `base`, returns the timed latencies in ms. */
async function measure(base, label) {
  const streamAgent = agentFor(base);
  const sendAgent = agentFor(base, { maxSockets: 1 });
  const stream = subscribe(base, `bench-${label}`, { agent: streamAgent });
  const waiting = new Map(); // nonce -> resolve(arrival time)
  stream.on('event', (event, at) => {
    if (event.type !== 'message') return;
    const resolve = waiting.get(event.message.nonce);
    if (resolve) { waiting.delete(event.message.nonce); resolve(at); }
  });
  let ended = null;
  stream.once('end', (info) => {
    ended = info;
    for (const resolve of waiting.values()) resolve(null);
  });
  await stream.ready;

  const latencies = [];
  for (let i = 0; i < warmup + count; i += 1) {
    const nonce = `${label}-${i}-${Math.random().toString(36).slice(2, 10)}`;
    const arrived = new Promise((resolve) => waiting.set(nonce, resolve));
    const started = performance.now();
    const reply = await send(base, { username: `bench-${label}`, message: `message ${i}`, nonce }, { agent: sendAgent });
    if (reply.httpStatus !== 200 || reply.grpcStatus !== 0) {
      throw new Error(`${label}: Send failed: ${JSON.stringify(reply)}`);
    }
    const at = await arrived;
    if (at === null) throw new Error(`${label}: stream ended before message ${i} arrived: ${JSON.stringify(ended)}`);
    if (i >= warmup) latencies.push(at - started);
  }
  stream.close();
  streamAgent.destroy();
  sendAgent.destroy();
  return latencies;
}

// One sender posting hundreds of messages back to back: a load generator,
// not a person, so the posting rate limit is lifted.
const server = await startServer(undefined, {
  args: ['--rate-limit', '0'], captureLogs: true, env: { RUST_LOG: 'warn' },
});
let nginx;
try {
  // The shipped 1 h read timeout: the benchmark is not about idling.
  nginx = await startNginx({ upstreamPort: server.port, readTimeout: '1h' });
  const direct = summarize(await measure(server.url, 'direct'));
  const proxied = summarize(await measure(nginx.siteUrl, 'nginx'));

  const nginxVersion = spawnSync('/usr/sbin/nginx', ['-v'], { encoding: 'utf8' }).stderr.trim().replace(/^nginx version: /, '');
  const rows = [
    ['path', 'n', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'mean ms'],
    ['direct (HTTP/1.1)', direct],
    ['nginx (TLS, HTTP/1.1)', proxied],
  ].map((row) => (Array.isArray(row) && row.length === 2 && typeof row[1] === 'object'
    ? [row[0], ...['n', 'p50', 'p90', 'p99', 'max', 'mean'].map((k) => String(row[1][k]))]
    : row));
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const line = (r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ');
  console.log(`send -> receipt latency, ${count} sequential messages per path (${warmup} warm-up each), `
    + `${cpus().length} CPUs, node ${process.version}, ${nginxVersion}`);
  console.log(line(rows[0]));
  console.log(rows[0].map((_, c) => '-'.repeat(widths[c])).join('  '));
  for (const r of rows.slice(1)) console.log(line(r));
  console.log(JSON.stringify({
    bench: 'proxy-latency', count, warmup, unit: 'ms', cpus: cpus().length, node: process.version,
    nginx_version: nginxVersion, direct, nginx: proxied,
    overhead_p50: Math.round((proxied.p50 - direct.p50) * 1000) / 1000,
  }));
} finally {
  await nginx?.stop();
  await server.stop();
}
