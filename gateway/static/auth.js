// The API key, where the gateway has keys on (AUTH=keys): asked for once in its form, kept in
// this browser's localStorage, sent as X-API-Key on every request the page makes; a 401 shows
// the form again with the server's message. Never in a URL (it would land in logs and the
// history): a download link fetches with the header and saves a blob.

const KEY_STORE = "audiosplit.apiKey";
const HEADER = "X-API-Key";
const SERVER_JOBS = 50; // the key's newest jobs, listed when the key is taken
const KEYED = ["upload-section", "jobs-section", "key-info"]; // shown only with a working key
const $ = (id) => document.getElementById(id);

// on: the gateway answered 401 without a key; key: the one in use (checked, or stored earlier).
export const auth = { on: false, key: storedKey() };
// leave(): the page drops what was the key's; enter(jobs): the page for a key that works.
let page = { leave() {}, async enter() {} };

function storedKey() {
  try {
    return localStorage.getItem(KEY_STORE) || "";
  } catch {
    return "";
  }
}

function keepKey(key) {
  auth.key = key;
  try {
    if (key) localStorage.setItem(KEY_STORE, key);
    else localStorage.removeItem(KEY_STORE);
  } catch {
    // storage disabled: the key lasts as long as the tab
  }
}

/** The server's `{"error": {"message"}}` of a response, else its status. */
export async function errorMessage(r) {
  const body = await r.clone().json().catch(() => ({}));
  return body.error?.message || `HTTP ${r.status}`;
}

/** `fetch` with the key in its header; a 401 asks for the key again. */
export async function apiFetch(url, options = {}) {
  const headers = new Headers(options.headers || {});
  if (auth.key) headers.set(HEADER, auth.key);
  const r = await fetch(url, { ...options, headers });
  if (r.status === 401 && auth.on) askForKey(await errorMessage(r));
  return r;
}

/** Adds the key to an XMLHttpRequest (the upload: it reports its progress, fetch does not). */
export function keyXhr(xhr) {
  if (auth.key) xhr.setRequestHeader(HEADER, auth.key);
}

/** The name a download is saved under: its Content-Disposition's, else the URL's last part. */
function savedName(r, url) {
  const cd = r.headers.get("Content-Disposition") || "";
  const star = /filename\*=(?:utf-8|UTF-8)''([^;]+)/.exec(cd);
  if (star) return decodeURIComponent(star[1]);
  const plain = /filename="?([^";]+)"?/.exec(cd);
  return plain ? plain[1] : new URL(url, location.href).pathname.split("/").pop() || "download";
}

/**
 * Makes link `a` download through apiFetch while a key is in use (its href stays the plain
 * URL: without keys it is an ordinary link). `say(message)` reports a failed download.
 */
export function keyedDownload(a, say) {
  a.addEventListener("click", async (e) => {
    if (!auth.key) return;
    e.preventDefault();
    try {
      const r = await apiFetch(a.href);
      if (!r.ok) throw new Error(await errorMessage(r));
      const blob = URL.createObjectURL(await r.blob());
      const save = Object.assign(document.createElement("a"), { href: blob, download: savedName(r, a.href) });
      document.body.append(save);
      save.click();
      save.remove();
      setTimeout(() => URL.revokeObjectURL(blob), 60_000);
    } catch (err) {
      say(`Could not download ${a.textContent}: ${err.message}`);
    }
  });
}

/** The key's form instead of the page, saying `message` (the server's, for a refused key). */
export function askForKey(message) {
  page.leave();
  for (const id of KEYED) $(id).hidden = true;
  $("key-section").hidden = false;
  $("key-error").textContent = message;
  $("api-key").focus();
}

/** Tries `key`: kept and used when the server takes it (true), else the form says why not. */
export async function tryKey(key) {
  let r;
  try {
    r = await fetch(`/api/jobs?limit=${SERVER_JOBS}`, { headers: { [HEADER]: key } });
  } catch {
    askForKey("The server cannot be reached; try again.");
    return false;
  }
  if (!r.ok) {
    if (key === auth.key) keepKey("");
    askForKey(await errorMessage(r));
    return false;
  }
  keepKey(key);
  $("key-section").hidden = true;
  for (const id of KEYED) $(id).hidden = false;
  await page.enter((await r.json()).jobs || []);
  return true;
}

/** The form's and the "forget key" link's handlers; `hooks`: {leave, enter} of the page. */
export function setUpKeyForm(hooks) {
  page = hooks;
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("api-key").value.trim();
    $("key-error").textContent = key ? "" : "Paste your API key first.";
    if (key) tryKey(key).then((ok) => { if (ok) $("api-key").value = ""; });
  });
  $("forget-key").addEventListener("click", (e) => {
    e.preventDefault();
    keepKey("");
    askForKey("");
  });
}
