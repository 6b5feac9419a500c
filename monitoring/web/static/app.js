// The LSQ monitor page: fetches each panel's JSON from /api/..., re-renders the panels an SSE `change` event names.
"use strict";

const state = { accounts: [], selected: null, charts: {} };
const $ = (sel, root = document) => root.querySelector(sel);

async function api(path, options) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function fmt(value, digits = 2) {
  if (value === null || value === undefined || value === "") return "–";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  return n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
const pct = (v, digits = 2) => (v === null || v === undefined ? "–" : `${fmt(100 * v, digits)} %`);
const when = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "never");
function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  return s < 120 ? `${s.toFixed(0)} s ago` : s < 7200 ? `${(s / 60).toFixed(0)} min ago` : when(ms);
}
const bytes = (n) => `${(n / 2 ** 30).toFixed(1)} GiB`;

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}
const num = (text, signed) => cell(text, "num" + (signed === undefined ? "" : signed < 0 ? " neg" : signed > 0 ? " pos" : ""));

function fillTable(table, rows, toCells, empty) {
  const body = $("tbody", table);
  body.replaceChildren();
  for (const row of rows) {
    const tr = document.createElement("tr");
    tr.append(...toCells(row));
    body.append(tr);
  }
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(empty, "muted");
    td.colSpan = $("thead tr", table).children.length;
    tr.append(td);
    body.append(tr);
  }
}

// --- panels ------------------------------------------------------------------------------------------------

async function loadStatus() {
  const s = await api("/api/status");
  const panel = $("#panel-status");
  fillTable(panel, s.parts, (p) => [
    cell(p.name), cell(p.state, `state-${p.state.split(" ")[0]}`), cell(p.pid ?? "–"), cell(when(p.started_at)),
    cell(p.heartbeat_ms ? ago(p.heartbeat_ms) : "–"), cell(p.detail || "", "muted"),
  ], "nothing started: run `make run` (or `lsq run`)");
  const sup = s.supervisor;
  const pipe = s.pipeline;
  const targets = Object.entries(pipe.last_targets_ms).map(([a, t]) => `${a} ${t ? ago(t) : "none"}`).join(", ");
  $(".note", panel).textContent = (sup.pid
    ? `lsq run pid ${sup.pid} ${sup.running ? "running" : "not running"} since ${when(sup.started_at)}`
    : "no lsq run state (data/run/state.json)") +
    ` · last sealed window ended ${pipe.marker.window_end_ms ? ago(pipe.marker.window_end_ms) : "never"}` +
    ` · last targets: ${targets || "none"}`;
}

async function loadSystem() {
  const s = await api("/api/system");
  const dl = $("#panel-system dl");
  dl.replaceChildren();
  const items = [
    ["CPU", `${fmt(s.cpu_percent, 0)} % of ${s.cpu_count} cores`],
    ["load", s.load_average.map((v) => v.toFixed(2)).join(" ")],
    ["memory", `${bytes(s.memory.used)} / ${bytes(s.memory.total)} (${fmt(s.memory.percent, 0)} %)`],
    ["disk", `${bytes(s.disk.used)} / ${bytes(s.disk.total)} (${fmt(s.disk.percent, 0)} %), ${bytes(s.disk.free)} free`],
    ["data dir", s.disk.path],
  ];
  for (const [k, v] of items) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dd.style.margin = "0";
    dl.append(dt, dd);
  }
}

async function loadAlerts() {
  const a = await api("/api/alerts");
  const panel = $("#panel-alerts");
  const list = $("ul.active", panel);
  list.replaceChildren();
  for (const item of a.active) {
    const li = document.createElement("li");
    li.className = `sev-${item.severity}`;
    li.textContent = `${item.severity} ${item.message}`;
    list.append(li);
  }
  if (!a.active.length) list.append(Object.assign(document.createElement("li"), { textContent: "all clear", className: "state-running" }));
  fillTable($("table", panel), a.log, (e) => [
    cell(when(e.time_ms)), cell(e.severity, `sev-${e.severity}`), cell(e.account || e.key),
    cell(`${e.title}: ${e.text}`),
  ], "no alerts recorded");
}

const MODE_TEXT = { active: "active", halted: "HALTED", reduce_only: "REDUCE-ONLY" };

async function loadAccounts() {
  state.accounts = await api("/api/accounts");
  fillTable($("#panel-accounts"), state.accounts, (a) => [
    cell(a.account_id), num(fmt(a.equity)), num(fmt(a.available_balance)), num(pct(a.margin_ratio)),
    num(fmt(a.today_pnl), a.today_pnl), cell(a.snapshot_ms ? ago(a.snapshot_ms) : "no snapshot yet"),
    cell(MODE_TEXT[a.halt.mode], `mode-${a.halt.mode}`),
  ], "no accounts configured");
  if (!state.selected && state.accounts.length) state.selected = state.accounts[0].account_id;
  renderTabs();
  renderKillSwitch();
}

function renderTabs() {
  const nav = $("#account-tabs");
  nav.replaceChildren();
  for (const a of state.accounts) {
    const b = document.createElement("button");
    b.textContent = a.account_id;
    b.dataset.account = a.account_id;
    if (a.account_id === state.selected) b.className = "selected";
    b.onclick = () => { state.selected = a.account_id; renderTabs(); loadAccountDetail(); };
    nav.append(b);
  }
}

function renderKillSwitch() {
  const a = state.accounts.find((x) => x.account_id === state.selected);
  const panel = $("#panel-killswitch");
  if (!a) return;
  $(".account-name", panel).textContent = a.account_id;
  const mode = $(".halt-mode", panel);
  mode.textContent = MODE_TEXT[a.halt.mode];
  mode.className = `halt-mode mode-${a.halt.mode}`;
  $(".halt-since", panel).textContent = a.halt.since_ms ? `since ${when(a.halt.since_ms)} (${a.halt.reason})` : "";
}

async function loadPositions() {
  if (!state.selected) return;
  const p = await api(`/api/accounts/${state.selected}/positions`);
  const panel = $("#panel-positions");
  const x = p.exposure || {};
  $(".exposure", panel).textContent = p.exposure
    ? `exposure at mark: gross ${fmt(x.gross)} · net ${fmt(x.net)} · long ${fmt(x.long)} · short ${fmt(x.short)} · ` +
      `${x.positions} positions, largest ${x.largest_symbol ?? "–"} ${pct(x.largest_share)} of gross · ` +
      `leverage ${x.leverage === null ? "–" : fmt(x.leverage) + "×"}`
    : "no snapshot yet";
  const d = p.deviation || {};
  $(".summary", panel).textContent =
    (p.deviation
      ? `deviation ${fmt(d.deviation_notional)} USDT = ${pct(d.share)} of target gross ${fmt(d.target_gross_notional)}` +
        `, largest ${d.largest_symbol ?? "–"} ${fmt(d.largest_deviation_notional)} · `
      : "no targets · ") +
    `snapshot ${p.snapshot_ms ? when(p.snapshot_ms) : "none"} · targets ${p.targets_ms ? when(p.targets_ms) : "none"}`;
  fillTable(panel, p.rows, (r) => [
    cell(r.symbol), num(fmt(r.current, 4), r.current), num(fmt(r.target, 4), r.target), num(fmt(r.price, 4)),
    num(fmt(r.current_notional)), num(fmt(r.target_notional)), num(fmt(r.deviation_notional)),
    num(pct(r.share_of_target_gross)), num(fmt(r.unrealized_pnl), r.unrealized_pnl),
  ], "no positions and no targets");
}

async function loadOrders() {
  if (!state.selected) return;
  const [orders, fills] = await Promise.all([
    api(`/api/accounts/${state.selected}/orders?limit=50`), api(`/api/accounts/${state.selected}/fills?limit=50`),
  ]);
  fillTable($("#panel-orders"), orders, (o) => [
    cell(when(o.time_ms)), cell(o.symbol), cell(o.side), cell(o.order_type), cell(o.status), num(o.price),
    num(o.orig_qty), num(o.filled_qty), cell(o.client_order_id, "muted"),
  ], "no orders");
  fillTable($("#panel-fills"), fills, (f) => [
    cell(when(f.time_ms)), cell(f.symbol), cell(f.side), num(f.price), num(f.qty), num(f.commission),
    num(f.realized_pnl, Number(f.realized_pnl)),
  ], "no fills");
}

async function loadExecutions() {
  if (!state.selected) return;
  const x = await api(`/api/accounts/${state.selected}/executions`);
  const panel = $("#panel-executions");
  fillTable($("table.runs", panel), x.runs, (r) => [
    cell(r.run_id, "muted"), cell(when(r.window_ms)), cell(r.algorithm), cell(r.dry_run ? "yes" : "no"),
    cell(when(r.started_ms)), cell(r.finished_ms ? when(r.finished_ms) : "–"), cell(r.status, `state-${r.status === "completed" ? "running" : r.status === "running" ? "stopped" : "dead"}`),
  ], "no executor runs yet");
  fillTable($("table.children", panel), x.orders, (c) => [
    cell(when(c.updated_ms)), cell(c.symbol), cell(c.leg), cell(c.side), cell(c.type), num(c.qty), num(c.price ?? "–"),
    cell(c.reduce_only ? "yes" : ""), cell(c.status), num(c.executed_qty), num(c.avg_price), cell(c.client_id, "muted"),
    cell(c.error || "", "neg"),
  ], "no orders placed by the executor in the last day");
}

function chart(key, el, title, times, values, color, unit = "") {
  const data = [times.map((t) => t / 1000), values];
  const width = Math.max(300, el.clientWidth || 500);
  if (state.charts[key]) {
    state.charts[key].setData(data);
    return;
  }
  el.replaceChildren();
  const opts = {
    width, height: 220, legend: { show: false },
    axes: [
      { stroke: "#8796a8", grid: { stroke: "#2a3542" } },
      { stroke: "#8796a8", grid: { stroke: "#2a3542" }, size: 70, values: (u, ticks) => ticks.map((v) => fmt(v, unit ? 2 : 0) + unit) },
    ],
    series: [{}, { label: title, stroke: color, width: 1.5, fill: color + "22" }],
  };
  state.charts[key] = new uPlot(opts, data, el);
}

async function loadEquity() {
  if (!state.selected) return;
  const days = $("#equity-range").value;
  const since = days ? `?start=${Date.now() - days * 86400000}` : "";
  const e = await api(`/api/accounts/${state.selected}/equity${since}`);
  chart("equity", $("#panel-equity .chart"), "equity", e.time_ms, e.equity, "#58a6ff");
  chart("drawdown", $("#panel-drawdown .chart"), "drawdown", e.time_ms, e.drawdown.map((d) => 100 * d), "#f85149", " %");
  const s = e.summary;
  $("#panel-equity .summary").textContent = s.samples
    ? `${s.samples} minutes · return ${pct(s.cum_return)} · PnL ${fmt(s.pnl)} (transfers ${fmt(s.transfers)} excluded) · ` +
      `max drawdown ${pct(s.max_drawdown)} · Sharpe ${s.sharpe === null ? "–" : fmt(s.sharpe)}`
    : "no equity curve yet";
}

async function loadReport() {
  if (!state.selected) return;
  const day = $("#report-day").value;
  const query = day ? `?day=${day}` : "";
  const base = `/api/accounts/${state.selected}/report${query}`;
  $("#report-json").href = base;
  $("#report-csv").href = base + (query ? "&" : "?") + "format=csv";
  const r = await api(base);
  const t = r.totals;
  const bps = (v) => (v === null || v === undefined ? "–" : `${fmt(v, 1)} bps`);
  $("#panel-report .summary").textContent =
    `${when(r.start_ms)} – ${when(r.end_ms)} · ${t.fills} fills · turnover ${fmt(t.turnover)} · fees ${fmt(t.fees)} · ` +
    `funding +${fmt(t.funding_received)} / −${fmt(t.funding_paid)} · price ${fmt(t.price_pnl)} · total ${fmt(t.total_pnl)} · ` +
    `shortfall ${fmt(t.shortfall_decision)} (${bps(t.shortfall_decision_bps)}) vs decision, ` +
    `${fmt(t.shortfall_arrival)} (${bps(t.shortfall_arrival_bps)}) vs arrival · tracking error ${pct(t.tracking_error)}`;
  const panel = $("#panel-report");
  fillTable($("table.by-symbol", panel), r.by_symbol, (s) => [
    cell(s.symbol), num(s.fills), num(fmt(s.turnover)), num(fmt(s.fees)), num(fmt(s.funding_received, 4)),
    num(fmt(s.funding_paid, 4)), num(fmt(s.realized_pnl), Number(s.realized_pnl)), num(fmt(s.price_pnl), Number(s.price_pnl)),
    num(fmt(s.total_pnl), Number(s.total_pnl)),
  ], "no trading in this range");
  fillTable($("table.windows", panel), r.windows, (w) => [
    cell(when(w.window_ms)), cell(w.symbol), num(w.fills), num(fmt(w.filled_notional)), num(fmt(w.decision_price, 4)),
    num(fmt(w.arrival_price, 4)), num(fmt(w.shortfall_decision), -w.shortfall_decision), num(bps(w.shortfall_decision_bps)),
    num(fmt(w.shortfall_arrival), -w.shortfall_arrival), num(bps(w.shortfall_arrival_bps)),
  ], "no fills against a target file in this range");
}

function loadAccountDetail() {
  for (const key of Object.keys(state.charts)) { state.charts[key].destroy(); delete state.charts[key]; }
  renderKillSwitch();
  return Promise.all([loadPositions(), loadOrders(), loadExecutions(), loadEquity(), loadReport()]);
}

// --- kill switch with confirmation ---------------------------------------------------------------------------

function confirmDialog(question) {
  const modal = $("#confirm");
  $(".question", modal).textContent = question;
  modal.hidden = false;
  return new Promise((resolve) => {
    const done = (answer) => { modal.hidden = true; resolve(answer); };
    $("#confirm-yes").onclick = () => done(true);
    $("#confirm-no").onclick = () => done(false);
  });
}

const MODE_QUESTION = {
  halted: (a) => `Halt ${a}? Its open orders are cancelled and nothing more is sent until you resume.`,
  reduce_only: (a) => `Set ${a} to reduce-only? Only orders that reduce positions go through.`,
  active: (a) => `Resume ${a}? The executor trades to the targets again.`,
};

for (const button of document.querySelectorAll("#panel-killswitch button")) {
  button.onclick = async () => {
    const account = state.selected;
    const mode = button.dataset.mode;
    if (!account || !(await confirmDialog(MODE_QUESTION[mode](account)))) return;
    const result = await api(`/api/accounts/${account}/halt`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ mode }),
    });
    const outcome = $("#panel-killswitch .outcome");
    outcome.textContent = result.cancel_error
      ? `switch set; cancelling resting orders failed: ${result.cancel_error}`
      : result.cancelled !== undefined ? `cancelled ${result.cancelled} of our open orders` : "";
    outcome.className = `outcome ${result.cancel_error ? "neg" : "muted"}`;
    await Promise.all([loadAccounts(), loadAlerts()]);
  };
}

// --- live updates --------------------------------------------------------------------------------------------

function guarded(fn) {
  return fn().catch((err) => console.error(err));
}

function onChange(panels) {
  const jobs = new Set();
  for (const name of panels) {
    const [kind, account] = name.split(":");
    if (kind === "status") { jobs.add(loadStatus); jobs.add(loadAlerts); }
    else if (kind === "system") { jobs.add(loadSystem); jobs.add(loadStatus); }  // heartbeat ages move on
    else if (kind === "alerts") jobs.add(loadAlerts);
    else if (kind === "account") {
      jobs.add(loadAccounts);
      if (account === state.selected) { jobs.add(loadEquity); jobs.add(loadReport); }
    } else if (kind === "positions" && account === state.selected) jobs.add(loadPositions);
    else if (kind === "orders" && account === state.selected) {
      jobs.add(loadOrders); jobs.add(loadExecutions); jobs.add(loadReport);
    }
  }
  for (const job of jobs) guarded(job);
  $("#updated").textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC`;
}

function subscribe() {
  const events = new EventSource("/api/events");
  const live = $("#live");
  events.addEventListener("hello", () => { live.textContent = "live"; live.className = "badge on"; });
  events.addEventListener("change", (e) => onChange(JSON.parse(e.data).panels));
  events.onerror = () => { live.textContent = "reconnecting"; live.className = "badge off"; };
}

$("#report-day").onchange = () => guarded(loadReport);
$("#equity-range").onchange = () => guarded(loadEquity);

(async function start() {
  await Promise.all([guarded(loadStatus), guarded(loadSystem), guarded(loadAlerts), guarded(loadAccounts)]);
  await guarded(loadAccountDetail);
  subscribe();
  document.body.dataset.ready = "1";
})();
