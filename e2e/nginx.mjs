// nginx in front of a chat-server, configured from the shipped files in
// deploy/nginx/ (rendered, never copied by hand): the chat at the root of its
// own TLS site, and under /chat/ of an "existing" TLS site, each on a free
// loopback port, with a fresh self-signed certificate.
//
// Rendering only substitutes what a real install would change (upstream
// address, include path, listen address, certificate paths) plus a short
// proxy_read_timeout, and fails if an expected line is missing, so an edit to
// the configs cannot quietly make the tests test nothing.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { freePort } from './harness.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const deployDir = path.join(root, 'deploy', 'nginx');
const NGINX = process.env.NGINX ?? '/usr/sbin/nginx';
const OPENSSL = process.env.OPENSSL ?? '/usr/bin/openssl';

/**
 * Replaces every match of `pattern` in `text` with `replacement`, and throws
 * unless there were exactly `count` matches.
 */
export function substitute(text, file, pattern, replacement, count = 1) {
  const regex = pattern instanceof RegExp
    ? new RegExp(pattern.source, pattern.flags.includes('g') ? pattern.flags : `${pattern.flags}g`)
    : new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'g');
  const found = text.match(regex)?.length ?? 0;
  if (found !== count) {
    throw new Error(`rendering ${file}: expected ${count} match(es) of ${regex}, found ${found}; `
      + 'did the shipped config change? update e2e/nginx.mjs to match');
  }
  return text.replace(regex, () => replacement);
}

function read(name) {
  return readFileSync(path.join(deployDir, name), 'utf8');
}

/** Throws if a rendered file still points outside the temp dir or at a public port. */
function checkRendered(text, file) {
  for (const line of text.split('\n')) {
    const directive = line.replace(/#.*/, '').trim();
    if (/(^|\s)\/etc\//.test(directive)) throw new Error(`rendered ${file} still refers to /etc: ${line}`);
    if (/^listen\s/.test(directive) && !/^listen\s+127\.0\.0\.1:\d+[\s;]/.test(directive)) {
      throw new Error(`rendered ${file} listens somewhere other than 127.0.0.1:<port>: ${line}`);
    }
  }
}

/** Writes `dir`/nginx.conf: nginx in the foreground, everything in `dir`, and `includes` in http. */
function writeMain(dir, includes) {
  const out = (name) => path.join(dir, name);
  const running = typeof process.getuid === 'function' && process.getuid() === 0;
  const temp = (name) => { mkdirSync(out(`temp/${name}`), { recursive: true }); return out(`temp/${name}`); };
  const main = `daemon off;
master_process on;
worker_processes 1;
${running ? 'user root;\n' : ''}pid ${out('nginx.pid')};
error_log ${out('error.log')} info;

events {
    worker_connections 1024;
}

http {
    access_log ${out('access.log')};
    client_body_temp_path ${temp('body')};
    proxy_temp_path ${temp('proxy')};
    fastcgi_temp_path ${temp('fastcgi')};
    uwsgi_temp_path ${temp('uwsgi')};
    scgi_temp_path ${temp('scgi')};
    default_type application/octet-stream;

${includes.map((file) => `    include ${file};\n`).join('')}}
`;
  writeFileSync(out('nginx.conf'), main);
  return out('nginx.conf');
}

/**
 * Renders deploy/nginx/* into `dir` for an upstream on 127.0.0.1:`upstreamPort`.
 * Returns the paths of the rendered files.
 */
export function renderConfigs(dir, {
  upstreamPort, redirectPort, sitePort, subPort, cert, key, readTimeout = '3s', users,
}) {
  const out = (name) => path.join(dir, name);

  let proxy = read('chat-proxy.conf');
  proxy = substitute(proxy, 'chat-proxy.conf', /proxy_read_timeout\s+1h;/, `proxy_read_timeout ${readTimeout};`);
  checkRendered(proxy, 'chat-proxy.conf');
  writeFileSync(out('chat-proxy.conf'), proxy);

  let upstream = read('chat-upstream.conf');
  upstream = substitute(upstream, 'chat-upstream.conf', /server\s+127\.0\.0\.1:50051;/, `server 127.0.0.1:${upstreamPort};`);
  checkRendered(upstream, 'chat-upstream.conf');
  writeFileSync(out('chat-upstream.conf'), upstream);

  const includeProxy = 'include /etc/nginx/snippets/chat-proxy.conf;';
  const includeRendered = `include ${out('chat-proxy.conf')};`;
  let siteIncludes = includeRendered;
  if (users) {
    // The site behind auth_basic, as deploy/nginx/chat-auth.conf shows.
    writeFileSync(out('chat.htpasswd'), users);
    let auth = read('chat-auth.conf');
    auth = substitute(auth, 'chat-auth.conf', /auth_basic_user_file\s+[^;\s]+;/, `auth_basic_user_file ${out('chat.htpasswd')};`);
    checkRendered(auth, 'chat-auth.conf');
    writeFileSync(out('chat-auth.conf'), auth);
    siteIncludes = `include ${out('chat-auth.conf')};\n        ${includeRendered}`;
  }

  let site = read('chat-site.conf');
  site = substitute(site, 'chat-site.conf', /^[ \t]*listen\s+\[::\][^;]*;[ \t]*\n/m, '', 2);
  site = substitute(site, 'chat-site.conf', /listen\s+80;/, `listen 127.0.0.1:${redirectPort};`);
  site = substitute(site, 'chat-site.conf', /listen\s+443\s+ssl\s+http2;/, `listen 127.0.0.1:${sitePort} ssl http2;`);
  site = substitute(site, 'chat-site.conf', /ssl_certificate\s+[^;\s]+;/, `ssl_certificate ${cert};`);
  site = substitute(site, 'chat-site.conf', /ssl_certificate_key\s+[^;\s]+;/, `ssl_certificate_key ${key};`);
  site = substitute(site, 'chat-site.conf', includeProxy, siteIncludes);
  checkRendered(site, 'chat-site.conf');
  writeFileSync(out('chat-site.conf'), site);

  let sub = read('chat-subpath.conf');
  sub = substitute(sub, 'chat-subpath.conf', includeProxy, includeRendered);
  checkRendered(sub, 'chat-subpath.conf');
  writeFileSync(out('chat-subpath.conf'), sub);

  // An existing TLS site that adds the chat under /chat/.
  const existing = `server {
    listen 127.0.0.1:${subPort} ssl http2;
    server_name existing.example.org;
    ssl_certificate ${cert};
    ssl_certificate_key ${key};
    ssl_protocols TLSv1.2 TLSv1.3;

    location / {
        return 200 "existing site\\n";
    }

    include ${out('chat-subpath.conf')};
}
`;
  writeFileSync(out('existing-site.conf'), existing);

  return { conf: writeMain(dir, [out('chat-upstream.conf'), out('chat-site.conf'), out('existing-site.conf')]) };
}

async function waitForPorts(ports, child, output, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  const pending = new Set(ports);
  while (pending.size > 0) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`nginx exited (${child.exitCode ?? child.signalCode}): ${output()}`);
    }
    if (Date.now() > deadline) throw new Error(`nginx did not listen on ${[...pending]}: ${output()}`);
    for (const port of [...pending]) {
      const open = await new Promise((resolve) => {
        const socket = connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true); });
        socket.once('error', () => resolve(false));
      });
      if (open) pending.delete(port);
    }
    if (pending.size > 0) await new Promise((r) => setTimeout(r, 50));
  }
}

/** A fresh self-signed certificate for 127.0.0.1 and localhost in `dir`. */
function selfSigned(dir) {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync(OPENSSL, [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  return { cert, key };
}

/**
 * Checks the config `conf` (rendered in `dir`) with nginx -t, starts nginx
 * on it and waits until it listens on `ports`. Returns { errorLog(), stop() }.
 */
async function launch(dir, conf, ports) {
  const args = ['-p', `${dir}/`, '-c', conf, '-e', path.join(dir, 'error.log')];
  try {
    execFileSync(NGINX, [...args, '-t', '-q'], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    throw new Error(`nginx -t rejected the rendered config in ${dir}:\n${error.stderr}`);
  }

  let output = '';
  // Its own process group, so a hung nginx can be killed with its workers.
  const child = spawn(NGINX, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const killAll = () => { try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ } };
  child.stdout.on('data', (d) => { output += d; });
  child.stderr.on('data', (d) => { output += d; });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  // If this process ends without stop(), take nginx (and its workers) along.
  process.once('exit', killAll);
  const errorLog = () => { try { return readFileSync(path.join(dir, 'error.log'), 'utf8'); } catch { return ''; } };
  try {
    await waitForPorts(ports, child, () => output + errorLog());
  } catch (error) {
    killAll();
    throw error;
  }
  return {
    errorLog,
    /** Fast shutdown (open streams are cut), SIGKILL if that hangs. */
    async stop({ keep = !!process.env.KEEP_NGINX_DIR } = {}) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const guard = setTimeout(killAll, 5_000);
        await exited;
        clearTimeout(guard);
      }
      process.off('exit', killAll);
      if (!keep) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Starts nginx in front of the chat-server on 127.0.0.1:`upstreamPort`.
 * Returns { siteUrl, subUrl, redirectUrl, dir, errorLog(), stop() }:
 * siteUrl is https://127.0.0.1:<port>/ (the chat at the root of its site),
 * subUrl is https://127.0.0.1:<port>/chat/ (under an existing site),
 * redirectUrl is the rendered port-80 block (http, redirects to https).
 * With `users` (htpasswd lines), the site is behind auth_basic
 * (deploy/nginx/chat-auth.conf).
 */
export async function startNginx({ upstreamPort, readTimeout = '3s', users }) {
  const dir = mkdtempSync(path.join(tmpdir(), 'chat-nginx-'));
  const { cert, key } = selfSigned(dir);
  const [redirectPort, sitePort, subPort] = [await freePort(), await freePort(), await freePort()];
  const { conf } = renderConfigs(dir, {
    upstreamPort, redirectPort, sitePort, subPort, cert, key, readTimeout, users,
  });
  const nginx = await launch(dir, conf, [redirectPort, sitePort, subPort]);
  return {
    ...nginx,
    dir,
    redirectPort,
    sitePort,
    subPort,
    siteUrl: `https://127.0.0.1:${sitePort}/`,
    subUrl: `https://127.0.0.1:${subPort}/chat/`,
    subOrigin: `https://127.0.0.1:${subPort}`,
    redirectUrl: `http://127.0.0.1:${redirectPort}/`,
  };
}

/**
 * Renders deploy/cluster/nginx.conf into `dir` for replicas on 127.0.0.1
 * at `upstreamPorts` (three, in place of the shipped 50051 to 50053, in
 * both upstreams) and returns the path of the main config. Only what a
 * real install changes is substituted: addresses, listen ports,
 * certificate paths and the snippet's path.
 */
export function renderClusterConfig(dir, { upstreamPorts, redirectPort, sitePort, cert, key }) {
  const out = (name) => path.join(dir, name);
  const file = 'cluster/nginx.conf';

  const proxy = read('chat-proxy.conf');
  checkRendered(proxy, 'chat-proxy.conf');
  writeFileSync(out('chat-proxy.conf'), proxy);

  let site = readFileSync(path.join(deployDir, '..', 'cluster', 'nginx.conf'), 'utf8');
  if (upstreamPorts.length !== 3) throw new Error('the shipped cluster site has three replicas');
  upstreamPorts.forEach((port, i) => {
    site = substitute(site, file, `server 127.0.0.1:${50051 + i} `, `server 127.0.0.1:${port} `, 2);
  });
  site = substitute(site, file, /^[ \t]*listen\s+\[::\][^;]*;[ \t]*\n/m, '', 2);
  site = substitute(site, file, /listen\s+80;/, `listen 127.0.0.1:${redirectPort};`);
  site = substitute(site, file, /listen\s+443\s+ssl\s+http2;/, `listen 127.0.0.1:${sitePort} ssl http2;`);
  site = substitute(site, file, /ssl_certificate\s+[^;\s]+;/, `ssl_certificate ${cert};`);
  site = substitute(site, file, /ssl_certificate_key\s+[^;\s]+;/, `ssl_certificate_key ${key};`);
  site = substitute(site, file, 'include /etc/nginx/snippets/chat-proxy.conf;', `include ${out('chat-proxy.conf')};`);
  checkRendered(site, file);
  writeFileSync(out('chat-cluster.conf'), site);
  return writeMain(dir, [out('chat-cluster.conf')]);
}

/**
 * Starts nginx with deploy/cluster/nginx.conf in front of the replicas on
 * 127.0.0.1:`upstreamPorts`. Returns { siteUrl (https, HTTP/2), dir,
 * errorLog(), stop() }.
 */
export async function startClusterNginx({ upstreamPorts }) {
  const dir = mkdtempSync(path.join(tmpdir(), 'chat-nginx-cluster-'));
  const { cert, key } = selfSigned(dir);
  const [redirectPort, sitePort] = [await freePort(), await freePort()];
  const conf = renderClusterConfig(dir, { upstreamPorts, redirectPort, sitePort, cert, key });
  const nginx = await launch(dir, conf, [redirectPort, sitePort]);
  return { ...nginx, dir, siteUrl: `https://127.0.0.1:${sitePort}/` };
}
