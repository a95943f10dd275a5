// The doctor's page: safety notices, and a check with recognise / decline per item.
// Data is only ever inserted as text (never as HTML), and nothing secret is kept here.
"use strict";

const NATIONAL_ID = "urn:oid:2.16.156.10011.1.3";
let reasons = [];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

async function ready() {
  reasons = await api("/api/v1/recognition/decline-reasons");
  await loadNotices();
}

async function loadNotices() {
  const notices = await api("/api/v1/notifications");
  const list = document.getElementById("notice-list");
  list.replaceChildren();
  const unread = notices.filter((n) => !n.read_at).length;
  const badge = document.getElementById("unread");
  badge.textContent = String(unread);
  badge.classList.toggle("zero", unread === 0);
  if (notices.length === 0) list.append(el("li", { class: "read" }, "暂无通知 No notices"));
  for (const n of notices) {
    const item = el(
      "li",
      { class: n.read_at ? "read notice" : "notice", "data-notice": n.notice_id },
      el("strong", {}, n.message.zh),
      el("br"),
      n.message.en,
      el("br"),
      el(
        "span",
        { class: "muted" },
        `患者 Patient ${n.patient ? n.patient.value : "?"} · ${n.catalog_code || ""} · ` +
          `${n.action === "reverse" ? "节省已冲销 saving reversed" : "已标记复核 flagged"} · ` +
          `${new Date(n.created_at).toLocaleString()}`,
      ),
    );
    if (!n.read_at) {
      item.append(
        " ",
        el("button", { class: "mark-read", onclick: () => markRead(n.notice_id) }, "已读 Mark read"),
      );
    }
    list.append(item);
  }
}

async function markRead(id) {
  await api(`/api/v1/notifications/${encodeURIComponent(id)}/read`, { method: "POST" });
  await loadNotices();
}

async function runCheck(event) {
  event.preventDefault();
  const error = document.getElementById("check-error");
  error.textContent = "";
  const codes = document.getElementById("codes").value.split(",").map((c) => c.trim());
  const body = {
    patient: { system: NATIONAL_ID, value: document.getElementById("patient").value.trim() },
    ordering_hospital: session.claims.hospital,
    order_time: new Date().toISOString(),
    items: codes.filter(Boolean).map((code) => ({ system: "http://loinc.org", code })),
    emergency: document.getElementById("emergency").checked,
  };
  try {
    renderAnswer(await api("/api/v1/recognition/check", { method: "POST", body: JSON.stringify(body) }));
    await loadTimeline(body.patient);
  } catch (e) {
    error.textContent = e.message;
  }
}

// The patient's results from every hospital, newest first, through the FHIR API. POST
// _search keeps the identifier out of URLs; each search is audited by the server.
async function fhirSearch(type, patient) {
  const form = new URLSearchParams({
    "subject:identifier": `${patient.system}|${patient.value}`, _count: "50",
  });
  const response = await call(`/fhir/${type}/_search`, {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      "X-Purpose-Of-Use": "TREAT",
    },
    body: form,
  });
  if (!response.ok) throw new Error(`FHIR ${type}: ${response.status}`);
  return (await response.json()).entry || [];
}

function describe(res) {
  if (res.resourceType === "ImagingStudy") {
    const modality = (res.modality || []).map((m) => m.code).join("/");
    return { when: res.started, what: `${modality} ${res.description || ""}`.trim() };
  }
  const code = (res.code && (res.code.text || (res.code.coding || [])[0]?.display)) || "";
  return { when: res.effectiveDateTime || res.effectivePeriod?.start || res.issued, what: code };
}

async function loadTimeline(patient) {
  const entries = [
    ...(await fhirSearch("DiagnosticReport", patient)),
    ...(await fhirSearch("ImagingStudy", patient)),
  ].filter((e) => (e.search || {}).mode !== "outcome");
  const rows = entries.map((e) => ({ res: e.resource, ...describe(e.resource) }))
    .sort((a, b) => String(b.when || "").localeCompare(String(a.when || "")));
  const tbody = document.querySelector("#timeline tbody");
  tbody.replaceChildren(...rows.map((r) => el("tr", { class: "timeline-row" },
    el("td", {}, r.when ? new Date(r.when).toLocaleDateString() : "?"),
    el("td", {}, r.res.meta?.source || ""),
    el("td", {}, `${r.res.resourceType}: ${r.what}`),
    el("td", {}, r.res.status || ""),
  )));
  if (rows.length === 0) tbody.append(el("tr", {}, el("td", { colspan: "4" }, "无既往结果 No prior results")));
  document.getElementById("timeline").hidden = false;
  document.getElementById("timeline-title").hidden = false;
}

function renderAnswer(answer) {
  const table = document.getElementById("answer");
  const tbody = table.querySelector("tbody");
  tbody.replaceChildren();
  answer.items.forEach((item, index) => {
    const cand = item.candidate;
    const outcome = el("td", { class: "outcome" });
    if (item.decision === "RECOGNIZABLE") {
      const select = el("select", { "aria-label": "decline reason" },
        ...reasons.map((r) => el("option", { value: r.code }, `${r.display.zh} ${r.code}`)));
      const text = el("input", { placeholder: "理由 reason (OTHER)", size: "18" });
      outcome.append(
        el("button", { class: "accept", onclick: () => record(answer.check_id, index, outcome,
          { index, outcome: "accepted" }) }, `互认 Recognise (¥${item.fee_saved ?? "0.00"})`),
        el("br"), select, text,
        el("button", { class: "decline", onclick: () => record(answer.check_id, index, outcome,
          { index, outcome: "declined", reason: select.value, reason_text: text.value || null }) },
          "不互认 Decline"),
      );
    }
    tbody.append(el("tr", { "data-item": String(index) },
      el("td", {}, `${item.name.zh} ${item.name.en}`),
      el("td", { class: `decision ${item.decision}` }, item.decision),
      el("td", {}, item.explanation.zh, el("br"), el("span", { class: "muted" }, item.explanation.en)),
      el("td", {}, cand ? `${cand.hospital} ${cand.effective || ""} ${cand.summary}` : "—"),
      outcome,
    ));
  });
  table.hidden = false;
}

async function record(checkId, index, cell, item) {
  try {
    const out = await api(`/api/v1/recognition/${encodeURIComponent(checkId)}/outcome`, {
      method: "POST", body: JSON.stringify({ items: [item] }),
    });
    const done = out.items[0];
    cell.replaceChildren(done.outcome === "accepted"
      ? `已互认 accepted · 节省 ¥${done.fee_saved}`
      : `未互认 declined · ${done.reason_display ? done.reason_display.zh : done.reason}`);
  } catch (e) {
    cell.append(el("p", { class: "error" }, e.message));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("refresh").addEventListener("click", loadNotices);
  document.getElementById("check-form").addEventListener("submit", runCheck);
  startSession(ready);
});
