// Shared by every page, the payment provider's included: what the server says about
// itself (/config), fetch helpers that notice when it is unreachable, a banner that says
// so and reconnects by itself, and in demo mode the button that crashes it.
"use strict";

const HEALTH_TIMEOUT_MS = 3000;
const BACKOFF_MS = [250, 500, 1000, 2000, 3000];
const SAME_PROCESS_GIVE_UP_MS = 15000; // a crash that never happened: stop waiting for it
const BACK_MESSAGE_MS = 6000;

export const RECONNECTED = "widget-store:reconnected";

export class NetworkError extends Error {}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const dollars = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
export const money = (cents) => dollars.format(cents / 100);

export function clockTime(iso) {
  return new Date(iso).toLocaleTimeString([], {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hour12: false,
  });
}

export function age(seconds) {
  if (seconds < 60) return `${Math.floor(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 86400) {
    return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  }
  return `${Math.floor(seconds / 86400)} d`;
}

// A small element builder: text goes in as text, never as HTML.
export function el(tag, options = {}, children = []) {
  const node = document.createElement(tag);
  if (options.className) node.className = options.className;
  if (options.text !== undefined && options.text !== null) node.textContent = options.text;
  for (const [name, value] of Object.entries(options.attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

// --- talking to the server -------------------------------------------------------------

let leaving = false; // navigating away cancels fetches: that is no outage
window.addEventListener("beforeunload", () => { leaving = true; });
window.addEventListener("pageshow", () => { leaving = false; });

// fetch(), except that a network failure shows the outage banner and throws NetworkError.
export async function request(url, options = {}) {
  try {
    return await fetch(url, { cache: "no-store", ...options });
  } catch (error) {
    if (!leaving && !(options.signal && options.signal.aborted)) {
      connection.lost("We can't reach the store right now.");
    }
    throw new NetworkError(String(error));
  }
}

export async function getJson(url, options = {}) {
  const response = await request(url, options);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

// A reply's `detail`, as one sentence (FastAPI's validation errors come as a list).
export function detailOf(reply, fallback) {
  const detail = reply && reply.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg).join("; ");
  return fallback;
}

async function healthyPid() {
  try {
    const response = await fetch("/healthz", {
      cache: "no-store",
      signal: AbortSignal.timeout(HEALTH_TIMEOUT_MS),
    });
    if (!response.ok) return null;
    return (await response.json()).pid;
  } catch {
    return null;
  }
}

// --- the connection banner -------------------------------------------------------------

class Connection {
  constructor() {
    this.down = false;
    this.hideTimer = null;
    // In the page from the start, empty: screen readers announce a live region's changes.
    this.banner = el("div", { className: "connection", attrs: { role: "alert" } });
    document.body.prepend(this.banner);
  }

  // The server stopped answering (or was just crashed, by the process `oldPid`).
  lost(message, oldPid = null) {
    if (this.down) return;
    this.down = true;
    this.show("down", `${message} Reconnecting by itself…`);
    this.reconnect(oldPid);
  }

  async reconnect(oldPid) {
    const started = Date.now();
    for (let attempt = 0; ; attempt += 1) {
      await sleep(BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)]);
      const pid = await healthyPid();
      const stillOld = pid !== null && pid === oldPid;
      if (pid !== null && (!stillOld || Date.now() - started > SAME_PROCESS_GIVE_UP_MS)) {
        this.back(pid, oldPid);
        return;
      }
      const seconds = Math.round((Date.now() - started) / 1000);
      this.show("down", `The server is down (for ${seconds} s). Reconnecting by itself…`);
    }
  }

  back(pid, oldPid) {
    this.down = false;
    const fresh = oldPid !== null && pid !== oldPid ? ` A new server process (${pid}) took over.` : "";
    this.show("up", `The server is back.${fresh} Everything carries on where it was.`);
    clearTimeout(this.hideTimer);
    this.hideTimer = setTimeout(() => this.hide(), BACK_MESSAGE_MS);
    window.dispatchEvent(new Event(RECONNECTED));
  }

  show(state, text) {
    clearTimeout(this.hideTimer);
    this.banner.dataset.state = state;
    this.banner.textContent = text;
  }

  hide() {
    delete this.banner.dataset.state;
    this.banner.textContent = "";
  }
}

export const connection = new Connection();

export function onReconnect(callback) {
  window.addEventListener(RECONNECTED, callback);
}

// --- the server's configuration --------------------------------------------------------

async function loadConfig() {
  for (let attempt = 0; ; attempt += 1) {
    try {
      const response = await fetch("/config", { cache: "no-store" });
      if (response.ok) return await response.json();
    } catch {
      // not up yet: try again
    }
    await sleep(BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)]);
  }
}

export const config = loadConfig();

// --- the crash button (demo only) ------------------------------------------------------

async function crash(button) {
  button.disabled = true;
  const pid = await healthyPid();
  let response = null;
  try {
    response = await fetch("/crash_application", { method: "POST", cache: "no-store" });
  } catch {
    // it may die before it answers: that is the point
  }
  if (response && response.status !== 202) {
    button.disabled = false;
    connection.show("down", `The server refused to crash (HTTP ${response.status}).`);
    return;
  }
  connection.lost("The server is down: you crashed it. Its supervisor is starting a new one.", pid);
  window.addEventListener(RECONNECTED, () => { button.disabled = false; }, { once: true });
}

function installCrashButton() {
  const button = el("button", { className: "crash", text: "Crash the server", attrs: { type: "button" } });
  button.addEventListener("click", () => crash(button));
  const bar = el("aside", { className: "demo-bar", attrs: { "aria-label": "Demo" } }, [
    el("p", {
      text: "Demo: every checkout is a durable saga. Crash the server at any moment; no order is lost.",
    }),
    button,
  ]);
  document.body.prepend(bar);
}

config.then((settings) => {
  if (settings.demo) installCrashButton();
});
