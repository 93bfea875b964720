"use strict";
// The storefront: catalog with live stock, a cart, and Buy now.
const cart = new Map();
let products = [];

const money = (cents) => `$${(cents / 100).toFixed(2)}`;

async function loadCatalog() {
  const response = await fetch("/products");
  products = await response.json();
  const list = document.getElementById("catalog");
  list.replaceChildren(...products.map((p) => {
    const item = document.createElement("li");
    item.innerHTML = `<h3></h3><p class="description"></p><p>${money(p.price_cents)} · <span class="stock"></span> in stock</p>
      <label>Quantity <input type="number" min="1" max="100" value="1"></label>
      <button type="button">Add to cart</button>`;
    item.querySelector("h3").textContent = p.name;
    item.querySelector(".description").textContent = p.description;
    item.querySelector(".stock").textContent = p.inventory;
    item.querySelector("button").addEventListener("click", () => {
      const quantity = Number(item.querySelector("input").value) || 1;
      cart.set(p.product_id, (cart.get(p.product_id) || 0) + quantity);
      renderCart();
    });
    return item;
  }));
}

function renderCart() {
  const body = document.querySelector("#cart tbody");
  let total = 0;
  body.replaceChildren(...[...cart].map(([id, quantity]) => {
    const product = products.find((p) => p.product_id === id);
    total += product.price_cents * quantity;
    const row = document.createElement("tr");
    row.innerHTML = "<td></td><td></td><td></td>";
    row.children[0].textContent = product.name;
    row.children[1].textContent = `× ${quantity}`;
    row.children[2].textContent = money(product.price_cents * quantity);
    return row;
  }));
  document.getElementById("cart-total").textContent = money(total);
}

let checkoutKey = null;

async function buy(event) {
  event.preventDefault();
  const message = document.getElementById("message");
  if (cart.size === 0) { message.textContent = "Your cart is empty."; return; }
  checkoutKey = checkoutKey || crypto.randomUUID();  // one key per cart: retries never buy twice
  const body = {
    items: [...cart].map(([product_id, quantity]) => ({ product_id, quantity })),
    shipping_address: document.getElementById("address").value,
  };
  const response = await fetch(`/checkout/${checkoutKey}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const reply = await response.json();
  if (response.ok) { window.location.assign(reply.payment_url); return; }
  message.textContent = reply.detail || "Something went wrong.";
  checkoutKey = null;
  loadCatalog();
}

document.getElementById("checkout-form").addEventListener("submit", buy);
loadCatalog();
