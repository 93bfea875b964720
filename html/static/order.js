// The order page: status in words, dispatch progress, tracking, and the order's history,
// followed until the order has ended. While nothing moves it long-polls (the server
// answers as soon as the order has news); during the dispatch it polls, to move the
// progress bar. It keeps trying through an outage and picks up where the order is when
// the server is back.
"use strict";

import {
  NetworkError, clockTime, config, el, getJson, money, onReconnect, request, sleep,
} from "/static/site.js";

const POLL_MS = 1000;
const DISPATCH_POLL_MS = 400;
const LONG_POLL_S = 20;

const EVENTS = {
  CreateOrder_ok: "Order placed",
  ReserveInventory_ok: "Your widgets were set aside for you",
  ReserveInventory_failed: "Not enough stock",
  OpenPayment_ok: "Waiting for your payment",
  ChargePayment_ok: "Payment received",
  ChargePayment_failed: "No payment",
  CreateShipment_ok: "Shipment booked with the carrier",
  CreateShipment_failed: "The carrier could not take the parcel",
  Dispatch_started: "Dispatch started",
  Dispatch_ok: "Dispatched",
  CancelOrder: "Order cancelled",
  ReleaseReservation: "Widgets put back on the shelf",
  RefundPayment: "Payment refunded in full",
  CancelShipment: "Shipment cancelled",
  checkout_complete: "All done",
  checkout_failed: "Checkout undone",
};
const UNDO = new Set(["CancelOrder", "ReleaseReservation", "RefundPayment", "CancelShipment"]);
const TERMINAL = new Set(["DISPATCHED", "CANCELLED"]);

const CANCELLED = {
  "out of stock": ["Cancelled: not enough stock",
    "We didn't have enough widgets for this order, so we cancelled it before you paid. " +
    "You were not charged."],
  "payment declined": ["Cancelled: your payment was declined",
    "Your payment was declined, so we cancelled the order and put the widgets back on the " +
    "shelf. You were not charged."],
  "payment timed out": ["Cancelled: no payment in time",
    "We didn't receive your payment before the deadline, so we cancelled the order and put " +
    "the widgets back on the shelf. You were not charged."],
  "shipping failed": ["Cancelled: we couldn't ship it",
    "The carrier couldn't deliver to your address, so we cancelled the order and put the " +
    "widgets back on the shelf."],
};

const query = new URLSearchParams(window.location.search);
const orderId = query.get("order_id") || "";
// The order's token, from the checkout's answer: whoever holds it placed the order.
const orderToken = query.get("token") || "";
const names = new Map(); // product_id -> name
let dispatchSeconds = null;

const $ = (id) => document.getElementById(id);

function describe(order) {
  const deadline = order.payment_deadline ? clockTime(order.payment_deadline) : null;
  switch (order.status) {
    case "DISPATCHED":
      return ["Dispatched", "Your widgets are on their way.", "good"];
    case "PAID":
      return ["Paid: being dispatched", "Thank you! Your widgets are being packed for the carrier.", "busy"];
    case "CANCELLED": {
      const [title, text] = CANCELLED[order.cancel_reason] || ["Cancelled",
        "Something went wrong on our side, so we cancelled the order and undid every step."];
      const refunded = order.events.some((e) => e.type === "RefundPayment");
      return [title, refunded ? `${text} Your payment was refunded in full.` : text, "bad"];
    }
    default:
      if (order.payment_verdict === "awaiting") {
        return ["Waiting for your payment",
          `Your widgets are reserved for you${deadline ? ` until ${deadline}` : ""}. ` +
          "Pay on the payment page to complete the order.", "waiting"];
      }
      if (order.payment_verdict === "paid") {
        return ["Payment received", "Booking the shipment with the carrier…", "busy"];
      }
      if (order.payment_verdict) {
        return ["Cancelling", "Putting everything back as it was…", "bad"];
      }
      return ["Placing your order", "Setting your widgets aside…", "busy"];
  }
}

function stepsDone(order) {
  const seen = new Set(order.events.map((e) => e.type));
  return {
    placed: seen.has("CreateOrder_ok"),
    paid: seen.has("ChargePayment_ok"),
    shipped: seen.has("CreateShipment_ok"),
    dispatched: seen.has("Dispatch_ok"),
  };
}

function renderStepper(order) {
  const done = stepsDone(order);
  let current = true;
  for (const item of $("stepper").children) {
    const step = item.dataset.step;
    item.classList.toggle("done", done[step]);
    const isCurrent = !done[step] && current && !TERMINAL.has(order.status);
    item.classList.toggle("current", isCurrent);
    if (isCurrent) item.setAttribute("aria-current", "step");
    else item.removeAttribute("aria-current");
    if (!done[step]) current = false;
  }
  $("stepper").classList.toggle("stopped", order.status === "CANCELLED");
}

function renderPayLink(order) {
  const waiting = order.status === "PENDING" && order.payment_verdict === "awaiting";
  $("pay-link").hidden = !waiting || !order.payment_url;
  if (waiting && order.payment_url) $("pay-link").firstElementChild.href = order.payment_url;
}

function renderDispatch(order) {
  const showing = order.status === "PAID" || order.status === "DISPATCHED";
  $("dispatch").hidden = !showing;
  if (!showing) return;
  const left = order.progress_remaining ?? 0;
  const total = dispatchSeconds || left || 1;
  const percent = order.status === "DISPATCHED" ? 100
    : Math.max(0, Math.min(100, Math.round(100 * (1 - left / total))));
  $("progress").value = percent;
  $("progress-text").textContent = order.status === "DISPATCHED"
    ? "Done"
    : `${percent}% · about ${Math.ceil(left)} s left`;
}

function friendly(detail) {
  return detail
    .replace(/total (\d+) cents/, (_, cents) => `total ${money(Number(cents))}`)
    .replace(/waiting until (\S+)/, (_, iso) => `until ${clockTime(iso)}`)
    .replace(/product (\d+)/g, (whole, id) => names.get(Number(id)) || whole)
    .replace(/^(\d+(?:\.\d+)?)s$/, "takes about $1 s");
}

function renderHistory(order) {
  const start = order.events.length ? new Date(order.events[0].at).getTime() : 0;
  $("events").replaceChildren(...order.events.map((event) => {
    const at = new Date(event.at);
    const undo = UNDO.has(event.type);
    const offset = ((at.getTime() - start) / 1000).toFixed(1);
    return el("li", { className: undo ? "undo" : "", attrs: { "data-type": event.type } }, [
      el("time", { text: clockTime(event.at), attrs: { datetime: event.at, title: `+${offset} s` } }),
      el("span", { className: "what" }, [
        undo ? el("span", { className: "tag", text: "undo" }) : null,
        document.createTextNode(EVENTS[event.type] || event.type),
      ]),
      event.detail ? el("span", { className: "detail", text: friendly(event.detail) }) : null,
    ]);
  }));
}

function renderItems(order) {
  $("items").replaceChildren(...order.items.map((item) => el("tr", {}, [
    el("td", { text: names.get(item.product_id) || `Product ${item.product_id}` }),
    el("td", { className: "num", text: String(item.quantity) }),
    el("td", { className: "num", text: money(item.unit_price_cents) }),
    el("td", { className: "num", text: money(item.unit_price_cents * item.quantity) }),
  ])));
  $("total").textContent = money(order.total_cents);
  $("address").textContent = order.shipping_address;
}

function render(order) {
  const [title, text, tone] = describe(order);
  document.title = `Order #${order.order_id} - Widget Store`;
  $("title").textContent = `Order #${order.order_id}`;
  $("status").textContent = title;
  $("explanation").textContent = text;
  $("status-card").dataset.tone = tone;
  renderStepper(order);
  renderPayLink(order);
  renderDispatch(order);
  $("tracking").hidden = !order.tracking_number;
  $("tracking-number").textContent = order.tracking_number || "";
  renderItems(order);
  renderHistory(order);
}

async function loadNames() {
  try {
    for (const p of await getJson("/products")) names.set(p.product_id, p.name);
  } catch {
    // names are a nicety: the page works with product numbers
  }
}

// One look at the order; returns it, or null if the server could not be reached. Given
// the number of events already shown, the server answers once there are more.
async function refresh(seenEvents = null) {
  const params = new URLSearchParams();
  if (orderToken) params.set("token", orderToken);
  if (seenEvents !== null) {
    params.set("after_events", seenEvents);
    params.set("wait_s", LONG_POLL_S);
  }
  const url = `/order/${encodeURIComponent(orderId)}?${params}`;
  let response;
  try {
    response = await request(url);
  } catch (error) {
    if (error instanceof NetworkError) return null;
    throw error;
  }
  if (response.status === 401) {
    $("status").textContent = "This order's link is incomplete";
    $("explanation").textContent = "Open it from the link the shop gave you after buying.";
    return { status: "UNKNOWN" };
  }
  if (response.status === 404 || response.status === 422) {
    $("status").textContent = "We can't find this order";
    $("explanation").textContent = "Check the link, or go back to the shop.";
    return { status: "UNKNOWN" };
  }
  if (!response.ok) return null;
  const order = await response.json();
  render(order);
  return order;
}

let wake = null; // resolves the current wait early (after a reconnect)

async function follow() {
  let last = null;
  for (;;) {
    const longPoll = last !== null && last.status !== "PAID";
    const order = await refresh(longPoll ? last.events.length : null);
    if (order && (TERMINAL.has(order.status) || order.status === "UNKNOWN")) return;
    if (order) last = order;
    if (order && order.status !== "PAID") continue; // the next long poll is the wait
    const delay = order ? DISPATCH_POLL_MS : POLL_MS;
    await Promise.race([sleep(delay), new Promise((resolve) => { wake = resolve; })]);
  }
}

onReconnect(() => { if (wake) wake(); });

async function main() {
  if (!/^\d+$/.test(orderId)) {
    $("status").textContent = "No order was given";
    $("explanation").textContent = "Open this page from the shop after buying something.";
    return;
  }
  config.then((settings) => { dispatchSeconds = settings.dispatch_s; });
  await loadNames();
  await follow();
}

main();
