// The finance page: savings from the ledger as bar charts (SVG, no external code).
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== null) node.textContent = text;
  return node;
}

// One horizontal bar per row; `value` may be negative (net after reversals).
function barChart(container, rows, format) {
  container.replaceChildren();
  if (rows.length === 0) {
    container.append(document.createTextNode("暂无数据 No data"));
    return;
  }
  const width = 860, label = 220, row = 24;
  const max = Math.max(...rows.map((r) => Math.abs(r.value)), 1);
  const chart = svg("svg", { width, height: rows.length * row + 4, role: "img" });
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

const yuan = (r) => `¥${r.amount}`;

function query(groupBy) {
  const params = new URLSearchParams({ group_by: groupBy });
  const from = document.getElementById("from").value;
  const to = document.getElementById("to").value;
  if (from) params.set("from", from);
  if (to) params.set("to", to);
  return params;
}

async function load(event) {
  if (event) event.preventDefault();
  const error = document.getElementById("error");
  error.textContent = "";
  try {
    const [months, hospitals, items, catalog] = await Promise.all([
      api(`/api/v1/savings?${query("month")}`),
      api(`/api/v1/savings?${query("hospital")}`),
      api(`/api/v1/savings?${query("item")}`),
      api("/api/v1/admin/catalog"),
    ]);
    const names = Object.fromEntries(catalog.items.map((i) => [i.code, i.name.zh]));
    const net = (g, label) => ({
      key: g.key, label, value: Number(g.net_saved), amount: g.net_saved, g,
    });
    const t = months.totals;
    document.getElementById("totals").textContent =
      `合计 Total: ${t.recognitions} 次互认 recognitions · 节省 saved ¥${t.saved} · ` +
      `冲销 reversed ¥${t.reversed} (${t.reversals}) · 净 net ¥${t.net_saved} · ` +
      `不予互认 declined ${t.declined}`;
    barChart(document.getElementById("by-month"), months.groups.map((g) => net(g, g.key)), yuan);
    barChart(document.getElementById("by-hospital"),
      hospitals.groups.map((g) => net(g, g.key)), yuan);
    const topItems = items.groups.map((g) => net(g, `${names[g.key] || ""} ${g.key}`))
      .sort((a, b) => b.value - a.value).slice(0, 15);
    barChart(document.getElementById("by-item"), topItems, yuan);
    const reasons = Object.entries(t.declines_by_reason)
      .map(([key, n]) => ({ key, label: key, value: n, amount: String(n) }))
      .sort((a, b) => b.value - a.value);
    barChart(document.getElementById("by-reason"), reasons, (r) => `${r.value}`);
    document.getElementById("csv").onclick = (e) => { e.preventDefault(); downloadCsv(); };
  } catch (e) {
    error.textContent = e.message;
  }
}

async function downloadCsv() {
  const response = await call(`/api/v1/savings?${query("hospital")}&format=csv`);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = "savings.csv";
  link.click();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("range").addEventListener("submit", load);
  startSession(() => load());
});
