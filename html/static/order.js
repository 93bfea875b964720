"use strict";
// The order page: polls the order and shows its status and history.
const orderId = new URLSearchParams(window.location.search).get("order_id");

async function refresh() {
  const response = await fetch(`/order/${encodeURIComponent(orderId)}`);
  if (!response.ok) { document.getElementById("status").textContent = "unknown order"; return; }
  const order = await response.json();
  document.getElementById("title").textContent = `Order #${order.order_id}`;
  document.getElementById("status").textContent = order.status;
  document.getElementById("summary").textContent =
    `${order.items.length} line(s), total $${(order.total_cents / 100).toFixed(2)}` +
    (order.cancel_reason ? ` · cancelled: ${order.cancel_reason}` : "");
  document.getElementById("tracking").textContent =
    order.tracking_number ? `Tracking number: ${order.tracking_number}` : "";
  const events = document.getElementById("events");
  events.replaceChildren(...order.events.map((e) => {
    const item = document.createElement("li");
    item.textContent = `${e.type}${e.detail ? ": " + e.detail : ""}`;
    return item;
  }));
  if (order.status !== "DISPATCHED" && order.status !== "CANCELLED") setTimeout(refresh, 1000);
}

refresh();
