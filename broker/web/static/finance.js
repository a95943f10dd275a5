// The finance page: savings from the ledger as charts (SVG drawn here, no external code),
// both sides of a recognition (the ordering hospital's savings, and the savings a
// hospital's results enabled elsewhere), hospital and item names, declines by reason in
// Chinese, reversals and flags, the medical-insurance fund's and the patient's shares where
// the catalog gives a reimbursement ratio, CSV and Excel (.xlsx) downloads, and the
// regulator's monthly report.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const CATEGORY_NAMES = {
  LAB: "检验 Lab", CT: "CT", MR: "磁共振 MR", DR: "X线 DR", US: "超声 US", OTHER: "其他 Other",
};
const ref = { hospitals: {}, items: {}, reasons: {} };  // id/code -> display

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== null) node.textContent = text;
  return node;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined && v !== false) node.setAttribute(k, String(v));
  }
  node.append(...children.map((c) => (c instanceof Node ? c : document.createTextNode(c))));
  return node;
}

const hospitalName = (id) => (ref.hospitals[id] ? ref.hospitals[id].name : id);
const itemName = (code) => (ref.items[code] ? `${ref.items[code]} ${code}` : code);
const reasonName = (code) => ref.reasons[code] || code;
const yuan = (r) => `¥${r.amount}`;
const NOT_GIVEN = "未给出 / not given";
// A share the catalog gave no ratio for is null: say so, never show ¥0.00.
const share = (amount) => (amount === null || amount === undefined ? NOT_GIVEN : `¥${amount}`);

function nothing(container) {
  container.replaceChildren(document.createTextNode("暂无数据 No data"));
}

// One horizontal bar per row; `value` may be negative (net after reversals).
function barChart(container, rows, format, title) {
  container.replaceChildren();
  if (rows.length === 0) return nothing(container);
  const width = 860, label = 260, row = 24;
  const max = Math.max(...rows.map((r) => Math.abs(r.value)), 1);
  const chart = svg("svg", {
    width, height: rows.length * row + 4, role: "img",
    "aria-label": `${title}: ${rows.map((r) => `${r.label} ${format(r)}`).join("; ")}`,
  });
  rows.forEach((r, i) => {
    const y = i * row + 2;
    const length = Math.round((Math.abs(r.value) / max) * (width - label - 120));
    chart.append(
      svg("text", { x: 0, y: y + 15, class: "label" }, r.label),
      svg("rect", {
        x: label, y, width: Math.max(length, 1), height: row - 6,
        class: r.value < 0 ? "bar negative" : "bar", "data-key": r.key,
      }),
      svg("text", { x: label + length + 6, y: y + 15, class: "value" }, format(r)),
    );
  });
  container.append(chart);
}

// Months from the first to the last with entries, the missing ones as zero: a time axis.
function monthRange(groups) {
  const keys = groups.map((g) => g.key).filter((k) => /^\d{4}-\d{2}$/.test(k)).sort();
  if (keys.length === 0) return [];
  const out = [];
  let [y, m] = keys[0].split("-").map(Number);
  const last = keys[keys.length - 1];
  for (let guard = 0; guard < 240; guard += 1) {
    const key = `${y}-${String(m).padStart(2, "0")}`;
    out.push(key);
    if (key >= last) break;
    m += 1;
    if (m > 12) { m = 1; y += 1; }
  }
  return out;
}

// Savings over time: one column per month (net, negative below the axis).
function columnChart(container, groups) {
  container.replaceChildren();
  const byKey = Object.fromEntries(groups.map((g) => [g.key, g]));
  const months = monthRange(groups);
  if (months.length === 0) return nothing(container);
  const values = months.map((k) => Number(byKey[k] ? byKey[k].net_saved : 0));
  const col = Math.max(28, Math.min(64, Math.floor(800 / months.length)));
  const width = 60 + months.length * col, top = 24, plot = 180;
  const max = Math.max(...values.map(Math.abs), 1);
  const hasNegative = values.some((v) => v < 0);
  const zero = top + (hasNegative ? plot / 2 : plot);
  const scale = (hasNegative ? plot / 2 : plot) / max;
  const chart = svg("svg", {
    width, height: zero + (hasNegative ? plot / 2 : 0) + 40, role: "img",
    "aria-label": `按月净节省 Net saved by month: ${months.map((k, i) => `${k} ¥${values[i].toFixed(2)}`).join("; ")}`,
  });
  chart.append(svg("line", { x1: 50, x2: width, y1: zero, y2: zero, class: "axis" }));
  months.forEach((k, i) => {
    const v = values[i], x = 56 + i * col, h = Math.max(Math.round(Math.abs(v) * scale), 1);
    const y = v < 0 ? zero : zero - h;
    chart.append(
      svg("rect", { x, y, width: col - 8, height: h, class: v < 0 ? "bar negative" : "bar",
        "data-key": k }),
      svg("text", { x: x + (col - 8) / 2, y: v < 0 ? y + h + 12 : y - 4, class: "value",
        "text-anchor": "middle" }, `¥${v.toFixed(0)}`),
      svg("text", { x: x + (col - 8) / 2, y: zero + (hasNegative ? plot / 2 : 0) + 16,
        class: "label", "text-anchor": "middle" }, k.slice(2)),
    );
  });
  container.append(chart);
}

function filters() {
  const params = new URLSearchParams();
  for (const id of ["from", "to", "hospital"]) {
    const value = document.getElementById(id).value;
    if (value) params.set(id, value);
  }
  return params;
}

function savingsPath(groupBy, extra = {}) {
  const params = filters();
  params.set("group_by", groupBy);
  for (const [k, v] of Object.entries(extra)) params.set(k, v);
  return `/api/v1/savings?${params}`;
}

const netRows = (groups, label) =>
  groups.map((g) => ({ key: g.key, label: label(g.key), value: Number(g.net_saved),
    amount: g.net_saved }));

function totalsText(t) {
  return `合计 Total: ${t.recognitions} 次互认 recognitions · 节省 saved ¥${t.saved} · ` +
    `冲销 reversed ¥${t.reversed} (${t.reversals}) · 标记 flagged ${t.flagged} · ` +
    `净 net ¥${t.net_saved} · 基金支付 fund ${share(t.fund_share)} · ` +
    `个人自付 patient ${share(t.patient_share)} · 不予互认 declined ${t.declined}`;
}

async function loadReference() {
  const [hospitals, catalog, reasons] = await Promise.all([
    api("/api/v1/admin/hospitals"),
    api("/api/v1/admin/catalog"),
    api("/api/v1/recognition/decline-reasons?include_unknown=true"),
  ]);
  ref.hospitals = Object.fromEntries(hospitals.map((h) => [h.id, h]));
  ref.items = Object.fromEntries(catalog.items.map((i) => [i.code, i.name.zh]));
  ref.reasons = Object.fromEntries(reasons.map((r) => [r.code, r.display.zh]));
  const select = document.getElementById("hospital");
  const own = session.claims.hospital;
  const listed = own ? hospitals.filter((h) => h.id === own) : hospitals;
  select.replaceChildren(
    ...(own ? [] : [el("option", { value: "" }, "全部医院 All hospitals")]),
    ...listed.map((h) => el("option", { value: h.id }, `${h.name} (${h.id})`)),
  );
  if (own) select.disabled = true;  // a hospital's finance sees its own hospital only
}

async function load(event) {
  if (event) event.preventDefault();
  const error = document.getElementById("error");
  error.textContent = "";
  try {
    const scoped = Boolean(document.getElementById("hospital").value);
    const [months, hospitals, sources, items, categories, source, benefit] = await Promise.all([
      api(savingsPath("month")),
      api(savingsPath("hospital")),
      api(savingsPath("source")),
      api(savingsPath("item")),
      api(savingsPath("category")),
      scoped ? api(savingsPath("month", { side: "source" })) : null,
      scoped ? api(savingsPath("hospital", { side: "source" })) : null,
    ]);
    document.getElementById("totals").textContent = totalsText(months.totals);
    const benefitChart = document.getElementById("by-benefit");
    if (scoped) {
      const t = source.totals;
      document.getElementById("source-totals").textContent =
        `${hospitalName(source.hospital)} 的结果在他院被互认 ${t.recognitions} 次，` +
        `为他院节省 ¥${t.saved}，冲销 ¥${t.reversed}，净 ¥${t.net_saved} · ` +
        `Its results were recognised ${t.recognitions} times elsewhere, ` +
        `saving others net ¥${t.net_saved}`;
      barChart(benefitChart, netRows(benefit.groups, hospitalName), yuan,
        "受益医院 Hospitals that recognised its results");
    } else {
      document.getElementById("source-totals").textContent =
        "选择一家医院查看其结果在他院带来的节省；全平台见下方“按结果来源医院”。" +
        " Choose a hospital to see what its results saved elsewhere; platform-wide, see" +
        " “by source hospital” below.";
      benefitChart.replaceChildren();
    }
    columnChart(document.getElementById("by-month"), months.groups);
    barChart(document.getElementById("by-hospital"), netRows(hospitals.groups, hospitalName),
      yuan, "按开单医院 By ordering hospital");
    barChart(document.getElementById("by-source"), netRows(sources.groups, hospitalName),
      yuan, "按结果来源医院 By source hospital");
    barChart(document.getElementById("by-category"),
      netRows(categories.groups, (k) => CATEGORY_NAMES[k] || k), yuan, "按类别 By category");
    const topItems = netRows(items.groups, itemName)
      .sort((a, b) => b.value - a.value).slice(0, 15);
    barChart(document.getElementById("by-item"), topItems, yuan, "按项目 By item");
    const reasons = Object.entries(months.totals.declines_by_reason)
      .map(([key, n]) => ({ key, label: reasonName(key), value: n, amount: String(n) }))
      .sort((a, b) => b.value - a.value);
    barChart(document.getElementById("by-reason"), reasons, (r) => `${r.value} 次`,
      "不予互认理由 Declines by reason");
    adjustments(hospitals.groups);
    downloadLinks();
  } catch (e) {
    error.textContent = e.message;
  }
}

function adjustments(groups) {
  const body = document.querySelector("#adjustments tbody");
  body.replaceChildren(...groups.map((g) => el("tr", { "data-key": g.key },
    el("th", { scope: "row" }, hospitalName(g.key)),
    el("td", {}, String(g.recognitions)), el("td", {}, `¥${g.saved}`),
    el("td", {}, String(g.reversals)), el("td", {}, `¥${g.reversed}`),
    el("td", {}, String(g.flagged)), el("td", {}, `¥${g.net_saved}`),
    el("td", { class: "fund" }, share(g.fund_share)),
    el("td", { class: "patient" }, share(g.patient_share)),
    el("td", {}, String(g.declined)),
  )));
  if (groups.length === 0) {
    body.append(el("tr", {}, el("td", { colspan: 10 }, "暂无数据 No data")));
  }
}

// The API's CSV, saved with a UTF-8 byte-order mark so Excel reads Chinese correctly, or
// its .xlsx workbook as it comes (made on the server). The link's href is the real API
// address (it works without this script, too).
async function download(event) {
  event.preventDefault();
  const link = event.currentTarget;
  const response = await call(link.getAttribute("href"));
  if (!response.ok) throw new Error(await problemText(response));
  const blob = link.dataset.file.endsWith(".xlsx")
    ? await response.blob()
    : new Blob(["\ufeff", await response.text()], { type: "text/csv;charset=utf-8" });
  const save = el("a", { href: URL.createObjectURL(blob), download: link.dataset.file });
  document.body.append(save);
  save.click();
  save.remove();
  setTimeout(() => URL.revokeObjectURL(save.href), 10000);
}

function csvLink(href, file, text) {
  const link = el("a", { href, class: file.endsWith(".xlsx") ? "xlsx" : "csv", "data-file": file },
    text);
  link.addEventListener("click", (e) => download(e).catch((err) => {
    document.getElementById("error").textContent = err.message;
  }));
  return link;
}

function downloadLinks() {
  const scope = document.getElementById("hospital").value || "all";
  const groups = [
    ["month", "按月 by month"], ["hospital", "按开单医院 by ordering hospital"],
    ["source", "按结果来源医院 by source hospital"], ["item", "按项目 by item"],
    ["category", "按类别 by category"],
  ];
  const links = groups.map(([g, text]) => el("li", {},
    csvLink(savingsPath(g, { format: "csv" }), `savings-${scope}-by-${g}.csv`, `CSV ${text}`),
    " · ",
    csvLink(savingsPath(g, { format: "xlsx" }), `savings-${scope}-by-${g}.xlsx`,
      `Excel ${text}`)));
  if (document.getElementById("hospital").value) {
    const text = "为他院节省 savings enabled elsewhere";
    links.push(el("li", {},
      csvLink(savingsPath("hospital", { side: "source", format: "csv" }),
        `savings-${scope}-enabled-elsewhere.csv`, `CSV ${text}`),
      " · ",
      csvLink(savingsPath("hospital", { side: "source", format: "xlsx" }),
        `savings-${scope}-enabled-elsewhere.xlsx`, `Excel ${text}`)));
  }
  document.getElementById("csv-links").replaceChildren(...links);
}

// -- the regulator's monthly report (platform-finance) ----------------------------------

function thisMonth() {
  const today = new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Shanghai" })
    .format(new Date());
  return today.slice(0, 7);
}

function regulatorPath(month, format) {
  const params = new URLSearchParams({ month });
  if (format) params.set("format", format);
  return `/api/v1/reports/regulator?${params}`;
}

async function loadRegulator(event) {
  if (event) event.preventDefault();
  const month = document.getElementById("regulator-month").value;
  const error = document.getElementById("regulator-error");
  error.textContent = "";
  for (const format of ["csv", "xlsx"]) {
    const link = document.getElementById(`regulator-${format}`);
    link.setAttribute("href", regulatorPath(month, format));
    link.dataset.file = `regulator-${month}.${format}`;
  }
  try {
    const report = await api(regulatorPath(month, null));
    const t = report.totals;
    document.getElementById("regulator-totals").textContent =
      `${report.month}：查询 lookups ${t.lookups} · 可互认 recognisable ${t.recognizable} · ` +
      totalsText(t);
    document.querySelector("#regulator-hospitals tbody").replaceChildren(
      ...report.hospitals.map((h) => el("tr", { "data-key": h.hospital },
        el("th", { scope: "row" }, `${h.name} (${h.hospital})`),
        el("td", {}, `${h.level}级${h.grade || ""}`),
        el("td", {}, String(h.eqa_certifications)), el("td", {}, String(h.lookups)),
        el("td", {}, String(h.cross_hospital_lookups)), el("td", {}, String(h.recognizable)),
        el("td", {}, String(h.recognitions)), el("td", {}, `¥${h.net_saved}`),
        el("td", { class: "fund" }, share(h.fund_share)),
        el("td", { class: "patient" }, share(h.patient_share)),
        el("td", {}, String(h.reversals)), el("td", {}, String(h.declined)),
        el("td", { class: "enabled" }, `¥${h.enabled_elsewhere.net_saved_for_others}` +
          ` (${h.enabled_elsewhere.its_results_recognised} 次)`),
      )));
    document.querySelector("#regulator-categories tbody").replaceChildren(
      ...report.categories.map((c) => el("tr", { "data-key": c.category },
        el("th", { scope: "row" }, CATEGORY_NAMES[c.category] || c.category),
        el("td", {}, String(c.lookups)), el("td", {}, String(c.recognizable)),
        el("td", {}, String(c.recognitions)), el("td", {}, `¥${c.net_saved}`),
        el("td", { class: "fund" }, share(c.fund_share)),
        el("td", { class: "patient" }, share(c.patient_share)),
        el("td", {}, String(c.declined)),
      )));
  } catch (e) {
    error.textContent = e.message;
  }
}

async function ready(info) {
  try {
    await loadReference();
  } catch (e) {
    document.getElementById("error").textContent = e.message;
    return;
  }
  const regulator = document.getElementById("regulator");
  regulator.hidden = info.role !== "platform-finance";  // the API's 403 is the real guard
  await load();
  if (!regulator.hidden) {
    document.getElementById("regulator-month").value = thisMonth();
    await loadRegulator();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("range").addEventListener("submit", load);
  document.getElementById("regulator-form").addEventListener("submit", loadRegulator);
  for (const id of ["regulator-csv", "regulator-xlsx"]) {
    document.getElementById(id).addEventListener("click", (e) =>
      download(e).catch((err) => {
        document.getElementById("regulator-error").textContent = err.message;
      }));
  }
  startSession(ready);
});
