/* Shopcast web UI: API access, the push stream and toasts (shared by both pages). */
"use strict";

const Shopcast = (() => {
  const KEY = "shopcast.apiKey";

  function apiKey() { return sessionStorage.getItem(KEY) || ""; }
  function setApiKey(value) {
    if (value) sessionStorage.setItem(KEY, value); else sessionStorage.removeItem(KEY);
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && (body.message || body.detail)) || `HTTP ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    const key = apiKey();
    if (key) h["X-API-Key"] = key;
    return h;
  }

  /** fetch + JSON; throws ApiError with the JSON error body on 4xx/5xx. */
  async function api(path, options) {
    const opts = Object.assign({}, options || {});
    opts.headers = headers(opts.headers);
    if (opts.json !== undefined) {
      opts.body = JSON.stringify(opts.json);
      opts.headers["Content-Type"] = "application/json";
      delete opts.json;
    }
    const res = await fetch(path, opts);
    const type = res.headers.get("Content-Type") || "";
    const body = type.includes("json") ? await res.json() : await res.text();
    if (!res.ok) throw new ApiError(res.status, typeof body === "object" ? body : { message: body });
    return body;
  }

  /** Like api() but "not available" (null) when the endpoint does not exist yet (404/405/501). */
  async function optional(path, options) {
    try {
      return await api(path, options);
    } catch (err) {
      // A route that does not exist (yet) answers FastAPI's own {"detail": "Not Found"}.
      const missing = err instanceof ApiError &&
        ((err.status === 404 && err.body && err.body.detail === "Not Found") || [405, 501].includes(err.status));
      if (missing) return null;
      throw err;
    }
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function money(v) {
    return v === null || v === undefined ? "" : new Intl.NumberFormat(undefined, { style: "currency", currency: "EUR" }).format(v);
  }

  function pct(v, digits) {
    return v === null || v === undefined ? "–" : `${(v * 100).toFixed(digits === undefined ? 1 : digits)}%`;
  }

  function when(ts) {
    return ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–";
  }

  /**
   * Server-sent events over fetch (so the API key can go in a header, which
   * EventSource cannot send). Calls onEvent(name, data) per message; reconnects with
   * back-off; onStatus("live" | "unavailable" | "reconnecting").
   */
  function stream(path, onEvent, onStatus) {
    let stopped = false;
    let controller = null;
    let delay = 1000;
    async function run() {
      while (!stopped) {
        controller = new AbortController();
        try {
          const res = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal: controller.signal });
          if (res.status === 404 || res.status === 405 || res.status === 501) {
            onStatus && onStatus("unavailable");
            delay = 15000; // the push engine may be deployed later: look again now and then
          } else if (!res.ok || !res.body) {
            onStatus && onStatus("reconnecting");
          } else {
            onStatus && onStatus("live");
            delay = 1000;
            const reader = res.body.getReader();
            const decoder = new TextDecoder();
            let buffer = "";
            for (;;) {
              const { value, done } = await reader.read();
              if (done) break;
              buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
              let cut;
              while ((cut = buffer.indexOf("\n\n")) >= 0) {
                const block = buffer.slice(0, cut);
                buffer = buffer.slice(cut + 2);
                let name = "message";
                const data = [];
                for (const line of block.split("\n")) {
                  if (line.startsWith(":")) continue;
                  const i = line.indexOf(":");
                  const field = i < 0 ? line : line.slice(0, i);
                  const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
                  if (field === "event") name = val;
                  else if (field === "data") data.push(val);
                }
                if (data.length) {
                  let parsed = data.join("\n");
                  try { parsed = JSON.parse(parsed); } catch (e) { /* plain text */ }
                  onEvent(name, parsed);
                }
              }
            }
            onStatus && onStatus("reconnecting");
          }
        } catch (err) {
          if (stopped) return;
          onStatus && onStatus("reconnecting");
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 30000);
      }
    }
    run();
    return { stop() { stopped = true; if (controller) controller.abort(); } };
  }

  /** A push message as a toast (role=status region: announced by screen readers). */
  function toast(msg, onItem) {
    let box = document.getElementById("toasts");
    if (!box) {
      box = el("div", { id: "toasts", role: "status", "aria-live": "polite" });
      document.body.append(box);
    }
    const close = el("button", { class: "close secondary", type: "button", "aria-label": "Dismiss message", text: "×" });
    const items = (msg.items || []).map((it) =>
      el("li", {}, onItem
        ? el("a", { href: `#item/${encodeURIComponent(it.item_id)}`, onclick: (e) => { e.preventDefault(); onItem(it.item_id, msg); } }, it.title || it.item_id)
        : (it.title || it.item_id),
        it.price !== undefined && it.price !== null ? ` — ${money(it.price)}` : ""));
    const node = el("div", { class: "toast", "data-trigger": msg.trigger || "", "data-message-id": msg.message_id || "" },
      close,
      el("div", { class: "t" }, msg.title || "Message"),
      msg.body ? el("div", {}, msg.body) : null,
      items.length ? el("ul", {}, items) : null,
      el("div", { class: "small muted" }, `${msg.trigger || "push"} · ${msg.channel || "in_app"}`));
    close.addEventListener("click", () => node.remove());
    box.append(node);
    setTimeout(() => node.remove(), 30000);
    return node;
  }

  return { api, optional, apiKey, setApiKey, ApiError, el, money, pct, when, stream, toast };
})();
