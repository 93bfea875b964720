// The storefront: the catalog with live stock, the cart, and Buy now.
//
// Buying twice must never make two orders. The button is disabled while a checkout is
// in flight, and every attempt at the same cart reuses one idempotency key, kept in
// sessionStorage, so a retry after a dropped connection (or a reload) finds the order
// the first attempt created. Only a different cart, or a checkout that got a definite
// answer, gets a new key.
"use strict";

import {
  NetworkError, detailOf, el, getJson, money, onReconnect, request, sleep,
} from "/static/site.js";

const CART_KEY = "widget-store:cart";
const ATTEMPT_KEY = "widget-store:checkout";
const MAX_QUANTITY = 100;
const STOCK_REFRESH_MS = 3000;
const CHECKOUT_TRIES = 5;
const RETRY_MS = [500, 1000, 2000, 3000];

const products = new Map(); // product_id -> product, with live stock
const cards = new Map(); // product_id -> its catalog card's stock element
const saved = JSON.parse(sessionStorage.getItem(CART_KEY) || "{}");
const cart = new Map((saved.lines || []).map(([id, quantity]) => [Number(id), Number(quantity)]));

const form = document.getElementById("checkout-form");
const address = document.getElementById("address");
const buyButton = document.getElementById("buy");
const cartStatus = document.getElementById("cart-status");
const message = document.getElementById("checkout-message");
if (saved.address) address.value = saved.address;

function saveCart() {
  sessionStorage.setItem(CART_KEY, JSON.stringify({ lines: [...cart], address: address.value }));
}

// --- the catalog -----------------------------------------------------------------------

function stockText(inventory) {
  if (inventory <= 0) return "Out of stock";
  return `${inventory} in stock`;
}

function productCard(product) {
  const id = product.product_id;
  const nameId = `product-${id}-name`;
  const quantityId = `product-${id}-quantity`;
  const stock = el("p", { className: "stock", attrs: { "aria-live": "polite" } });
  const quantity = el("input", {
    attrs: {
      id: quantityId, type: "number", min: 1, max: MAX_QUANTITY, value: 1, inputmode: "numeric",
      required: true,
    },
  });
  const add = el("form", { className: "add-to-cart" }, [
    el("label", { text: "Quantity", attrs: { for: quantityId } }),
    quantity,
    el("button", { text: "Add to cart", attrs: { type: "submit", "aria-describedby": nameId } }),
  ]);
  add.addEventListener("submit", (event) => {
    event.preventDefault();
    const wanted = Math.floor(Number(quantity.value));
    if (!Number.isFinite(wanted) || wanted < 1 || wanted > MAX_QUANTITY) {
      cartStatus.textContent = `Choose a quantity from 1 to ${MAX_QUANTITY}.`;
      quantity.focus();
      return;
    }
    const total = Math.min(MAX_QUANTITY, (cart.get(id) || 0) + wanted);
    cart.set(id, total);
    saveCart();
    renderCart();
    cartStatus.textContent = `Added ${wanted} × ${product.name} to your cart.`;
  });
  cards.set(id, stock);
  return el("li", { className: "product" }, [
    el("article", { attrs: { "aria-labelledby": nameId } }, [
      el("h2", { text: product.name, attrs: { id: nameId } }),
      el("p", { className: "description", text: product.description }),
      el("p", { className: "price", text: money(product.price_cents) }),
      stock,
      add,
    ]),
  ]);
}

function renderStock() {
  for (const [id, stock] of cards) {
    const inventory = products.get(id).inventory;
    stock.textContent = stockText(inventory);
    stock.classList.toggle("out", inventory <= 0);
    stock.classList.toggle("low", inventory > 0 && inventory < 10);
  }
}

async function loadCatalog() {
  let list;
  try {
    list = await getJson("/products");
  } catch (error) {
    if (!(error instanceof NetworkError)) {
      document.getElementById("catalog-status").textContent = "The catalog is unavailable.";
    }
    return;
  }
  const known = list.every((p) => cards.has(p.product_id)) && list.length === cards.size;
  products.clear();
  for (const product of list) products.set(product.product_id, product);
  if (!known) {
    cards.clear();
    document.getElementById("products").replaceChildren(...list.map(productCard));
  }
  document.getElementById("catalog-status").textContent = "";
  renderStock();
  renderCart();
}

// --- the cart --------------------------------------------------------------------------

function renderCart() {
  const rows = [];
  let total = 0;
  for (const [id, quantity] of cart) {
    const product = products.get(id);
    if (!product) continue;
    const line = product.price_cents * quantity;
    total += line;
    const remove = el("button", {
      className: "link", text: "Remove", attrs: { type: "button", "aria-label": `Remove ${product.name}` },
    });
    remove.addEventListener("click", () => {
      cart.delete(id);
      saveCart();
      renderCart();
      cartStatus.textContent = `Removed ${product.name} from your cart.`;
      buyButton.focus();
    });
    const short = quantity > product.inventory
      ? el("span", { className: "warn", text: ` (only ${product.inventory} in stock)` })
      : null;
    rows.push(el("tr", {}, [
      el("td", {}, [document.createTextNode(product.name), short]),
      el("td", { className: "num", text: String(quantity) }),
      el("td", { className: "num", text: money(line) }),
      el("td", {}, [remove]),
    ]));
  }
  document.getElementById("cart-lines").replaceChildren(...rows);
  document.getElementById("cart-total").textContent = money(total);
  document.getElementById("cart-table").hidden = rows.length === 0;
  document.getElementById("cart-empty").hidden = rows.length > 0;
}

// --- checkout --------------------------------------------------------------------------

function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "web-" + [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// The same cart keeps its key; a new cart gets a new one.
function attemptFor(body) {
  const fingerprint = JSON.stringify(body);
  const stored = JSON.parse(sessionStorage.getItem(ATTEMPT_KEY) || "null");
  if (stored && stored.fingerprint === fingerprint) return stored;
  const attempt = { key: newKey(), fingerprint };
  sessionStorage.setItem(ATTEMPT_KEY, JSON.stringify(attempt));
  return attempt;
}

function forgetAttempt() {
  sessionStorage.removeItem(ATTEMPT_KEY);
}

// POST the checkout, retrying dropped connections and "still starting" with the same key.
async function postCheckout(key, body) {
  let why = "The connection dropped";
  for (let attempt = 0; attempt < CHECKOUT_TRIES; attempt += 1) {
    if (attempt > 0) {
      cartStatus.textContent = `${why}; trying again (you will not be charged twice)…`;
      await sleep(RETRY_MS[Math.min(attempt - 1, RETRY_MS.length - 1)]);
    }
    let response;
    try {
      response = await request(`/checkout/${encodeURIComponent(key)}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (error) {
      if (error instanceof NetworkError) {
        why = "The connection dropped";
        continue;
      }
      throw error;
    }
    if (response.status === 503) {
      why = "The store is busy";
      continue;
    }
    return { response, reply: await response.json().catch(() => ({})) };
  }
  return null;
}

function describeShortage(short) {
  return short.map((s) => {
    const name = products.get(s.product_id)?.name || `product ${s.product_id}`;
    const left = s.available === 0 ? "none are left" : `only ${s.available} left`;
    return `${name}: you asked for ${s.requested}, ${left}`;
  }).join("; ");
}

function explain(text) {
  message.textContent = text;
}

async function buy(event) {
  event.preventDefault();
  if (buyButton.disabled) return; // a checkout is already in flight
  explain("");
  const items = [...cart].sort(([a], [b]) => a - b)
    .map(([product_id, quantity]) => ({ product_id, quantity }));
  const shippingAddress = address.value.trim();
  if (items.length === 0) {
    explain("Your cart is empty: add a widget first.");
    return;
  }
  if (!shippingAddress) {
    explain("Please enter a shipping address.");
    address.focus();
    return;
  }
  const body = { items, shipping_address: shippingAddress };
  const attempt = attemptFor(body);
  buyButton.disabled = true;
  cartStatus.textContent = "Placing your order…";
  let outcome = null;
  try {
    outcome = await postCheckout(attempt.key, body);
  } finally {
    if (!outcome || !outcome.response.ok) buyButton.disabled = false;
  }
  if (outcome === null) {
    cartStatus.textContent = "";
    explain("We couldn't reach the store. Your cart is kept: press Buy now to try again. " +
      "You will not be charged twice.");
    return;
  }
  const { response, reply } = outcome;
  if (response.ok) {
    forgetAttempt();
    cart.clear();
    saveCart();
    cartStatus.textContent = "Order placed: taking you to the payment page…";
    window.location.assign(reply.payment_url);
    return;
  }
  forgetAttempt(); // a definite answer: the next try is a new checkout
  cartStatus.textContent = "";
  if (response.status === 409 && Array.isArray(reply.short_items)) {
    explain(`Sorry, we don't have enough stock for this order, so we cancelled it and ` +
      `nothing was charged. ${describeShortage(reply.short_items)}. ` +
      `Lower the quantity and try again.`);
    loadCatalog();
    return;
  }
  explain(`Your order could not be placed: ${detailOf(reply, `HTTP ${response.status}`)}.`);
}

form.addEventListener("submit", buy);
address.addEventListener("input", saveCart);
onReconnect(loadCatalog);

async function keepStockLive() {
  for (;;) {
    await sleep(STOCK_REFRESH_MS);
    if (!document.hidden) await loadCatalog();
  }
}

loadCatalog();
keepStockLive();
