// The HIS launch page (docs/his-launch.md): check the launched items at once, let the
// doctor recognise or decline each, record the outcomes and tell the HIS (postMessage to
// its registered origin only, never "*").
"use strict";

const DECISION_WORDS = {
  RECOGNIZABLE: ["可互认", "recognisable"],
  NO_PRIOR_RESULT: ["无既往结果", "no prior result"],
  NOT_IN_CATALOG: ["不在互认目录", "not in the catalog"],
  EXPIRED: ["结果已过有效期", "result expired"],
  NOT_QC_CERTIFIED: ["未通过质控认证", "not QC-certified"],
  OUT_OF_SCOPE: ["不在互认范围", "out of scope"],
  PRELIMINARY: ["初步结果", "preliminary result"],
  WITHDRAWN: ["结果已撤回", "result withdrawn"],
  NO_VALUE: ["无结果值", "no value"],
  EXCLUDED: ["按规则排除", "excluded"],
};

let info = null;
let check = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// An instant in China Standard Time (as the doctor's page shows it); a bare day as it is.
const CST = new Intl.DateTimeFormat("en-CA", {
  timeZone: "Asia/Shanghai", year: "numeric", month: "2-digit", day: "2-digit",
  hour: "2-digit", minute: "2-digit", hourCycle: "h23",
});
function chinaTime(value) {
  const date = new Date(value || "");
  if (!value || /^\d{4}(-\d{2}){0,2}$/.test(value) || Number.isNaN(date.getTime())) return value || "";
  const p = Object.fromEntries(CST.formatToParts(date).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}`;
}

function both(zh, en) {
  return el("span", {}, zh, " ", el("span", { lang: "en", class: "muted" }, en));
}

function status(zh, en) {
  const s = document.getElementById("status");
  s.replaceChildren(both(zh, en));
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && info) headers["X-CSRF-Token"] = info.csrf_token;
  const r = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.detail || `HTTP ${r.status}`);
  return data;
}

function tell(items) {
  // Only to the HIS page registered for this client; never "*".
  if (window.parent === window || !info) return;
  const message = { type: "mrb.decision", check_id: check ? check.check_id : null, items };
  for (const origin of info.parent_origins) window.parent.postMessage(message, origin);
}

function itemRow(item, index) {
  const words = DECISION_WORDS[item.decision] || [item.decision, item.decision];
  const row = el("article", { class: "item", "data-index": index, "data-decision": item.decision });
  row.append(
    el("h2", {}, both(item.name.zh, item.name.en)),
    el("p", { class: "decision" }, both(words[0], words[1])),
    el("p", {}, both(item.explanation.zh, item.explanation.en)),
  );
  if (item.candidate) {
    const c = item.candidate;
    row.append(
      el("p", { class: "candidate" },
        both(`${c.hospital} · ${chinaTime(c.effective)} · ${c.summary || ""}`,
             c.valid_until ? `valid until ${c.valid_until}` : "")),
    );
  }
  if (item.fee_saved) row.append(el("p", { class: "fee" }, both(`可节省 ¥${item.fee_saved}`, `saves ¥${item.fee_saved}`)));
  if (item.candidate && item.decision === "RECOGNIZABLE") {
    const name = `choice-${index}`;
    const accept = el("input", { type: "radio", name, value: "accepted", id: `${name}-a` });
    const decline = el("input", { type: "radio", name, value: "declined", id: `${name}-d` });
    const reason = el("select", { name: `reason-${index}`, class: "reason",
      "aria-label": "复查理由 Reason to order again" });
    reason.append(el("option", { value: "" }, "— 复查理由 reason —"));
    for (const r of info.decline_reasons) reason.append(el("option", { value: r.code }, `${r.display.zh} ${r.display.en}`));
    const text = el("input", { type: "text", name: `text-${index}`, maxlength: "500",
      placeholder: "说明 details", "aria-label": "说明 Details" });
    row.append(
      el("p", { class: "choices" },
        accept, el("label", { for: `${name}-a` }, both("互认（不再重复检查）", "recognise")), " ",
        decline, el("label", { for: `${name}-d` }, both("仍需检查", "order again")), " ",
        reason, " ", text),
    );
  }
  return row;
}

function chosen() {
  const out = [];
  check.items.forEach((item, index) => {
    const picked = document.querySelector(`input[name="choice-${index}"]:checked`);
    if (!picked) return;
    const entry = { index, outcome: picked.value };
    if (picked.value === "declined") {
      entry.reason = document.querySelector(`select[name="reason-${index}"]`).value || "other";
      const text = document.querySelector(`input[name="text-${index}"]`).value.trim();
      if (text) entry.reason_text = text;
    }
    out.push(entry);
  });
  return out;
}

async function submit() {
  const picks = chosen();
  const button = document.getElementById("send");
  button.disabled = true;
  try {
    let recorded = [];
    if (picks.length) recorded = (await api("POST", `/launch/api/${check.check_id}/outcome`, { items: picks })).items;
    const outcome = new Map(recorded.map((o) => [o.index, o.outcome]));
    const items = check.items.map((item, index) => ({
      code: check.codes[index],
      decision: item.decision,
      outcome: outcome.get(index) || null,
    }));
    tell(items);
    const done = document.getElementById("done");
    done.hidden = false;
    done.replaceChildren(both("已提交，可返回 HIS 继续开单。", "Submitted: return to the HIS to order."));
  } catch (e) {
    status("提交失败：", `Submitting failed: ${e.message}`);
    button.disabled = false;
  }
}

async function main() {
  try {
    info = await api("GET", "/launch/api/session");
  } catch (e) {
    status("会话已结束，请从 HIS 重新打开。", `The launch session ended: open it again from the HIS. (${e.message})`);
    return;
  }
  document.getElementById("who").replaceChildren(
    both(`${info.hospital} · ${info.user} · 患者 ${info.patient}`, `patient ${info.patient}`),
  );
  try {
    check = await api("POST", "/launch/api/check");
  } catch (e) {
    status("互认检查暂不可用，请照常开单。", `The check is unavailable: order as usual. (${e.message})`);
    tell(null);
    return;
  }
  const list = document.getElementById("items");
  list.replaceChildren(...check.items.map(itemRow));
  status("检查完成。", "Checked.");
  const button = document.getElementById("send");
  button.disabled = false;
  button.addEventListener("click", submit);
}

document.addEventListener("DOMContentLoaded", main);
