// The operations view: aggregates, recent orders by stage and recent trips, and one order's
// or trip's saga timeline as DBOS recorded it. In production the data needs the admin token; the page asks for
// it and keeps it in sessionStorage (this tab only).
"use strict";

import {
  NetworkError, age, clockTime, config, detailOf, el, money, onReconnect, request, sleep,
} from "/static/site.js";

const TOKEN_KEY = "widget-store:admin-token";
const REFRESH_MS = 3000;
const PAGE_SIZE = 20;
const STAGES = {
  starting: "Starting",
  waiting_for_payment: "Waiting for payment",
  settling: "Settling the payment",
  dispatching: "Paid, dispatching",
  dispatched: "Dispatched",
  compensated: "Compensated",
};
const ACTIVE = new Set(["PENDING", "ENQUEUED", "DELAYED"]);
const TRIP_STATUSES = { PENDING: "Booking", BOOKED: "Booked", ROLLED_BACK: "Rolled back" };

const $ = (id) => document.getElementById(id);

class Unauthorized extends Error {}

let pages = 1;
let selected = null; // the order whose timeline is shown
let selectedTrip = null; // or the trip
let timelineActive = false; // its workflow is still running: keep refreshing it
let tokenTyped = false; // a token was typed here, so a 401 means it was wrong

async function opsFetch(url, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await request(url, { ...options, headers });
  if (response.status === 401) {
    // Forget the token this request was refused with, not one typed since: the refusals of
    // a wrong token's other requests still in flight must not sign the right one out.
    if (sessionStorage.getItem(TOKEN_KEY) === token) sessionStorage.removeItem(TOKEN_KEY);
    throw new Unauthorized();
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(detailOf(body, `HTTP ${response.status}`));
  return body;
}

// --- signing in --------------------------------------------------------------------------

function askForToken(text = "") {
  $("ops-content").hidden = true;
  $("sign-in").hidden = false;
  $("token-message").textContent = text;
  $("token").focus();
}

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  tokenTyped = true;
  $("token").value = "";
  if (await refresh()) {
    $("sign-in").hidden = true;
  }
});

// --- aggregates ------------------------------------------------------------------------

function figure(term, value, note = null, action = null) {
  return el("div", { className: "figure" }, [
    el("dt", { text: term }),
    el("dd", { className: "value" }, [document.createTextNode(value), action]),
    note ? el("dd", { className: "note", text: note }) : null,
  ]);
}

function renderAggregates(summary) {
  const { counts, last_hour: hour, oldest_waiting: oldest } = summary;
  const ratio = hour.compensation_ratio === null
    ? figure("Compensation ratio, last hour", "–", "no order finished in the last hour")
    : figure("Compensation ratio, last hour", `${Math.round(hour.compensation_ratio * 100)}%`,
      `${hour.compensated} of ${hour.finished} finished orders`);
  let oldestFigure = figure("Oldest waiting for payment", "none");
  if (oldest) {
    const open = el("button", {
      className: "link", text: `#${oldest.order_id}`, attrs: { type: "button" },
    });
    open.addEventListener("click", () => select(oldest.order_id));
    oldestFigure = figure("Oldest waiting for payment", "", `waiting for ${age(oldest.age_s)}`, open);
  }
  // The same figures /metrics reports as gauges, read by the same queries.
  const { stuck } = summary;
  const stuckNote = [
    `${stuck.past_payment_deadline} waiting past the payment deadline`,
    `${stuck.orphaned_sagas} orphaned saga${stuck.orphaned_sagas === 1 ? "" : "s"}`,
  ].join(", ");
  $("aggregates").replaceChildren(
    figure("Pending", String(counts.PENDING), `${summary.waiting_for_payment} waiting for payment`),
    figure("Paid, dispatching", String(counts.PAID)),
    figure("Dispatched", String(counts.DISPATCHED)),
    figure("Compensated", String(counts.CANCELLED), "cancelled, every step undone"),
    ratio,
    oldestFigure,
    outboxFigure(summary.outbox),
    figure("Dead letters open", String(stuck.dead_letters_open), stuckNote),
  );
}

function outboxFigure(outbox) {
  // The event stream to other services: events committed but not yet on the bus.
  const note = outbox.unsent === 0
    ? "every event is on the bus"
    : `oldest written ${age(outbox.oldest_age_s)} ago`;
  return figure("Events not yet published", String(outbox.unsent), note);
}

// --- the order list --------------------------------------------------------------------

function renderOrders(page) {
  $("orders").replaceChildren(...page.orders.map((order) => {
    const open = el("button", {
      className: "link", text: `Order #${order.order_id}`, attrs: { type: "button" },
    });
    open.addEventListener("click", () => select(order.order_id));
    const status = el("span", { className: `stage stage-${order.stage}`, text: STAGES[order.stage] || order.stage });
    const reason = order.cancel_reason ? el("span", { className: "reason", text: order.cancel_reason }) : null;
    return el("tr", { className: order.order_id === selected && selectedTrip === null ? "selected" : "" }, [
      el("td", {}, [open]),
      el("td", {}, [status, reason]),
      el("td", { className: "num", text: age(order.age_s) }),
      el("td", { className: "num", text: money(order.total_cents) }),
    ]);
  }));
  $("orders-empty").hidden = page.orders.length > 0;
  $("older").hidden = page.next_before === null;
}

// --- the trip list ----------------------------------------------------------------------

function renderTrips(page) {
  $("trips").replaceChildren(...page.trips.map((trip) => {
    const open = el("button", {
      className: "link", text: `Trip #${trip.trip_id}`, attrs: { type: "button" },
    });
    open.addEventListener("click", () => selectTrip(trip.trip_id));
    const stage = trip.status === "BOOKED" ? "dispatched"
      : trip.status === "ROLLED_BACK" ? "compensated" : "starting";
    const status = el("span", {
      className: `stage stage-${stage}`, text: TRIP_STATUSES[trip.status] || trip.status,
    });
    const reason = trip.reason ? el("span", { className: "reason", text: trip.reason }) : null;
    return el("tr", { className: trip.trip_id === selectedTrip ? "selected" : "" }, [
      el("td", {}, [open]),
      el("td", {}, [status, reason]),
      el("td", { className: "num", text: age(trip.age_s) }),
      el("td", { text: trip.user_id }),
    ]);
  }));
  const { counts } = page;
  $("trip-counts").textContent = `${counts.PENDING} booking, ${counts.BOOKED} booked,`
    + ` ${counts.ROLLED_BACK} rolled back`;
  $("trips-empty").hidden = page.trips.length > 0;
}

// --- stuck sagas: parked compensations and the watchdog ----------------------------------

function renderDeadLetters(letters) {
  $("dead-letters").replaceChildren(...letters.map((letter) => {
    const owner = letter.trip_id !== null && letter.trip_id !== undefined
      ? `Trip #${letter.trip_id}` : `Order #${letter.order_id}`;
    const open = el("button", { className: "link", text: owner, attrs: { type: "button" } });
    open.addEventListener("click", () => (letter.trip_id ? selectTrip(letter.trip_id) : select(letter.order_id)));
    const retry = el("button", {
      text: "Retry",
      attrs: {
        type: "button",
        "aria-label": `Retry ${letter.compensation} of ${owner.toLowerCase()}`,
        disabled: letter.status !== "parked",
      },
    });
    retry.addEventListener("click", () => retryDeadLetter(letter, retry));
    return el("tr", {}, [
      el("td", {}, [open]),
      el("td", { text: letter.compensation }),
      el("td", { className: "num", text: String(letter.attempts) }),
      el("td", { className: "error", text: letter.last_error }),
      el("td", { text: letter.status }),
      el("td", {}, [retry]),
    ]);
  }));
  $("dead-letters-wrap").hidden = letters.length === 0;
  $("dead-letters-empty").hidden = letters.length > 0;
}

async function retryDeadLetter(letter, button) {
  button.disabled = true;
  const ok = await guarded(() => opsFetch(`/ops/dead-letters/${letter.dead_letter_id}/retry`, {
    method: "POST",
  }));
  const owner = letter.trip_id ? `trip #${letter.trip_id}` : `order #${letter.order_id}`;
  $("watchdog-message").textContent = ok ? `Retrying ${letter.compensation} of ${owner}.` : "";
  await guarded(loadLists);
}

$("run-watchdog").addEventListener("click", async () => {
  const button = $("run-watchdog");
  button.disabled = true;
  let report = null;
  await guarded(async () => { report = await opsFetch("/ops/watchdog", { method: "POST" }); });
  button.disabled = false;
  if (report) {
    const orders = (ids) => (ids.length ? ids.map((id) => `#${id}`).join(", ") : "none");
    $("watchdog-message").textContent = `Watchdog: ${report.checked} unfinished order(s) checked;`
      + ` resumed ${orders(report.resumed)}; resolved ${orders(report.resolved)}.`;
    await guarded(loadLists);
  }
});

// --- the saga timeline -----------------------------------------------------------------

function seconds(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function renderWorkflow(t) {
  const wf = t.workflow;
  const runs = wf && wf.recovery_attempts;
  const recovered = runs > 1 ? `${runs} (recovered after a crash)` : "1";
  const subject = t.trip_id !== undefined
    ? ["Trip", `${TRIP_STATUSES[t.trip_status] || t.trip_status}` + (t.reason ? ` (${t.reason})` : "")]
    : ["Order", `${t.order_status} · ${STAGES[t.stage] || t.stage}`
      + (t.cancel_reason ? ` (${t.cancel_reason})` : "")];
  const facts = [
    ["Workflow ID", t.workflow_id],
    ["Workflow status", wf ? wf.status + (wf.error ? `: ${wf.error}` : "") : "not found in DBOS"],
    subject,
    ["Started", t.started_at ? clockTime(t.started_at) : "–"],
    ["Duration", seconds(t.duration_ms)],
    ["Compensations", String(t.compensations)],
    ["Runs", wf ? recovered : "–"],
    ["Executor, version", wf ? `${wf.executor_id} · ${wf.app_version}` : "–"],
  ];
  $("workflow").replaceChildren(...facts.map(([term, value]) => el("div", {}, [
    el("dt", { text: term }), el("dd", { text: value }),
  ])));
}

function outcomeCell(row) {
  const parts = [];
  if (row.status === "running") parts.push(el("span", { className: "running", text: "running…" }));
  if (row.output !== null) parts.push(el("code", { className: "output", text: row.output }));
  if (row.error !== null) parts.push(el("span", { className: "error", text: row.error }));
  if (row.failures.length && !(row.failures.length === 1 && row.failures[0] === row.error)) {
    parts.push(el("details", {}, [
      el("summary", { text: `${row.failures.length} failed attempt${row.failures.length > 1 ? "s" : ""}` }),
      el("ol", {}, row.failures.map((text) => el("li", { className: "error", text }))),
    ]));
  }
  if (row.events.length) {
    parts.push(el("ul", { className: "logged" }, row.events.map((e) => el("li", {}, [
      el("span", { className: "event-type", text: e.type }),
      e.detail ? document.createTextNode(` ${e.detail}`) : null,
    ]))));
  }
  return el("td", { className: "outcome" }, parts);
}

function ganttCell(row, span) {
  const bar = el("span", { className: `bar bar-${row.kind} bar-${row.status}` });
  const start = row.start_ms ?? 0;
  // Positions are set through the DOM (element.style), which the content policy allows.
  bar.style.left = `${(100 * start) / span}%`;
  bar.style.width = `${Math.max(0.6, (100 * (row.duration_ms ?? 0)) / span)}%`;
  return el("td", { className: "gantt", attrs: { "aria-hidden": "true" } }, [
    el("span", { className: "track" }, [bar]),
  ]);
}

function renderSteps(t) {
  const span = Math.max(1, t.duration_ms || 0,
    ...t.rows.map((r) => (r.start_ms ?? 0) + (r.duration_ms ?? 0)));
  $("steps").replaceChildren(...t.rows.map((row) => el("tr", {
    className: `row-${row.kind} status-${row.status}`,
  }, [
    el("td", { className: "num", text: `+${((row.start_ms ?? 0) / 1000).toFixed(3)} s` }),
    el("td", { className: "step" }, [
      el("span", { className: `kind kind-${row.kind}`, text: row.kind }),
      el("strong", { text: row.label }),
      row.label !== row.name ? el("code", { text: row.name }) : null,
    ]),
    el("td", { className: "num", text: row.status === "running" ? `${seconds(row.duration_ms)}…` : seconds(row.duration_ms) }),
    el("td", { className: row.attempts > 1 ? "num retried" : "num", text: String(row.attempts) }),
    outcomeCell(row),
    ganttCell(row, span),
  ])));
}

async function loadTimeline() {
  if (selected === null && selectedTrip === null) return;
  const t = selectedTrip !== null
    ? await opsFetch(`/ops/trips/${selectedTrip}/timeline`)
    : await opsFetch(`/ops/orders/${selected}/timeline`);
  $("timeline-title").textContent = t.trip_id !== undefined
    ? `Saga timeline: trip #${t.trip_id}` : `Saga timeline: order #${t.order_id}`;
  $("timeline-hint").hidden = true;
  $("timeline-body").hidden = false;
  renderWorkflow(t);
  renderSteps(t);
  timelineActive = Boolean(t.workflow && ACTIVE.has(t.workflow.status));
}

function markSelected(label) {
  for (const row of [...$("orders").children, ...$("trips").children]) {
    row.classList.toggle("selected", row.querySelector("button").textContent === label);
  }
}

async function select(orderId) {
  selected = orderId;
  selectedTrip = null;
  history.replaceState(null, "", `#order-${orderId}`);
  markSelected(`Order #${orderId}`);
  await guarded(loadTimeline);
  $("timeline").focus();
}

async function selectTrip(tripId) {
  selectedTrip = tripId;
  selected = null;
  history.replaceState(null, "", `#trip-${tripId}`);
  markSelected(`Trip #${tripId}`);
  await guarded(loadTimeline);
  $("timeline").focus();
}

// --- refreshing ------------------------------------------------------------------------

async function loadLists() {
  const stage = $("stage").value;
  const query = new URLSearchParams({ limit: String(Math.min(200, PAGE_SIZE * pages)) });
  if (stage) query.set("stage", stage);
  const [summary, page, letters, trips] = await Promise.all([
    opsFetch("/ops/summary"),
    opsFetch(`/ops/orders?${query}`),
    opsFetch("/ops/dead-letters"),
    opsFetch(`/ops/trips?limit=${PAGE_SIZE}`),
  ]);
  renderAggregates(summary);
  renderOrders(page);
  renderTrips(trips);
  renderDeadLetters(letters);
}

// Run a load; true if it worked. Asks for the token on 401; an outage shows the banner.
async function guarded(load) {
  try {
    await load();
    return true;
  } catch (error) {
    if (error instanceof Unauthorized) {
      askForToken(tokenTyped ? "That token was not accepted." : "");
    } else if (!(error instanceof NetworkError)) {
      $("timeline-hint").hidden = false;
      $("timeline-hint").textContent = `Could not load: ${error.message}`;
    }
    return false;
  }
}

async function refresh() {
  const ok = await guarded(loadLists);
  if (ok) {
    $("ops-content").hidden = false;
    if (selected !== null || selectedTrip !== null) await guarded(loadTimeline);
  }
  return ok;
}

$("stage").addEventListener("change", () => { pages = 1; guarded(loadLists); });
$("older").addEventListener("click", () => { pages += 1; guarded(loadLists); });
onReconnect(() => { if ($("sign-in").hidden) refresh(); });

$("restock-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const inventory = Number($("restock-quantity").value);
  const ok = await guarded(() => opsFetch("/restock", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ inventory }),
  }));
  $("restock-message").textContent = ok ? `Every product now has ${inventory} in stock.` : "";
});

async function main() {
  const hash = /^#order-(\d+)$/.exec(window.location.hash);
  if (hash) selected = Number(hash[1]);
  const tripHash = /^#trip-(\d+)$/.exec(window.location.hash);
  if (tripHash) selectedTrip = Number(tripHash[1]);
  const settings = await config;
  if (settings.admin_token_required && !sessionStorage.getItem(TOKEN_KEY)) {
    askForToken();
  } else {
    await refresh();
  }
  for (;;) {
    await sleep(REFRESH_MS);
    if (document.hidden || !$("sign-in").hidden) continue;
    if (await guarded(loadLists) && (selected !== null || selectedTrip !== null) && timelineActive) {
      await guarded(loadTimeline);
    }
  }
}

main();
