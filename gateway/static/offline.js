// Offline copies of a job: "Keep for offline" stores the exact responses the player asks for
// (the job, its analysis, each stem in the player's format) in Cache Storage, one cache per
// job; the service worker (sw.js) answers from there when the network fails. Entries are
// keyed by URL alone (the X-API-Key header is not part of the key): see docs/page.md.

import { apiFetch } from "./auth.js";
import { el } from "./dom.js";
import { state } from "./listen.js";

const PREFIX = "audiosplit-job-";

const cacheName = (id) => `${PREFIX}${id}`;

/** The URLs the page fetches to open a finished job (listen.js's getJob, loadAnalysis, openDone). */
export function jobUrls(job) {
  const stems = job.stems.map((s) => `${job.links.stems[s]}?format=${state.stemFormat}`);
  return [`/api/jobs/${job.id}`, ...(job.links.analysis ? [job.links.analysis] : []), ...stems];
}

/** The ids of the jobs kept here. */
export async function keptJobs() {
  if (!globalThis.caches) return [];
  return (await caches.keys()).filter((n) => n.startsWith(PREFIX)).map((n) => n.slice(PREFIX.length));
}

/** Stores the job's files; returns their size in bytes. A failed fetch leaves no partial copy. */
export async function keepJob(job) {
  const responses = await Promise.all(jobUrls(job).map(async (url) => {
    const r = await apiFetch(url);
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return [url, r];
  }));
  const cache = await caches.open(cacheName(job.id));
  let bytes = 0;
  for (const [url, r] of responses) {
    const body = await r.blob();
    bytes += body.size;
    await cache.put(url, new Response(body, { status: r.status, headers: r.headers }));
  }
  tellWorker();
  return bytes;
}

export async function dropJob(id) {
  await caches.delete(cacheName(id));
  tellWorker();
}

/** The service worker answers only for the jobs kept: it re-reads them when told. */
function tellWorker() {
  navigator.serviceWorker?.ready.then((r) => r.active?.postMessage("kept-changed"));
}

/** The player's "Keep for offline" / "Remove offline copy" button and its status line. */
export function offlineControls(job) {
  const button = el("button", { type: "button", class: "secondary", id: "keep-offline" });
  const status = el("span", { class: "help", id: "offline-status", "aria-live": "polite" });
  if (!globalThis.caches) {
    status.textContent = "Offline copies need a secure page (HTTPS or localhost).";
    return [status];
  }
  const show = (kept, text = "") => {
    button.textContent = kept ? "Remove offline copy" : "Keep for offline";
    button.dataset.kept = String(kept);
    button.disabled = false;
    status.textContent = text;
  };
  button.onclick = async () => {
    button.disabled = true;
    const kept = button.dataset.kept === "true";
    try {
      if (kept) {
        await dropJob(job.id);
        show(false, "The offline copy is removed.");
      } else {
        status.textContent = "Storing the stems…";
        const bytes = await keepJob(job);
        show(true, `Kept in this browser (${(bytes / 1e6).toFixed(1)} MB): it opens without a network.`);
      }
    } catch (e) {
      await dropJob(job.id).catch(() => {});
      show(false, `Could not keep it: ${e.message}`);
    }
  };
  show(false);
  keptJobs().then((ids) => { if (ids.includes(job.id)) show(true, "Kept in this browser: it opens without a network."); });
  return [button, " ", status];
}
