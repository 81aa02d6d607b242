/* Shopcast dashboard: overview, models, user and item inspectors, experiments/push, jobs. */
"use strict";

(() => {
  const { api, optional, el, pct, money, when, ApiError } = Shopcast;
  const statusLine = document.getElementById("status");
  const timers = {};

  function say(text, isError) {
    statusLine.textContent = text || "";
    statusLine.classList.toggle("error", !!isError);
  }

  function problem(err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      return el("p", { class: "error" }, `${err.message} — enter an API key with the needed scope above.`);
    }
    return el("p", { class: "error" }, `Error: ${err.message}`);
  }

  const na = (what) => el("p", { class: "na" }, `${what}: not available on this server yet.`);

  /** Any JSON as readable HTML: arrays of objects as tables, objects as key/value lists. */
  function render(value, depth) {
    const d = depth || 0;
    if (value === null || value === undefined) return el("span", { class: "muted" }, "–");
    if (typeof value === "number") return document.createTextNode(Number.isInteger(value) ? String(value) : value.toFixed(4).replace(/0+$/, "").replace(/\.$/, ""));
    if (typeof value !== "object") return document.createTextNode(String(value));
    if (Array.isArray(value)) {
      if (!value.length) return el("span", { class: "muted" }, "none");
      if (value.every((v) => v && typeof v === "object" && !Array.isArray(v))) {
        const cols = [...new Set(value.flatMap((v) => Object.keys(v)))].slice(0, 14);
        return el("div", { class: "table-wrap" }, el("table", {},
          el("thead", {}, el("tr", {}, cols.map((c) => el("th", { scope: "col" }, c)))),
          el("tbody", {}, value.map((v) => el("tr", {}, cols.map((c) => el("td", {}, render(v[c], d + 1))))))));
      }
      return document.createTextNode(value.map((v) => (typeof v === "object" ? JSON.stringify(v) : String(v))).join(", "));
    }
    if (d > 3) return document.createTextNode(JSON.stringify(value));
    return el("dl", { class: "kv" }, Object.entries(value).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, render(v, d + 1))]));
  }

  // -- tabs (WAI-ARIA tabs: arrow keys move between tabs) ------------------------------
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const loaders = {};
  function select(tab, focus) {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
    const name = tab.getAttribute("aria-controls");
    history.replaceState(null, "", `#${name}`);
    for (const k of Object.keys(timers)) { clearInterval(timers[k]); delete timers[k]; }
    if (loaders[name]) loaders[name]();
  }
  tabs.forEach((tab, i) => {
    tab.type = "button";
    tab.addEventListener("click", () => select(tab, false));
    tab.addEventListener("keydown", (e) => {
      let j = null;
      if (e.key === "ArrowRight") j = (i + 1) % tabs.length;
      else if (e.key === "ArrowLeft") j = (i - 1 + tabs.length) % tabs.length;
      else if (e.key === "Home") j = 0;
      else if (e.key === "End") j = tabs.length - 1;
      if (j !== null) { e.preventDefault(); select(tabs[j], true); }
    });
  });

  // -- overview -------------------------------------------------------------------------
  function kpi(label, value, testid, code) {
    return el("div", { class: "kpi", "data-testid": testid || null }, el("div", { class: code ? "v code" : "v" }, value), el("div", { class: "l" }, label));
  }

  async function loadCharts() {
    for (const box of document.querySelectorAll("[data-chart]")) {
      try {
        const width = Math.max(240, Math.min(2000, Math.round(box.clientWidth || 640)));
        const svg = await api(`/v1/dashboard/charts/${box.dataset.chart}.svg?width=${width}`, { headers: { Accept: "image/svg+xml" } });
        box.innerHTML = svg; // our own server-rendered SVG (escaped there)
      } catch (err) {
        box.replaceChildren(problem(err));
      }
    }
  }

  function span(seconds) {
    if (seconds % 86400 === 0) return `${seconds / 86400} d`;
    if (seconds % 3600 === 0) return `${seconds / 3600} h`;
    return `${Math.round(seconds / 60)} min`;
  }

  const ONLINE = [
    ["impressions", "impressions"], ["clicks", "clicks"], ["ctr", "CTR"],
    ["conversion_rate", "conversion (purchases / clicks)"], ["purchases", "purchases"],
    ["revenue", "revenue"], ["rpm", "revenue per 1000 impressions"], ["coverage", "catalog coverage"],
    ["exposure_gini", "exposure Gini"], ["intra_list_diversity", "intra-list diversity"],
    ["shoppers", "shoppers"], ["recommendations", "recommendation lists"],
  ];
  const RATES = new Set(["ctr", "conversion_rate", "coverage"]);

  /** GET /v1/metrics (feedback loop): windows side by side; breakdowns of the longest. */
  function onlineMetrics(m) {
    if (!m || !Array.isArray(m.windows) || !m.windows.length || !m.windows[0].overall) return render(m);
    const cell = (key, v) => (v === null || v === undefined ? "–" : RATES.has(key) ? pct(v, 2) : typeof v === "number" ? (Number.isInteger(v) ? v.toLocaleString() : v.toFixed(3)) : String(v));
    const table = el("table", { "data-testid": "online-windows" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "metric"), m.windows.map((w) => el("th", { scope: "col" }, `last ${span(w.window_s)}`)))),
      el("tbody", {}, ONLINE.filter(([k]) => m.windows.some((w) => k in w.overall)).map(([k, label]) =>
        el("tr", {}, el("th", { scope: "row" }, label), m.windows.map((w) => el("td", {}, cell(k, w.overall[k])))))));
    const longest = m.windows[m.windows.length - 1];
    const breakdowns = Object.keys(longest).filter((k) => k.startsWith("by_") && Array.isArray(longest[k]) && longest[k].length);
    const parts = [el("div", { class: "table-wrap" }, table)];
    for (const key of breakdowns) {
      const rows = longest[key];
      const dim = key.slice(3);
      parts.push(el("details", {}, el("summary", {}, `by ${dim.replace(/_/g, " ")} (last ${span(longest.window_s)})`),
        el("div", { class: "table-wrap" }, el("table", {},
          el("thead", {}, el("tr", {}, [dim, "impressions", "clicks", "CTR", "purchases", "conversion"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, rows.slice(0, 20).map((r) => el("tr", {}, el("td", {}, String(r[dim])),
            el("td", {}, cell("impressions", r.impressions)), el("td", {}, cell("clicks", r.clicks)),
            el("td", {}, cell("ctr", r.ctr)), el("td", {}, cell("purchases", r.purchases)),
            el("td", {}, cell("conversion_rate", r.conversion_rate)))))))));
    }
    return el("div", {}, ...parts);
  }

  async function loadOverview() {
    try {
      const o = await api("/v1/dashboard/overview");
      const lastMinute = Object.values(o.events_last_minute).reduce((a, b) => a + b, 0);
      const lat = o.requests.latency_ms;
      const today = o.daily.length ? o.daily[o.daily.length - 1] : null;
      document.getElementById("kpis").replaceChildren(
        kpi("events in the last minute", String(lastMinute), "kpi-events-minute"),
        kpi(`active users / sessions (${o.active.window_s / 60} min)`, `${o.active.users} / ${o.active.sessions}`, "kpi-active"),
        kpi("recommendation requests / min (5 min)", String(o.requests.per_minute), "kpi-requests"),
        kpi("latency p50 / p95 / p99 (ms)", [lat.p50, lat.p95, lat.p99].map((v) => (v === null ? "–" : v.toFixed(1))).join(" / "), "kpi-latency"),
        kpi(`CTR / conversion (${today ? today.day : "latest day"})`, today ? `${pct(today.ctr)} / ${pct(today.conversion)}` : "–", "kpi-ctr"),
        kpi("catalog coverage: with events / recommended (24 h)", `${pct(o.coverage.event_coverage)} / ${pct(o.coverage.recommendation_coverage)}`, "kpi-coverage"),
        kpi("events in the log", o.total_events.toLocaleString(), "kpi-total"),
        kpi("model serving", o.model_version, "kpi-model", true));
      document.getElementById("overview-updated").textContent = `updated ${new Date(o.generated_at * 1000).toLocaleTimeString()}`;
      await loadCharts();
      const metrics = await optional("/v1/metrics");
      const box = document.getElementById("online-metrics");
      box.replaceChildren(metrics === null ? na("Online metrics (GET /v1/metrics)") : onlineMetrics(metrics));
    } catch (err) {
      document.getElementById("kpis").replaceChildren(problem(err));
    }
  }
  loaders.overview = () => { loadOverview(); timers.overview = setInterval(loadOverview, 5000); };

  // -- models ---------------------------------------------------------------------------
  async function promote(version) {
    say(`promoting ${version}…`);
    try {
      const r = await api(`/v1/models/${encodeURIComponent(version)}/promote`, { method: "POST" });
      say(`now serving ${r.serving}`);
    } catch (err) { say(`promote failed: ${err.message}`, true); }
    loadModels();
  }

  document.getElementById("rollback").addEventListener("click", async () => {
    if (!confirm("Roll back to the previously promoted model?")) return;
    try {
      const r = await api("/v1/models/rollback", { method: "POST" });
      say(`rolled back; serving ${r.serving}`);
    } catch (err) { say(`rollback failed: ${err.message}`, true); }
    loadModels();
  });

  async function loadModels() {
    const box = document.getElementById("registry");
    try {
      const m = await api("/v1/models");
      const rows = m.versions.map((v) => {
        const stats = v.stats || {};
        const serving = v.version === m.serving;
        return el("tr", { "data-version": v.version },
          el("td", {}, el("code", {}, v.version), " ", serving ? el("span", { class: "badge" }, "serving") : null, v.current && !serving ? el("span", { class: "badge" }, "current") : null),
          el("td", {}, when(v.created_at)),
          el("td", {}, Object.keys(v.models || {}).join(", ") || "–"),
          el("td", {}, ["events", "items", "subjects", "train_s"].filter((k) => k in stats).map((k) => `${k}=${stats[k]}`).join(" ")),
          el("td", {}, serving ? "" : el("button", { type: "button", class: "secondary", "aria-label": `Promote ${v.version}`, onclick: () => promote(v.version) }, "Promote")));
      });
      box.replaceChildren(rows.length
        ? el("div", { class: "table-wrap" }, el("table", {},
            el("thead", {}, el("tr", {}, ["version", "created", "models", "trained on", ""].map((h) => el("th", { scope: "col" }, h)))),
            el("tbody", {}, rows)))
        : el("p", {}, "No trained model yet: start a training from Jobs."));
    } catch (err) { box.replaceChildren(problem(err)); }
    const ev = document.getElementById("evaluations");
    try {
      const e = await api("/v1/dashboard/evaluations");
      if (!e.reports.length) {
        ev.replaceChildren(el("p", { class: "muted" }, `No reports in ${e.folder}: run `, el("code", {}, "shopcast evaluate q1"), " or an Evaluate job."));
        return;
      }
      const parts = [];
      for (const r of e.reports) {
        parts.push(el("h3", {}, `${(r.benchmark || "?").toUpperCase()} — ${r.dataset || r.file}`));
        if (r.error) { parts.push(el("p", { class: "error" }, r.error)); continue; }
        parts.push(el("div", { class: "table-wrap" }, el("table", {},
          el("thead", {}, el("tr", {}, ["kind", "model", ...r.columns].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, r.rows.map((row) => el("tr", {}, el("td", {}, row.kind), el("td", {}, row.name),
            r.columns.map((c) => el("td", {}, row[c] === undefined ? (row.skipped ? "skipped" : "–") : render(row[c])))))))));
        const stem = r.file.replace(/\.json$/, "");
        const plots = e.plots.filter((p) => p.startsWith(stem));
        const holder = el("div", { class: "plots" });
        parts.push(holder);
        for (const p of plots) {
          const img = el("img", { alt: `${r.benchmark} plot ${p}`, loading: "lazy" });
          holder.append(img);
          fetchImage(`/v1/dashboard/evaluations/${encodeURIComponent(p)}`).then((u) => { img.src = u; });
        }
      }
      ev.replaceChildren(...parts);
    } catch (err) { ev.replaceChildren(problem(err)); }
  }
  async function fetchImage(path) {
    const headers = Shopcast.apiKey() ? { "X-API-Key": Shopcast.apiKey() } : {};
    const res = await fetch(path, { headers });
    return URL.createObjectURL(await res.blob());
  }
  loaders.models = loadModels;

  // -- user inspector -------------------------------------------------------------------
  function recTable(rec) {
    if (!rec) return na("Recommendations");
    return el("div", {}, el("p", { class: "small muted" }, `model ${rec.model_version}`, rec.degraded && rec.degraded.length ? ` · degraded: ${rec.degraded.join(", ")}` : ""),
      el("div", { class: "table-wrap" }, el("table", {},
        el("thead", {}, el("tr", {}, ["#", "item", "score", "source", "why"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, rec.items.map((it, i) => el("tr", {},
          el("td", {}, String(i + 1)),
          el("td", {}, el("a", { href: "#items", onclick: (e) => { e.preventDefault(); inspectItem(it.item_id); } }, it.title || it.item_id)),
          el("td", {}, it.score.toFixed(3)), el("td", {}, it.source), el("td", {}, it.reason)))))));
  }

  async function settle(promise) {
    try { return { value: await promise }; } catch (err) { return { error: err }; }
  }

  /** GET /v1/users/{id}/push: messages newest first, their deliveries and opens/clicks. */
  function pushHistory(h) {
    const messages = h && Array.isArray(h.messages) ? h.messages : null;
    if (!messages) return render(h);
    if (!messages.length) return el("p", { class: "muted" }, "No push sent to this user.");
    return el("div", { class: "table-wrap" }, el("table", { "data-testid": "push-history" },
      el("thead", {}, el("tr", {}, ["sent", "trigger", "message", "delivery", "feedback"].map((x) => el("th", { scope: "col" }, x)))),
      el("tbody", {}, messages.map((m) => el("tr", {},
        el("td", {}, String(m.created_at || "").replace("T", " ").slice(0, 19)),
        el("td", {}, m.trigger, el("div", { class: "small muted" }, m.channel || "")),
        el("td", {}, el("strong", {}, m.title || ""), m.body ? el("div", { class: "small" }, m.body) : null,
          (m.items || []).length ? el("div", { class: "small muted" }, m.items.map((i) => i.title || i.item_id).join(", ")) : null),
        el("td", {}, (m.deliveries || []).map((d) => `${d.channel}: ${d.status || "?"}`).join(", ") || "–"),
        el("td", {}, Object.keys(m.feedback || {}).join(", ") || "–"))))));
  }

  async function inspectUser(id) {
    const out = document.getElementById("user-out");
    document.getElementById("user-q").value = id;
    out.replaceChildren(el("p", { class: "muted" }, "Loading…"));
    const enc = encodeURIComponent(id);
    const [profile, session, recs, pushes] = await Promise.all([
      settle(api(`/v1/users/${enc}/profile`)),
      settle(api(`/v1/admin/users/${enc}/session`)),
      settle(api(`/v1/users/${enc}/recommendations?k=10`)),
      settle(optional(`/v1/users/${enc}/push?limit=20`)),
    ]);
    const card = (title, body, testid) => el("section", { class: "panel", "data-testid": testid }, el("h2", {}, title), body);
    let profileBody;
    if (profile.error) profileBody = problem(profile.error);
    else {
      const p = profile.value;
      const b = p.behaviour;
      profileBody = el("div", {},
        el("dl", { class: "kv" },
          el("dt", {}, "segment"), el("dd", {}, p.segment ? p.segment.name : "–"),
          el("dt", {}, "demographics"), el("dd", {}, Object.entries(p.demographics).filter(([, v]) => v !== null).map(([k, v]) => `${k}: ${v}`).join(", ") || "–"),
          el("dt", {}, "personalization"), el("dd", {}, p.personalization ? "allowed" : "declined"),
          b ? [el("dt", {}, "lifecycle"), el("dd", {}, b.activity && b.activity.lifecycle ? b.activity.lifecycle : render(b.activity && b.activity.lifecycle)),
            el("dt", {}, "top categories"), el("dd", {}, b.categories.slice(0, 5).map((a) => `${a.key} (${pct(a.share, 0)})`).join(", ") || "–"),
            el("dt", {}, "top brands"), el("dd", {}, b.brands.slice(0, 5).map((a) => `${a.key} (${pct(a.share, 0)})`).join(", ") || "–"),
            el("dt", {}, "price"), el("dd", {}, `median ${money(b.price.median_price)}, band ${b.price.band || "–"}, discount share ${pct(b.price.discount_share, 0)}`),
            el("dt", {}, "RFM"), el("dd", {}, `recency ${b.rfm.recency_days === null ? "–" : b.rfm.recency_days.toFixed(1)} d, ${b.rfm.frequency} orders, ${money(b.rfm.monetary)}`)] : []),
        el("h3", {}, "Tags"),
        p.tags.length
          ? el("ul", { "data-testid": "tags" }, p.tags.map((t) => el("li", {}, el("span", { class: "tag" }, t.name), " ", el("span", { class: "small muted" }, t.evidence))))
          : el("p", { class: "muted" }, "No tag applies."));
    }
    let sessionBody;
    if (session.error) sessionBody = problem(session.error);
    else {
      const s = session.value;
      sessionBody = el("div", {},
        el("p", { class: "small" }, `cart: ${s.cart.map((c) => c.title || c.item_id).join(", ") || "empty"}`),
        s.events.length
          ? el("div", { class: "table-wrap" }, el("table", {},
              el("thead", {}, el("tr", {}, ["when", "event", "item"].map((h) => el("th", { scope: "col" }, h)))),
              el("tbody", {}, s.events.slice(0, 15).map((e) => el("tr", {}, el("td", {}, when(e.ts)), el("td", {}, e.type), el("td", {}, e.title || e.item_id))))))
          : el("p", { class: "muted" }, "No recent item events."));
    }
    const pushBody = pushes.error ? problem(pushes.error) : pushes.value === null ? na("Push history") : pushHistory(pushes.value);
    out.replaceChildren(el("div", { class: "cols" },
      card("Profile", profileBody, "user-profile"),
      card("Live session", sessionBody, "user-session"),
      card("Current recommendations", recs.error ? problem(recs.error) : recTable(recs.value), "user-recs"),
      card("Push history", pushBody, "user-pushes")));
  }
  document.getElementById("user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = document.getElementById("user-q").value.trim();
    if (id) inspectUser(id);
  });

  // -- item inspector -------------------------------------------------------------------
  /** POST /v1/targeting for an item: who is most likely to respond, and why. */
  function targetTable(t) {
    if (!t || !Array.isArray(t.users)) return render(t);
    const note = el("p", { class: "small muted" }, `${t.eligible} eligible users scored; ${t.excluded_buyers} buyers left out`);
    if (!t.users.length) return el("div", {}, note, el("p", { class: "muted" }, "Nobody to target."));
    return el("div", {}, note, el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ["user", "score", "why", "lifecycle"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, t.users.map((u) => el("tr", {},
        el("td", {}, el("a", { href: "#users", onclick: (e) => { e.preventDefault(); select(document.getElementById("tab-users"), false); inspectUser(u.user_id); } }, u.user_id)),
        el("td", {}, u.score.toFixed(3)), el("td", {}, u.reason), el("td", {}, u.lifecycle || "–")))))));
  }

  async function inspectItem(id) {
    select(document.getElementById("tab-items"), false);
    document.getElementById("item-q").value = id;
    const out = document.getElementById("item-out");
    out.replaceChildren(el("p", { class: "muted" }, "Loading…"));
    const enc = encodeURIComponent(id);
    const [item, features, similar, together, targets] = await Promise.all([
      settle(api(`/v1/items/${enc}`)),
      settle(optional(`/v1/items/${enc}/features`)),
      settle(api(`/v1/items/${enc}/similar?k=8`)),
      settle(api(`/v1/items/${enc}/bought-together?k=8`)),
      settle(api("/v1/targeting", { method: "POST", json: { item_id: id, limit: 10 } })),
    ]);
    const card = (title, res, fn, testid) => el("section", { class: "panel", "data-testid": testid }, el("h2", {}, title),
      res.error ? problem(res.error) : res.value === null ? na(title) : fn(res.value));
    out.replaceChildren(el("div", { class: "cols" },
      card("Item", item, (v) => render({ item_id: v.item_id, title: v.title, category: (v.category || []).join(" > "), brand: v.brand, price: v.price, original_price: v.original_price, stock: v.stock }), "item-record"),
      card("Features", features, (v) => render(v), "item-features"),
      card("Similar items", similar, recTable, "item-similar"),
      card("Bought together", together, recTable, "item-together"),
      card("Targeted users (most likely to respond)", targets, targetTable, "item-targets")));
  }
  document.getElementById("item-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = document.getElementById("item-q").value.trim();
    if (id) inspectItem(id);
  });

  // -- experiments and push -------------------------------------------------------------
  const fmtCi = (ci, asPct) => (Array.isArray(ci) && ci.length === 2 && ci[0] !== null
    ? ` [${asPct ? pct(ci[0], 2) : ci[0].toFixed(4)}, ${asPct ? pct(ci[1], 2) : ci[1].toFixed(4)}]` : "");
  const RATE_METRICS = new Set(["ctr", "conversion", "conversion_rate", "purchase_rate"]);

  /** One experiment's report: variants with 95 % intervals, comparisons with the control. */
  function experimentReport(exp, rep) {
    const head = el("h3", {}, `${exp.experiment_id} `, el("span", { class: "small muted" }, `${exp.status} · metric ${exp.metric}${exp.description ? ` · ${exp.description}` : ""}`));
    if (!rep) return el("div", { class: "experiment" }, head, el("p", { class: "na" }, "report not available"));
    const metrics = [...new Set(rep.variants.flatMap((v) => Object.keys(v.metrics || {})))];
    const variants = el("div", { class: "table-wrap" }, el("table", { "data-testid": "experiment-variants" },
      el("caption", { class: "visually-hidden" }, `Variants of ${exp.experiment_id}`),
      el("thead", {}, el("tr", {}, ["variant", "share", "model", "users", "impressions", "clicks", "purchases", ...metrics.map((m) => `${m} (95% CI)`)].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rep.variants.map((v) => el("tr", {},
        el("th", { scope: "row" }, v.name), el("td", {}, String(v.share)), el("td", {}, v.model_version || "CURRENT"),
        el("td", {}, String(v.users)), el("td", {}, String(v.impressions)), el("td", {}, String(v.clicks)), el("td", {}, String(v.purchases)),
        metrics.map((m) => {
          const e = (v.metrics || {})[m] || {};
          const isRate = RATE_METRICS.has(m);
          const val = e.value === null || e.value === undefined ? "–" : isRate ? pct(e.value, 2) : e.value.toFixed(4);
          return el("td", {}, val, el("span", { class: "small muted" }, fmtCi(e.ci, isRate)));
        }))))));
    const comps = (rep.comparisons || []).length ? el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ["variant vs control", "metric", "difference (CI)", "relative lift (CI)", "p", "significant"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rep.comparisons.map((c) => el("tr", {},
        el("td", {}, `${c.variant} vs ${c.control}`), el("td", {}, c.metric),
        el("td", {}, c.diff === null ? "–" : c.diff.toFixed(4), el("span", { class: "small muted" }, fmtCi(c.ci, false))),
        el("td", {}, c.relative_lift === null ? "–" : pct(c.relative_lift, 1), el("span", { class: "small muted" }, fmtCi(c.lift_ci, true))),
        el("td", {}, c.p_value === null ? "–" : String(c.p_value)),
        el("td", {}, c.significant ? "yes" : "no")))))) : null;
    const srm = rep.sample_ratio_mismatch && rep.sample_ratio_mismatch.detected
      ? el("p", { class: "error" }, `Sample ratio mismatch (p = ${rep.sample_ratio_mismatch.p_value}): the split is broken; do not trust the comparison.`) : null;
    return el("div", { class: "experiment" }, head, srm, variants, comps,
      el("p", { class: "small" }, `winner: ${rep.winner || "none yet"} · α = ${rep.alpha} (corrected ${rep.corrected_alpha})`));
  }

  /** GET /v1/push/metrics: per trigger, what was decided, suppressed (by rule), delivered, and lift. */
  function pushMetrics(p) {
    if (!p || typeof p.triggers !== "object") return render(p);
    const names = Object.keys(p.triggers);
    if (!names.length) return el("p", { class: "muted" }, "No push decision yet.");
    const sum = (chans, k) => Object.values(chans || {}).reduce((a, c) => a + (c[k] || 0), 0);
    const table = el("table", { "data-testid": "push-triggers" },
      el("thead", {}, el("tr", {}, ["trigger", "decisions", "sent", "held out", "deferred", "suppressed (by rule)", "delivered", "opened", "clicked", "purchases", "lift vs holdout (95% CI)"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, names.map((name) => {
        const t = p.triggers[name];
        const sup = t.suppressed || {};
        const supTotal = Object.values(sup).reduce((a, b) => a + b, 0);
        const l = t.lift || {};
        return el("tr", { "data-trigger": name },
          el("th", { scope: "row" }, name), el("td", {}, String(t.decisions)), el("td", {}, String(t.sent || 0)),
          el("td", {}, String(t.holdout || 0)), el("td", {}, String(t.deferred || 0)),
          el("td", {}, String(supTotal), supTotal ? el("span", { class: "small muted" }, ` (${Object.entries(sup).map(([r, n]) => `${r || "other"}: ${n}`).join(", ")})`) : null),
          el("td", {}, String(sum(t.channels, "delivered"))), el("td", {}, String(sum(t.channels, "opened"))),
          el("td", {}, String(sum(t.channels, "clicked"))), el("td", {}, String(sum(t.channels, "purchases"))),
          el("td", {}, l.lift === null || l.lift === undefined ? "–" : `${(l.lift * 100).toFixed(2)} pp`,
            el("span", { class: "small muted" }, l.ci95 ? ` [${(l.ci95[0] * 100).toFixed(2)}, ${(l.ci95[1] * 100).toFixed(2)}] pp` : ""),
            l.relative_lift !== null && l.relative_lift !== undefined ? el("span", { class: "small" }, ` (${pct(l.relative_lift, 0)})`) : null));
      })));
    const totals = p.totals ? el("p", { class: "small" }, Object.entries(p.totals).map(([k, v]) => `${k}: ${v}`).join(" · ")) : null;
    const dead = p.dead_letters ? el("p", { class: "error small" }, `dead letters: ${p.dead_letters}`) : null;
    return el("div", {}, totals, dead, el("div", { class: "table-wrap" }, table));
  }

  async function loadExperiments() {
    const exp = document.getElementById("experiments-out");
    const push = document.getElementById("push-out");
    try {
      const e = await optional("/v1/experiments");
      if (e === null) exp.replaceChildren(na("Experiments (GET /v1/experiments)"));
      else if (!Array.isArray(e.experiments)) exp.replaceChildren(render(e));
      else if (!e.experiments.length) exp.replaceChildren(el("p", { class: "muted" }, "No experiment yet (POST /v1/experiments starts one)."));
      else {
        const reports = await Promise.all(e.experiments.map((x) =>
          optional(`/v1/experiments/${encodeURIComponent(x.experiment_id)}/report`).catch(() => null)));
        exp.replaceChildren(...e.experiments.map((x, i) => experimentReport(x, reports[i])));
      }
    } catch (err) { exp.replaceChildren(problem(err)); }
    try {
      const p = await optional("/v1/push/metrics");
      push.replaceChildren(p === null ? na("Push metrics (GET /v1/push/metrics)") : pushMetrics(p));
    } catch (err) { push.replaceChildren(problem(err)); }
  }
  loaders.experiments = () => { loadExperiments(); timers.experiments = setInterval(loadExperiments, 10000); };

  // -- jobs -----------------------------------------------------------------------------
  function jobRow(j) {
    return el("div", { class: "job", "data-job-id": j.job_id, "data-status": j.status },
      el("div", { class: "head" },
        el("strong", {}, j.kind), el("span", { class: `st-${j.status}` }, j.status),
        el("span", { class: "small muted" }, `${j.stage}${j.seconds !== null ? ` · ${j.seconds.toFixed(1)} s` : ""}`),
        el("span", { class: "small muted" }, JSON.stringify(j.params))),
      el("progress", { max: "1", value: String(j.progress), "aria-label": `${j.kind} progress` }, pct(j.progress, 0)),
      j.error ? el("p", { class: "error small" }, j.error) : null,
      j.status === "done" && j.result ? el("details", {}, el("summary", {}, "result"), render(j.result)) : null);
  }
  async function loadJobs() {
    const out = document.getElementById("jobs-out");
    try {
      const r = await api("/v1/jobs");
      out.replaceChildren(r.jobs.length ? el("div", {}, r.jobs.map(jobRow)) : el("p", { class: "muted" }, "No job started in this server process yet."));
      const busy = r.jobs.some((j) => j.status === "running" || j.status === "queued");
      if (busy && !timers.jobs) timers.jobs = setInterval(loadJobs, 700);
      if (!busy && timers.jobs) { clearInterval(timers.jobs); delete timers.jobs; }
    } catch (err) { out.replaceChildren(problem(err)); }
  }
  document.getElementById("job-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const [kind, arg] = document.getElementById("job-kind").value.split(":");
    const params = kind === "import" ? { source: arg } : kind === "evaluate" ? { benchmark: arg, quick: true } : {};
    try {
      const j = await api("/v1/jobs", { method: "POST", json: { kind, params } });
      say(`started ${j.kind} job ${j.job_id}`);
    } catch (err) { say(`could not start the job: ${err.message}`, true); }
    loadJobs();
  });
  loaders.jobs = loadJobs;

  // -- API key --------------------------------------------------------------------------
  document.getElementById("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = document.getElementById("api-key");
    Shopcast.setApiKey(input.value.trim());
    input.value = "";
    say(Shopcast.apiKey() ? "using the API key for this tab" : "no API key (works when auth is off)");
    const current = tabs.find((t) => t.getAttribute("aria-selected") === "true");
    select(current, false);
  });

  // -- start: the tab named in the URL, and ?user= / ?item= deep links -------------------
  const params = new URLSearchParams(location.search);
  const start = tabs.find((t) => `#${t.getAttribute("aria-controls")}` === location.hash) || tabs[0];
  select(start, false);
  if (params.get("user")) { select(document.getElementById("tab-users"), false); inspectUser(params.get("user")); }
  if (params.get("item")) inspectItem(params.get("item"));
})();
