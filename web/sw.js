// The app shell from the browser's own cache, so a returning user's page
// starts without waiting on the network (on a slow phone network one round
// trip is over half a second; the chat's calls are the only ones left).
//
// - `index.html` (the scope's root): answered from the cache at once, then
//   revalidated in the background. A new build is fetched whole (the page
//   and every file it names) before it replaces the old one, so the next
//   visit starts the new app and never a mix of two. A deploy therefore
//   reaches a returning user one visit late; old and new apps speak the
//   same protocol.
// - The build's files (trunk's content-hashed names): from the cache, never
//   revalidated; a name is its content.
// - Everything else (the gRPC-Web calls, /metrics, /healthz): not touched.
//
// If the revalidation is refused or redirected (an authenticating proxy
// whose login expired), the cached page is dropped, so the next visit goes
// to the proxy and its login again.
const CACHE = 'chat-shell-v1';
const ROOT = new URL('./', self.registration.scope);
// trunk's hash in hex, without leading zeros (see server/src/app/assets.rs).
const HASHED = /-[0-9a-f]{8,16}(_bg)?\.(js|wasm|css)$/;

self.addEventListener('install', (event) => {
  event.waitUntil(refresh().then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) {
        if (name !== CACHE) await caches.delete(name);
      }
      await self.clients.claim();
    })(),
  );
});

self.addEventListener('fetch', (event) => {
  const { request } = event;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== ROOT.origin) return;
  if (request.mode === 'navigate' && isRoot(url)) {
    event.respondWith(shell(event));
  } else if (url.pathname.startsWith(ROOT.pathname) && HASHED.test(url.pathname)) {
    event.respondWith(asset(request));
  }
});

function isRoot(url) {
  return url.pathname === ROOT.pathname || url.pathname === `${ROOT.pathname}index.html`;
}

/** The cached page (revalidated behind it), or the network's on a miss. */
async function shell(event) {
  const cache = await caches.open(CACHE);
  const cached = await cache.match(ROOT.href, { ignoreVary: true });
  if (!cached) return fetch(event.request);
  event.waitUntil(refresh().catch(() => {}));
  return cached;
}

async function asset(request) {
  const cache = await caches.open(CACHE);
  return (await cache.match(request, { ignoreVary: true })) ?? fetch(request);
}

/** Fetches the current page and the files it names into the cache, and
 *  forgets any file no longer named. */
async function refresh() {
  const cache = await caches.open(CACHE);
  // `no-cache`: the browser revalidates with its ETag, mostly a small 304.
  const response = await fetch(ROOT.href, { cache: 'no-cache', redirect: 'manual' });
  if (!response.ok) {
    if (response.type === 'opaqueredirect' || response.status === 401 || response.status === 403) {
      await cache.delete(ROOT.href);
    }
    return;
  }
  const html = await response.clone().text();
  const files = new Set(
    [...html.matchAll(/["']\.\/([^"'?#]+)["']/g)]
      .map(([, name]) => new URL(name, ROOT).href)
      .filter((href) => HASHED.test(new URL(href).pathname)),
  );
  const missing = [];
  for (const href of files) {
    if (!(await cache.match(href, { ignoreVary: true }))) missing.push(href);
  }
  await cache.addAll(missing);
  await cache.put(ROOT.href, response);
  for (const request of await cache.keys()) {
    if (request.url !== ROOT.href && !files.has(request.url)) await cache.delete(request);
  }
}
