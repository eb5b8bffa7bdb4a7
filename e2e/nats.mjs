// A three-node NATS JetStream cluster on loopback ports, for the browser
// test of cluster mode: the `nats-cluster` binary (testkit/, the launcher
// the Rust cluster tests and the load generator use too; `cargo build
// --release -p chat-testkit` builds it, scripts/test does) run as a child.
// It starts the nodes (a generated config and store each, in one temp dir
// that also holds their logs), prints one JSON line once every node is
// healthy and the JetStream meta leader sees both others as current peers,
// and then takes commands on stdin, one JSON line answering each. When its
// stdin closes (stop(), or this process ending however it ends) it kills
// every node and removes the temp dir ($KEEP_NATS_DIR keeps it).
//
// nats-server is $NATS_SERVER if set, else the one `scripts/install --tests`
// puts in .tools/py/bin/nats-server; $NATS_CLUSTER overrides the launcher.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { root } from './harness.mjs';

const NATS_CLUSTER = process.env.NATS_CLUSTER ?? path.join(root, 'target', 'release', 'nats-cluster');
const STOP_TIMEOUT_MS = 10_000;

/**
 * Starts the three nodes and waits until JetStream is ready. Returns
 * { urls (comma-separated, as --nats takes them), dir, nodes ([{ name, url,
 * monitor, log, pid, running }], as of the last command), logs(), stop(),
 * and kill(i), pause(i), resume(i), restart(i) for node i (restart waits
 * until it has caught up) }.
 */
export async function startNatsCluster() {
  if (!existsSync(NATS_CLUSTER)) {
    throw new Error(`nats-cluster not found: cargo build --release -p chat-testkit (looked for ${NATS_CLUSTER})`);
  }
  const child = spawn(NATS_CLUSTER, [], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => { stderr += chunk; });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  // An unexpected exit shows up as the end of its stdout, below.
  child.stdin.on('error', () => {});
  const lines = createInterface({ input: child.stdout, crlfDelay: Infinity })[Symbol.asyncIterator]();
  const nextLine = async (what) => {
    const { value, done } = await lines.next();
    if (done) {
      const { code, signal } = await exited;
      throw new Error(`nats-cluster exited (${signal ?? code}) before ${what}:\n${stderr}`);
    }
    return JSON.parse(value);
  };

  const state = await nextLine('the cluster was ready');
  const cluster = { dir: state.dir, urls: state.urls, nodes: state.nodes };

  // One command at a time, each answered by one line.
  let queue = Promise.resolve();
  const command = (line) => {
    const answer = queue.then(async () => {
      child.stdin.write(`${line}\n`);
      const reply = await nextLine(`answering ${line}`);
      if (reply.error) throw new Error(`nats-cluster: ${line}: ${reply.error}`);
      cluster.nodes = reply.nodes;
      return reply;
    });
    queue = answer.catch(() => {});
    return answer;
  };

  cluster.kill = (i) => command(`kill ${i}`);
  cluster.pause = (i) => command(`pause ${i}`);
  cluster.resume = (i) => command(`resume ${i}`);
  cluster.restart = (i) => command(`restart ${i}`);

  /** The tail of every node's log. */
  cluster.logs = () => cluster.nodes.map(({ name, log }) => {
    let text = '';
    try { text = readFileSync(log, 'utf8'); } catch { /* not yet, or removed */ }
    return `--- ${name}\n${text.split('\n').slice(-20).join('\n')}`;
  }).join('\n');

  /** Kills every node and removes the temp dir (closing the launcher's stdin). */
  cluster.stop = async () => {
    child.stdin.end();
    const timer = setTimeout(() => child.kill('SIGTERM'), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  };

  return cluster;
}
