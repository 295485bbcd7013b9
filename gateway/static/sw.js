// The page's service worker, served at /sw.js (scope: the whole site). The gateway puts
// `SHELL` above this text: the page and its static files. Network first, always: an online
// page never runs yesterday's script; when the network fails, the page shell and the jobs kept
// for offline (offline.js) come from Cache Storage, and anything else fails as it would.
// Requests of jobs not kept are not touched at all: they go to the network as without a worker.

const SHELL_CACHE = "audiosplit-shell";
const JOB_CACHE = "audiosplit-job-"; // + the job's id: one cache per job kept (offline.js)
const OPTIONAL = ["/static/vendor/signalsmith-stretch.mjs"]; // kept when the server has it
const JOB_URL = /^\/api\/jobs\/([^/]+)/;

let kept = null; // the ids of the jobs kept, read from Cache Storage; null until read
let keptRead = readKept();

async function readKept() {
  const names = await caches.keys();
  kept = new Set(names.filter((n) => n.startsWith(JOB_CACHE)).map((n) => n.slice(JOB_CACHE.length)));
}

// The page says so when it kept or removed a job.
self.addEventListener("message", (event) => {
  if (event.data === "kept-changed") event.waitUntil((keptRead = readKept()));
});

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(SHELL_CACHE);
    // One by one: a file missing on this server must not stop the rest from being kept.
    await Promise.all([...SHELL, ...OPTIONAL].map((url) => cache.add(url).catch(() => {})));
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

function isShell(url) {
  return SHELL.includes(url.pathname) || OPTIONAL.includes(url.pathname);
}

async function networkFirst(request, keep) {
  try {
    const response = await fetch(request);
    if (keep && response.ok) {
      const copy = response.clone();
      caches.open(SHELL_CACHE).then((c) => c.put(request, copy)).catch(() => {});
    }
    return response;
  } catch (e) {
    // The job caches hold URLs with their query (?format=wav); the shell's have none.
    const cached = await caches.match(request, { ignoreVary: true });
    if (cached) return cached;
    throw e;
  }
}

self.addEventListener("fetch", (event) => {
  const { request } = event;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  if (isShell(url)) return event.respondWith(networkFirst(request, true));
  const job = JOB_URL.exec(url.pathname)?.[1];
  if (!job || (kept && !kept.has(job))) return; // not kept: the network alone
  // Only while the worker just started and has not read its caches yet.
  event.respondWith(keptRead.then(() => (kept.has(job) ? networkFirst(request, false) : fetch(request))));
});
