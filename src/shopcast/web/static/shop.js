/* Demo storefront: browse, view, cart, buy — every action is a real event. */
"use strict";

(() => {
  const { api, optional, el, money } = Shopcast;
  const PAGE = 24;
  // Tile colours with white text at >= 4.5:1 contrast (WCAG AA).
  const COLORS = ["#005a9c", "#8a4b00", "#1a6b40", "#a3290d", "#7b2d63", "#2f5d8a", "#5b3a8a", "#444"];
  const main = document.getElementById("main");
  const state = {
    user: null,
    session: null,
    cart: [], // {item_id, title, price, quantity}
    category: null,
    q: "",
    offset: 0,
    items: new Map(), // item_id -> catalog record seen so far
    push: null,
  };

  // -- identity -------------------------------------------------------------------------
  function randomId(prefix) {
    const bytes = new Uint8Array(4);
    crypto.getRandomValues(bytes);
    return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function initIdentity() {
    const params = new URLSearchParams(location.search);
    state.user = (params.get("user") || localStorage.getItem("shopcast.user") || randomId("visitor-")).trim();
    localStorage.setItem("shopcast.user", state.user);
    state.session = sessionStorage.getItem("shopcast.session") || randomId("web-");
    sessionStorage.setItem("shopcast.session", state.session);
    // An API key comes in the fragment (#key=…, never sent to the server, so never in its
    // access log); it is kept in this tab only and taken out of the address bar.
    const match = location.hash.match(/^#key=([^&]+)(?:&(.*))?$/);
    if (match) {
      Shopcast.setApiKey(decodeURIComponent(match[1]));
      history.replaceState(null, "", `${location.pathname}${location.search}${match[2] ? `#${match[2]}` : ""}`);
    }
    document.getElementById("user-id").value = state.user;
    loadCart();
  }

  function cartKey() { return `shopcast.cart.${state.user}`; }
  function loadCart() {
    try { state.cart = JSON.parse(localStorage.getItem(cartKey()) || "[]"); } catch (e) { state.cart = []; }
    renderCartCount();
  }
  function saveCart() { localStorage.setItem(cartKey(), JSON.stringify(state.cart)); renderCartCount(); }
  function renderCartCount() {
    document.getElementById("cart-count").textContent = String(state.cart.reduce((n, l) => n + l.quantity, 0));
  }

  // -- events ---------------------------------------------------------------------------
  async function track(type, item, extra) {
    const event = Object.assign({
      type,
      user_id: state.user,
      session_id: state.session,
      timestamp: Date.now() / 1000,
      context: { channel: "web", page: location.hash.split("/")[0] || "#home" },
    }, extra || {});
    if (item) {
      event.item_id = item.item_id;
      if (item.price !== null && item.price !== undefined) event.price = item.price;
    }
    try {
      await api("/v1/events", { method: "POST", json: event });
    } catch (err) {
      notice(`Could not send the ${type} event: ${err.message}`);
    }
  }

  function notice(text) {
    const box = document.getElementById("notice");
    box.textContent = text;
    box.hidden = !text;
  }

  // -- rendering helpers ----------------------------------------------------------------
  /** The category path, else the genres (MovieLens), as text. */
  function groupsOf(item) {
    if (item.category && item.category.length) return item.category.join(" › ");
    const genres = item.attributes && Array.isArray(item.attributes.genres) ? item.attributes.genres : [];
    return genres.join(", ");
  }

  function thumb(item) {
    const genres = item.attributes && Array.isArray(item.attributes.genres) ? item.attributes.genres : [];
    const top = (item.category && item.category[0]) || genres[0] || item.title || item.item_id;
    let h = 0;
    for (const ch of top) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
    const node = el("div", { class: "thumb", "aria-hidden": "true" }, (item.title || item.item_id).slice(0, 2).toUpperCase());
    node.style.background = COLORS[h % COLORS.length];
    return node;
  }

  function card(item, opts) {
    const o = opts || {};
    const link = el("a", {
      href: `#item/${encodeURIComponent(item.item_id)}`,
      "data-item-id": item.item_id,
      onclick: o.onclick,
    },
      thumb(item),
      el("span", { class: "name" }, item.title || item.item_id),
      item.price !== null && item.price !== undefined ? el("span", { class: "price" }, money(item.price)) : null,
      o.reason ? el("span", { class: "reason" }, o.reason) : null);
    return el("li", { class: "card" }, link);
  }

  /** A recommendation shelf; clicking an item posts a click with the recommendation id. */
  async function shelf(testid, title, load, note) {
    const list = el("ul", { class: "cards", "aria-label": title });
    const section = el("section", { class: "shelf", "data-testid": testid, "aria-busy": "true" },
      el("h2", {}, title, note ? el("span", { class: "small muted" }, note) : null), list);
    (async () => {
      try {
        const rec = await load();
        if (!rec) {
          list.replaceWith(el("p", { class: "na" }, "not available"));
          return;
        }
        section.dataset.recommendationId = rec.recommendation_id || "";
        if (!rec.items.length) list.replaceWith(el("p", { class: "muted" }, "Nothing to suggest yet."));
        for (const it of rec.items) {
          state.items.set(it.item_id, Object.assign(state.items.get(it.item_id) || {}, it));
          list.append(card(it, {
            reason: it.reason,
            onclick: () => track("click", it, { recommendation_id: rec.recommendation_id, context: { channel: "web", shelf: testid } }),
          }));
        }
      } catch (err) {
        list.replaceWith(el("p", { class: "error" }, `Could not load: ${err.message}`));
      } finally {
        section.setAttribute("aria-busy", "false");
      }
    })();
    return section;
  }

  /** "For you": the shopper's home recommendations, live session included (minus ``except``). */
  const forYou = (except) => shelf("for-you", "For you",
    () => api(`/v1/users/${encodeURIComponent(state.user)}/recommendations?k=8&session_id=${encodeURIComponent(state.session)}` +
      (except ? `&exclude=${encodeURIComponent(except)}` : "")),
    "updates as you browse");

  // -- pages ----------------------------------------------------------------------------
  async function home() {
    document.title = "Shopcast demo shop";
    const search = el("form", { role: "search", onsubmit: (e) => { e.preventDefault(); state.q = e.target.q.value; state.offset = 0; route(); } },
      el("div", {}, el("label", { for: "q" }, "Search products"), el("input", { id: "q", name: "q", type: "search", value: state.q })),
      el("button", { type: "submit" }, "Search"));
    const cats = el("ul", { class: "cats", "aria-label": "Categories" });
    const grid = el("ul", { class: "cards", "aria-label": "Products", "data-testid": "catalog" });
    const pager = el("nav", { class: "pager", "aria-label": "Pages" });
    main.replaceChildren(
      el("h1", { class: "visually-hidden" }, "Shop"),
      await forYou(),
      el("div", { class: "toolbar" }, search),
      cats,
      el("section", { "aria-labelledby": "products-h" }, el("h2", { id: "products-h" }, state.category || "All products"), grid, pager),
      await shelf("trending", "Trending now", () => api("/v1/trending?k=8")));
    const catData = await api("/v1/shop/categories");
    const all = [{ name: null, items: null }].concat(catData.categories.slice(0, 12));
    for (const c of all) {
      cats.append(el("li", {}, el("button", {
        type: "button", class: "secondary", "aria-pressed": String(state.category === c.name),
        onclick: () => { state.category = c.name; state.offset = 0; route(); },
      }, c.name || "All")));
    }
    const params = new URLSearchParams({ limit: PAGE, offset: state.offset });
    if (state.category) params.set("category", state.category);
    if (state.q) params.set("q", state.q);
    const page = await api(`/v1/shop/items?${params}`);
    if (catData.categories.length === 0 && page.total === 0) {
      grid.replaceWith(el("p", {}, "The catalog is empty: import a shop from the dashboard (Jobs) or run ", el("code", {}, "shopcast demo"), "."));
    }
    for (const it of page.items) {
      state.items.set(it.item_id, it);
      grid.append(card(it));
      if (it.attributes && it.attributes.synthetic) notice("This shop is SIMULATED (synthetic data, for demonstration only).");
    }
    const last = Math.min(page.total, state.offset + PAGE);
    pager.append(
      el("button", { type: "button", class: "secondary", disabled: state.offset === 0, onclick: () => { state.offset = Math.max(0, state.offset - PAGE); route(); } }, "Previous"),
      el("span", { class: "small" }, page.total ? `${state.offset + 1}–${last} of ${page.total}` : "no products"),
      el("button", { type: "button", class: "secondary", disabled: last >= page.total, onclick: () => { state.offset += PAGE; route(); } }, "Next"));
  }

  async function product(itemId) {
    let item;
    try {
      item = await api(`/v1/items/${encodeURIComponent(itemId)}`);
    } catch (err) {
      main.replaceChildren(el("h1", {}, "Product not found"), el("p", {}, err.message), el("a", { href: "#home" }, "Back to the shop"));
      return;
    }
    state.items.set(item.item_id, item);
    document.title = `${item.title || item.item_id} · Shopcast demo shop`;
    await track("view", item);
    const qty = el("input", { id: "qty", type: "number", min: "1", max: "99", value: "1", inputmode: "numeric" });
    const add = el("button", { type: "button", "data-testid": "add-to-cart", onclick: async () => {
      const quantity = Math.max(1, parseInt(qty.value, 10) || 1);
      const line = state.cart.find((l) => l.item_id === item.item_id);
      if (line) line.quantity += quantity; else state.cart.push({ item_id: item.item_id, title: item.title, price: item.price, quantity });
      saveCart();
      await track("add_to_cart", item, { quantity });
      add.textContent = "Added ✓";
      status.textContent = `${item.title || item.item_id} is in your cart.`;
    } }, "Add to cart");
    const status = el("p", { role: "status", class: "small" });
    const stock = item.stock === null || item.stock === undefined ? null : item.stock > 0 ? `${item.stock} in stock` : "out of stock";
    main.replaceChildren(
      el("p", {}, el("a", { href: "#home" }, "← Back to the shop")),
      el("article", { class: "product panel", "data-testid": "product", "data-item-id": item.item_id },
        thumb(item),
        el("div", {},
          el("h1", {}, item.title || item.item_id),
          el("p", { class: "muted" }, groupsOf(item) || "uncategorized", item.brand ? ` · ${item.brand}` : ""),
          el("p", { class: "price" }, money(item.price),
            item.original_price && item.original_price > item.price ? el("span", { class: "muted small" }, ` (was ${money(item.original_price)})`) : null),
          stock ? el("p", { class: "small" }, stock) : null,
          item.description ? el("p", {}, item.description) : null,
          el("div", { class: "row" }, el("div", {}, el("label", { for: "qty" }, "Quantity"), qty), add),
          status)),
      await shelf("similar", "Similar items", () => api(`/v1/items/${encodeURIComponent(item.item_id)}/similar?k=8`)),
      await shelf("bought-together", "Bought together", () => api(`/v1/items/${encodeURIComponent(item.item_id)}/bought-together?k=8`)),
      await forYou(item.item_id));
  }

  async function cart() {
    document.title = "Cart · Shopcast demo shop";
    const total = state.cart.reduce((s, l) => s + (l.price || 0) * l.quantity, 0);
    const rows = state.cart.map((l) => el("tr", {},
      el("td", {}, el("a", { href: `#item/${encodeURIComponent(l.item_id)}` }, l.title || l.item_id)),
      el("td", {}, String(l.quantity)),
      el("td", {}, money((l.price || 0) * l.quantity)),
      el("td", {}, el("button", { type: "button", class: "secondary", "aria-label": `Remove ${l.title || l.item_id}`, onclick: async () => {
        state.cart = state.cart.filter((x) => x.item_id !== l.item_id);
        saveCart();
        await track("remove_from_cart", l);
        route();
      } }, "Remove"))));
    const buy = el("button", { type: "button", "data-testid": "buy", disabled: !state.cart.length, onclick: async () => {
      buy.disabled = true;
      const order = randomId("order-");
      for (const l of state.cart) await track("purchase", l, { quantity: l.quantity, context: { channel: "web", order_id: order } });
      state.cart = [];
      saveCart();
      main.replaceChildren(el("h1", { tabindex: "-1", id: "thanks" }, "Thank you for your order!"),
        el("p", {}, `Order ${order} is placed (purchase events sent).`),
        el("p", {}, el("a", { href: "#home" }, "Continue shopping")),
        await forYou());
      document.getElementById("thanks").focus();
    } }, "Buy now");
    main.replaceChildren(
      el("h1", {}, "Your cart"),
      state.cart.length
        ? el("div", { class: "table-wrap panel" }, el("table", { class: "cart-table" },
            el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Product"), el("th", { scope: "col" }, "Qty"), el("th", { scope: "col" }, "Price"), el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, "Actions")))),
            el("tbody", {}, rows)),
            el("p", { class: "price" }, `Total: ${money(total)}`), buy)
        : el("p", {}, "Your cart is empty. ", el("a", { href: "#home" }, "Browse the shop")),
      state.cart.length
        ? await shelf("complete-cart", "Complete your cart", () => api("/v1/cart/recommendations", {
            method: "POST", json: { user_id: state.user, session_id: state.session, items: state.cart.map((l) => l.item_id), k: 6 },
          }))
        : null);
  }

  async function route() {
    const [page, arg] = location.hash.replace(/^#/, "").split("/");
    try {
      if (page === "item" && arg) await product(decodeURIComponent(arg));
      else if (page === "cart") await cart();
      else await home();
    } catch (err) {
      main.replaceChildren(el("p", { class: "error" }, `Something went wrong: ${err.message}`));
    }
  }

  // -- live pushes ----------------------------------------------------------------------
  function pushFeedback(msg, kind) {
    if (!msg.message_id) return;
    optional(`/v1/push/${encodeURIComponent(msg.message_id)}/${kind}`, { method: "POST" }).catch(() => {});
  }

  function connectPush() {
    if (state.push) state.push.stop();
    const label = document.getElementById("push-status");
    state.push = Shopcast.stream(`/v1/users/${encodeURIComponent(state.user)}/stream`, (name, data) => {
      if (name !== "push" || typeof data !== "object") return;
      Shopcast.toast(data, (itemId, msg) => {
        pushFeedback(msg, "click");
        track("click", { item_id: itemId }, { context: { channel: "push", message_id: msg.message_id || "", trigger: msg.trigger || "" } });
        location.hash = `#item/${encodeURIComponent(itemId)}`;
      });
      pushFeedback(data, "open"); // shown on screen: the push engine counts it as opened
    }, (status) => {
      label.textContent = {
        live: "Live messages: on",
        unavailable: "Live messages: not available on this server",
        reconnecting: "Live messages: reconnecting…",
      }[status] || status;
      label.dataset.status = status;
    });
  }

  document.getElementById("who").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = document.getElementById("user-id").value.trim();
    if (!value) return;
    state.user = value;
    localStorage.setItem("shopcast.user", value);
    loadCart();
    connectPush();
    route();
  });
  window.addEventListener("hashchange", () => { route(); main.focus({ preventScroll: true }); window.scrollTo(0, 0); });

  initIdentity();
  connectPush();
  route();
})();
