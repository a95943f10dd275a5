// The doctor's workbench: find a patient for a stated purpose, pick the items to order from
// the catalog by name or code (imaging with body site, side and protocol), run the check,
// read each decision in words with its explanation and warnings, accept or decline with a
// reason; the patient's cross-hospital timeline; safety notices; the patient's consent and
// opt-out records, recorded and withdrawn here (issue #19). Chinese first, English
// beside it. Dates and times in China Standard Time. Data is only ever inserted as text
// (never as HTML); no patient identifier ever goes into a URL (POST bodies only).
"use strict";

const TZ = "Asia/Shanghai";
const SNOMED = "http://snomed.info/sct";
const CATALOG = "urn:mrb:catalog";
const ref = {
  hospitals: new Map(), // id -> name
  decisions: new Map(), // code -> {zh, en}
  purposes: [],
  systems: [],
  sides: [],
  names: new Map(), // catalog or LOINC code -> {zh, en}
  categories: [], // sensitive categories: {code, zh, en}
};
let reasons = [];
let found = []; // the catalog search's items
const picked = []; // {item, side}

const FLAGS = {
  H: ["偏高", "high"], L: ["偏低", "low"], A: ["异常", "abnormal"], N: ["正常", "normal"],
  HH: ["危急值（偏高）", "critical high"], LL: ["危急值（偏低）", "critical low"],
  AA: ["危急值", "critical"], HU: ["显著偏高", "significantly high"],
  LU: ["显著偏低", "significantly low"],
};
const CRITICAL = new Set(["HH", "LL", "AA"]);
const STATUS = {
  final: ["已终审", "final"], amended: ["已修改", "amended"], corrected: ["已更正", "corrected"],
  appended: ["已补充", "appended"], preliminary: ["初步结果", "preliminary"],
  partial: ["部分结果", "partial"], registered: ["已登记", "registered"],
  available: ["可调阅", "available"], cancelled: ["已取消", "cancelled"],
  "entered-in-error": ["已撤回", "withdrawn"], unknown: ["未知", "unknown"],
  unlinked: ["患者关联已撤销", "patient link undone"],
};
const NOTICE_KIND = {
  corrected: ["结果已更正", "result corrected"], withdrawn: ["结果已撤回", "result withdrawn"],
  "link-undone": ["患者身份关联已撤销", "patient link undone"],
};
const KIND = { lab: ["检验", "lab"], panel: ["检验组合", "panel"], imaging: ["影像", "imaging"] };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// Chinese, then English in grey.
function words(zh, en) {
  return el("span", { class: "words" }, zh, " ", el("span", { class: "en" }, en));
}
function pair(table, code) {
  const [zh, en] = table[code] || [code || "?", code || "?"];
  return words(zh, en);
}

// ---- dates: China Standard Time, never a raw UTC string ------------------------------
const PARTS = new Intl.DateTimeFormat("en-CA", {
  timeZone: TZ, year: "numeric", month: "2-digit", day: "2-digit",
  hour: "2-digit", minute: "2-digit", hourCycle: "h23",
});
function parts(value) {
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return null;
  return Object.fromEntries(PARTS.formatToParts(date).map((p) => [p.type, p.value]));
}
// A calendar day (YYYY-MM-DD) stays as it is; an instant becomes the day in China.
function localDate(value) {
  if (!value) return "—";
  if (/^\d{4}(-\d{2}){0,2}$/.test(value)) return value;
  const p = parts(value);
  return p ? `${p.year}-${p.month}-${p.day}` : "—";
}
function localDateTime(value) {
  if (!value) return "—";
  if (/^\d{4}(-\d{2}){0,2}$/.test(value)) return value;
  const p = parts(value);
  return p ? `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}` : "—";
}

function hospitalName(id) {
  return ref.hospitals.get(id) || id || "?";
}
// The rules' texts name hospitals by their registry id: say their names instead.
function named(text) {
  if (!text || ref.hospitals.size === 0) return text;
  const ids = [...ref.hospitals.keys()].sort((a, b) => b.length - a.length)
    .map((id) => id.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const pattern = new RegExp(`(?<![A-Za-z0-9_-])(${ids.join("|")})(?![A-Za-z0-9_-])`, "g");
  return text.replace(pattern, (id) => ref.hospitals.get(id) || id);
}
function hospital(id) {
  return el("span", { class: "hospital", title: id }, hospitalName(id));
}
function reportLink(href, label = ["报告", "Report"]) {
  if (!href) return null;
  return el("a", { href, target: "_blank", rel: "noopener", class: "report-link" },
    `${label[0]} ${label[1]}`);
}
// Where the issuing hospital shows a study's images (its viewer or DICOMweb archive, from
// ImagingStudy.endpoint): outside mrb, so a new tab that learns nothing of this page.
function imagesLink(href) {
  if (!href || !/^https?:\/\//i.test(href)) return null;
  return el("a", { href, target: "_blank", rel: "noopener noreferrer", class: "images-link" },
    "查看影像 Open images");
}
// The same choice as broker/ingest/imaging_endpoints.py images_link: a viewer (IHE IID)
// first, then a WADO-RS base, then WADO-URI; the study UID added where the address needs it.
const ENDPOINT_TYPES = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type";
const LINK_TYPES = ["ihe-iid", "dicom-wado-rs", "dicom-wado-uri"];
function connectionType(ep) {
  const ct = ep.connectionType;
  const codings = Array.isArray(ct) ? ct.flatMap((c) => [c, ...(c.coding || [])])
    : ct ? [ct, ...(ct.coding || [])] : [];
  const found = codings.find((c) => typeof c.code === "string" && (!c.system || c.system === ENDPOINT_TYPES));
  return found ? found.code : null;
}
function studyUid(study) {
  for (const i of study.identifier || []) {
    if (i.system !== "urn:dicom:uid" || typeof i.value !== "string") continue;
    const uid = i.value.replace(/^urn:oid:/, "");
    if (uid.length <= 64 && /^[0-9]+(\.[0-9]+)*$/.test(uid)) return uid;
  }
  return null;
}
function studyImages(study, endpoints) {
  const refs = [...(study.endpoint || []), ...(study.series || []).flatMap((s) => s.endpoint || [])];
  const usable = refs.map((r) => endpoints.get(r.reference))
    .filter((ep) => ep && (!ep.status || ep.status === "active") && LINK_TYPES.includes(connectionType(ep)));
  if (usable.length === 0) return null;
  usable.sort((a, b) => LINK_TYPES.indexOf(connectionType(a)) - LINK_TYPES.indexOf(connectionType(b)));
  const best = usable[0];
  const type = connectionType(best);
  const uid = studyUid(study);
  let url;
  try {
    url = new URL(best.address);
  } catch {
    return null;
  }
  if (uid && type === "ihe-iid" && !url.search) {
    return `${best.address}?requestType=STUDY&studyUID=${encodeURIComponent(uid)}`;
  }
  if (uid && type === "dicom-wado-rs" && !url.pathname.includes("/studies/") && !url.search && !url.hash) {
    return `${best.address.replace(/\/+$/, "")}/studies/${encodeURIComponent(uid)}`;
  }
  return best.address;
}
function flagList(flags) {
  if (!flags || flags.length === 0) return null;
  return el("span", { class: "flags" }, ...flags.map((f) =>
    el("span", { class: CRITICAL.has(f) ? "flag critical" : "flag", "data-flag": f },
      (FLAGS[f] || [f, f]).join(" "))));
}

// ---- reference data ------------------------------------------------------------------
async function ready() {
  closeConsents(); // a new sign-in starts with no patient's records on the page
  const [vocab, hospitals, declines] = await Promise.all([
    api("/api/v1/reference/vocabulary"),
    api("/api/v1/admin/hospitals"),
    api("/api/v1/recognition/decline-reasons"),
  ]);
  reasons = declines;
  for (const h of hospitals) ref.hospitals.set(h.id, h.name);
  for (const d of vocab.decisions) ref.decisions.set(d.code, d);
  ref.purposes = vocab.purposes;
  ref.systems = vocab.identifier_systems;
  ref.sides = vocab.sides;
  ref.categories = vocab.sensitive_categories || [];
  fillPickers();
  await loadNotices();
}

function fillPickers() {
  const systems = document.getElementById("id-system");
  systems.replaceChildren(...ref.systems.map((s) => el("option", { value: s.uri,
    "data-scope": s.scope }, `${s.name.zh} ${s.name.en}`)));
  const purposes = document.getElementById("purpose");
  purposes.replaceChildren(...ref.purposes.map((p) => el("option", { value: p.v3,
    "data-emergency": p.emergency ? "1" : "0" }, `${p.name.zh} ${p.name.en}`)));
  document.getElementById("consent-category").replaceChildren(...ref.categories.map((c) =>
    el("option", { value: c.code }, `${c.zh} ${c.en}`)));
}

// Names of catalog items by catalog or LOINC code, asked once per code.
async function itemNames(codes) {
  const missing = [...new Set(codes.filter((c) => c && !ref.names.has(c)))];
  await Promise.all(missing.map(async (code) => {
    const items = await api(`/api/v1/catalog/items?${new URLSearchParams({ q: code, limit: "1" })}`)
      .catch(() => []);
    const item = items.find((i) => i.code === code || i.loinc.includes(code));
    ref.names.set(code, item ? item.name : null);
  }));
}
function itemName(code, fallback) {
  const name = ref.names.get(code);
  return name ? words(name.zh, name.en) : (fallback || code || "?");
}

// ---- notices -------------------------------------------------------------------------
async function loadNotices() {
  const notices = await api("/api/v1/notifications");
  await itemNames(notices.map((n) => n.catalog_code));
  const list = document.getElementById("notice-list");
  list.replaceChildren();
  const unread = notices.filter((n) => !n.read_at).length;
  const badge = document.getElementById("unread");
  badge.textContent = String(unread);
  badge.classList.toggle("zero", unread === 0);
  if (notices.length === 0) list.append(el("li", { class: "read" }, "暂无通知 No notices"));
  for (const n of notices) {
    const item = el("li", { class: n.read_at ? "read notice" : "notice", "data-notice": n.notice_id },
      el("strong", {}, pair(NOTICE_KIND, n.kind)), " · ", itemName(n.catalog_code), el("br"),
      named(n.message.zh), el("br"), el("span", { class: "en" }, named(n.message.en)), el("br"),
      el("span", { class: "muted" },
        `患者 Patient ${n.patient ? n.patient.value : "?"} · ` +
        `${n.action === "reverse" ? "节省已冲销 saving reversed" : "已标记复核 flagged for review"} · ` +
        `${localDateTime(n.created_at)}`),
      " ", gone(n) ? el("span", { class: "gone" }, "结果已撤回，不再提供 withdrawn, no longer served")
        : reportLink(n.result_fhir, ["结果", "Result"]));
    if (!n.read_at) {
      item.append(" ", el("button", { type: "button", class: "mark-read",
        onclick: () => markRead(n.notice_id) }, "已读 Mark read"));
    }
    list.append(item);
  }
  withdrawLinks(new Set(notices.filter(gone).map((n) => n.result_fhir)));
}

// A withdrawn result is no longer served (410): its links on the page go, with a word why.
function gone(notice) {
  return notice.kind === "withdrawn" || notice.new_status === "entered-in-error";
}
function withdrawLinks(paths) {
  if (paths.size === 0) return;
  for (const a of document.querySelectorAll("a.report-link")) {
    if (paths.has(new URL(a.href).pathname)) {
      a.replaceWith(el("span", { class: "gone" }, "已撤回 withdrawn"));
    }
  }
}

async function markRead(id) {
  await api(`/api/v1/notifications/${encodeURIComponent(id)}/read`, { method: "POST" });
  await loadNotices();
}

// ---- the catalog picker --------------------------------------------------------------
let searchTimer = null;
function scheduleSearch() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => searchItems().catch(showError), 200);
}

async function searchItems() {
  const q = document.getElementById("item-search").value.trim();
  const kind = document.getElementById("item-kind").value;
  const list = document.getElementById("item-results");
  if (!q) {
    found = [];
    list.replaceChildren();
    return;
  }
  const params = new URLSearchParams({ q, limit: "12" });
  if (kind) params.set("kind", kind);
  found = await api(`/api/v1/catalog/items?${params}`);
  list.replaceChildren(...found.map((item, i) => el("li", { class: "catalog-item",
    "data-code": item.code },
    el("button", { type: "button", class: "add", onclick: () => pick(item) }, "添加 Add"), " ",
    el("strong", {}, item.name.zh), " ", el("span", { class: "en" }, item.name.en), " ",
    el("span", { class: "muted" }, describeItem(item)),
    item.recognizable ? null : el("span", { class: "muted" }, " · 不参与互认 not recognised"),
  )));
  if (found.length === 0) list.append(el("li", { class: "muted" }, "未找到 Nothing found"));
}

function describeItem(item) {
  const bits = [item.code, KIND[item.kind] ? KIND[item.kind].join(" ") : item.kind];
  if (item.loinc.length) bits.push(`LOINC ${item.loinc.join(", ")}`);
  if (item.modality) bits.push(item.modality);
  if (item.body_site) bits.push(`部位 site ${item.body_site.zh} ${item.body_site.en}`);
  if (item.protocol) bits.push(`方案 protocol ${item.protocol.zh} ${item.protocol.en}`);
  if (item.sided) bits.push("需选侧别 choose a side");
  return bits.join(" · ");
}

function pick(item) {
  if (!item) return;
  picked.push({ item, side: item.sided ? (ref.sides[0] || {}).code : null });
  renderPicked();
  found = [];
  document.getElementById("item-search").value = "";
  document.getElementById("item-results").replaceChildren();
}

function renderPicked() {
  const list = document.getElementById("picked");
  list.replaceChildren();
  if (picked.length === 0) list.append(el("li", { class: "muted empty" }, "尚未选择项目 No items yet"));
  picked.forEach((p, i) => {
    const row = el("li", { class: "picked-item", "data-code": p.item.code },
      el("strong", {}, p.item.name.zh), " ", el("span", { class: "en" }, p.item.name.en), " ",
      el("span", { class: "muted" }, describeItem(p.item)), " ");
    if (p.item.sided) {
      const side = el("select", { class: "side", "aria-label": "侧别 Side" },
        ...ref.sides.map((s) => el("option", { value: s.code, selected: s.code === p.side },
          `${s.zh} ${s.en}`)));
      side.addEventListener("change", () => { p.side = side.value; });
      row.append(el("label", {}, "侧别 Side ", side), " ");
    }
    row.append(el("button", { type: "button", class: "remove",
      onclick: () => { picked.splice(i, 1); renderPicked(); } }, "移除 Remove"));
    list.append(row);
  });
}

function order(p) {
  const item = p.item;
  if (item.kind !== "imaging" || !item.modality) return { system: CATALOG, code: item.code };
  const out = { modality: item.modality };
  if (item.body_site) out.body_site = { system: SNOMED, code: item.body_site.code };
  if (item.sided && p.side) out.laterality = { system: SNOMED, code: p.side };
  if (item.protocol) out.protocol = item.protocol.code;
  return out;
}

// ---- the check -----------------------------------------------------------------------
function showError(e) {
  document.getElementById("check-error").textContent = e.message || String(e);
}

function stated() {
  const emergency = document.getElementById("emergency").checked;
  const reason = document.getElementById("break-glass").value.trim();
  return {
    purpose: document.getElementById("purpose").value,
    emergency,
    reason: emergency && reason ? reason : null,
  };
}

async function runCheck(event) {
  event.preventDefault();
  const error = document.getElementById("check-error");
  error.textContent = "";
  if (picked.length === 0) {
    error.textContent = "请先选择开单项目 Pick at least one item to order";
    return;
  }
  const why = stated();
  const ordered = [...picked];
  const patient = {
    system: document.getElementById("id-system").value,
    value: document.getElementById("patient").value.trim(),
  };
  const body = {
    patient,
    ordering_hospital: session.claims.hospital,
    order_time: new Date().toISOString(),
    items: ordered.map(order),
    emergency: why.emergency,
    purpose: why.purpose,
  };
  if (why.reason) body.break_glass_reason = why.reason;
  try {
    const answer = await api("/api/v1/recognition/check", { method: "POST", body: JSON.stringify(body) });
    const observations = await loadTimeline(patient, why).catch((e) => {
      showError(e);
      return new Map();
    });
    renderAnswer(answer, observations, ordered);
  } catch (e) {
    showError(e);
  }
}

// The candidate's own observation in the timeline (for its reference range): the one its
// link names, or in the report it links to, the one coded as the ordered item.
function candidateObservation(cand, observations, item) {
  const own = observations.get(cand.fhir);
  if (own) return own;
  const loinc = new Set((item && item.loinc) || []);
  return [...observations.values()].find((o) => o.report === cand.fhir && loinc.has(codingOf(o.res).code));
}

function candidateCell(cand, observations, item) {
  if (!cand) return "—";
  const obs = candidateObservation(cand, observations, item);
  const value = cand.value !== null && cand.value !== undefined
    ? el("span", { class: "value" }, `${cand.value}${cand.unit ? ` ${cand.unit}` : ""}`) : null;
  return [
    hospital(cand.hospital), " · ", el("span", { class: "date" }, localDateTime(cand.effective)),
    el("br"), cand.summary ? el("span", { class: "muted" }, cand.summary) : null,
    value ? [el("br"), "结果 Value ", value] : null,
    obs && obs.range ? [" ", el("span", { class: "range" }, `参考范围 range ${obs.range}`)] : null,
    " ", flagList(cand.flags), el("br"),
    "状态 Status ", pair(STATUS, cand.status),
    cand.recognition_mark ? [" · 互认标识 mark ", el("span", { class: "mark" }, cand.recognition_mark)] : null,
    cand.valid_until ? [el("br"), `可互认至 recognisable until ${localDate(cand.valid_until)}`] : null,
    el("br"), reportLink(cand.fhir), cand.images ? [" ", imagesLink(cand.images)] : null,
  ];
}

function renderAnswer(answer, observations, ordered) {
  const table = document.getElementById("answer");
  const tbody = table.querySelector("tbody");
  tbody.replaceChildren();
  answer.items.forEach((item, index) => {
    const decision = ref.decisions.get(item.decision) || { zh: item.decision, en: item.decision };
    const cand = item.candidate;
    const outcome = el("td", { class: "outcome" });
    if (item.decision === "RECOGNIZABLE") outcome.append(...outcomeControls(answer.check_id, index, item, outcome));
    else outcome.append(el("span", { class: "muted" }, "按常规开单 Order as usual"));
    const warnings = (item.warnings || []).map((w) => el("li", { class: `warning ${w.kind}` },
      el("strong", {}, "⚠ "), named(w.message.zh), el("br"), el("span", { class: "en" }, named(w.message.en)), el("br"),
      hospital(w.hospital), ` · ${localDateTime(w.effective)}`,
      w.value ? ` · ${w.value}${w.unit ? ` ${w.unit}` : ""}` : "", " ", flagList(w.flags), " ",
      reportLink(w.fhir)));
    const others = (item.other_results || []).map((o) => el("li", { class: "other" },
      hospital(o.hospital), ` · ${localDate(o.effective)} · `,
      decisionWords(o.decision), " ",
      el("span", { class: "muted" }, named(o.reason.zh)), " ", reportLink(o.fhir)));
    tbody.append(el("tr", { "data-item": String(index), "data-decision": item.decision },
      el("td", { class: "item" }, el("strong", {}, item.name.zh), el("br"),
        el("span", { class: "en" }, item.name.en), sideOf(item.requested)),
      el("td", { class: `decision ${item.decision}` }, decision.zh, el("br"),
        el("span", { class: "en" }, decision.en)),
      el("td", { class: "explanation" }, named(item.explanation.zh), el("br"),
        el("span", { class: "en" }, named(item.explanation.en)),
        ...(item.notes || []).map((n) => el("p", { class: "note" }, named(n.zh), " ", el("span", { class: "en" }, named(n.en)))),
        warnings.length ? el("ul", { class: "warnings" }, ...warnings) : null,
        others.length ? [el("p", { class: "muted" }, "其他结果 Other results"),
          el("ul", { class: "others" }, ...others)] : null),
      el("td", { class: "candidate" }, candidateCell(cand, observations, ordered[index] && ordered[index].item)),
      outcome,
    ));
  });
  table.hidden = false;
}

function decisionWords(code) {
  const d = ref.decisions.get(code) || { zh: code, en: code };
  return words(d.zh, d.en);
}

function sideOf(requested) {
  const code = requested && requested.laterality && requested.laterality.code;
  const side = code && ref.sides.find((s) => s.code === code);
  return side ? [el("br"), el("span", { class: "muted" }, `侧别 side ${side.zh} ${side.en}`)] : null;
}

function outcomeControls(checkId, index, item, cell) {
  const select = el("select", { class: "reason", "aria-label": "不互认理由 Decline reason" },
    ...reasons.map((r) => el("option", { value: r.code }, `${r.display.zh} ${r.display.en}`)));
  const text = el("input", { class: "reason-text", placeholder: "补充说明 details", size: "18",
    maxlength: "500", "aria-label": "补充说明 Details" });
  const decline = () => {
    const reason = reasons.find((r) => r.code === select.value);
    if (reason && reason.needs_text && !text.value.trim()) {
      cell.querySelector(".error")?.remove();
      cell.append(el("p", { class: "error" }, "请填写理由 Please give the reason"));
      return;
    }
    record(checkId, cell, { index, outcome: "declined", reason: select.value,
      reason_text: text.value.trim() || null });
  };
  return [
    el("button", { type: "button", class: "accept",
      onclick: () => record(checkId, cell, { index, outcome: "accepted" }) },
      `互认，不再检查 Recognise (节省 saves ¥${item.fee_saved ?? "0.00"})`),
    el("div", { class: "decline-box" }, el("label", {}, "不互认理由 Reason ", select), " ", text, " ",
      el("button", { type: "button", class: "decline", onclick: decline }, "不互认 Decline")),
  ];
}

async function record(checkId, cell, item) {
  try {
    const out = await api(`/api/v1/recognition/${encodeURIComponent(checkId)}/outcome`, {
      method: "POST", body: JSON.stringify({ items: [item] }),
    });
    const done = out.items[0];
    cell.replaceChildren(done.outcome === "accepted"
      ? words(`已互认 · 节省 ¥${done.fee_saved}`, `accepted · saved ¥${done.fee_saved}`)
      : words(`未互认 · ${done.reason_display ? done.reason_display.zh : done.reason}`,
        `declined · ${done.reason_display ? done.reason_display.en : done.reason}`),
      ...(done.reason_text ? [el("span", { class: "muted" }, ` (${done.reason_text})`)] : []));
  } catch (e) {
    cell.append(el("p", { class: "error" }, e.message));
  }
}

// ---- the timeline: the patient's results everywhere, via FHIR -------------------------
// POST _search keeps the identifier out of URLs; each search is audited by the server
// with the purpose stated.
async function fhirSearch(type, patient, why, extra = {}) {
  const form = new URLSearchParams({
    "subject:identifier": `${patient.system}|${patient.value}`, _count: "50", ...extra,
  });
  const headers = { "content-type": "application/x-www-form-urlencoded", "X-Purpose-Of-Use": why.purpose };
  if (why.reason) headers["X-Break-Glass-Reason"] = encodeURIComponent(why.reason);
  const response = await call(`/fhir/${type}/_search`, { method: "POST", headers, body: form });
  if (!response.ok) throw new Error(`FHIR ${type}: ${response.status}`);
  return (await response.json()).entry || [];
}

function codingOf(res) {
  const codings = (res.code && res.code.coding) || [];
  return codings[0] || {};
}
function rangeText(obs) {
  const r = (obs.referenceRange || [])[0];
  if (!r) return null;
  if (r.text) return r.text;
  const low = r.low ? `${r.low.value}` : "";
  const high = r.high ? `${r.high.value}` : "";
  const unit = (r.low && r.low.unit) || (r.high && r.high.unit) || "";
  return `${low}–${high}${unit ? ` ${unit}` : ""}`;
}
function obsFlags(obs) {
  return (obs.interpretation || []).flatMap((i) => (i.coding || []).map((c) => c.code));
}
function obsValue(obs) {
  const q = obs.valueQuantity;
  if (q) return `${q.value}${q.unit ? ` ${q.unit}` : ""}`;
  if (obs.valueString) return obs.valueString;
  if (obs.valueCodeableConcept) return obs.valueCodeableConcept.text || codingOf({ code: obs.valueCodeableConcept }).display;
  return "—";
}
function markOf(res) {
  const ext = (res.extension || []).find((e) => e.url === "urn:mrb:fhir:extension:recognition-mark");
  return ext ? ext.valueString : null;
}

async function loadTimeline(patient, why) {
  const [reports, studies] = await Promise.all([
    fhirSearch("DiagnosticReport", patient, why, { _include: "DiagnosticReport:result" }),
    fhirSearch("ImagingStudy", patient, why, { _include: "ImagingStudy:endpoint" }),
  ]);
  const endpoints = new Map(); // "Endpoint/<id>" -> the Endpoint (where a study's images are)
  for (const e of studies) {
    const res = e.resource;
    if (res && res.resourceType === "Endpoint") endpoints.set(`Endpoint/${res.id}`, res);
  }
  const observations = new Map(); // "/fhir/Observation/<id>" -> {res, range, report}
  for (const e of reports) {
    const res = e.resource;
    if (res && res.resourceType === "Observation") {
      observations.set(`/fhir/Observation/${res.id}`, { res, range: rangeText(res), report: null });
    }
  }
  for (const e of reports) {
    const res = e.resource;
    if (!res || res.resourceType !== "DiagnosticReport") continue;
    for (const r of res.result || []) {
      const member = observations.get(`/fhir/${r.reference}`);
      if (member) member.report = `/fhir/DiagnosticReport/${res.id}`;
    }
  }
  const rows = [...reports, ...studies]
    .filter((e) => (e.search || {}).mode !== "outcome" && (e.search || {}).mode !== "include")
    .map((e) => e.resource)
    .filter((res) => res && (res.resourceType === "DiagnosticReport" || res.resourceType === "ImagingStudy"))
    .map((res) => ({ res, when: res.effectiveDateTime || res.effectivePeriod?.start || res.started || res.issued }))
    .sort((a, b) => String(b.when || "").localeCompare(String(a.when || "")));
  const codes = [];
  for (const { res } of rows) codes.push(codingOf(res).code);
  for (const o of observations.values()) codes.push(codingOf(o.res).code);
  await itemNames(codes);

  const tbody = document.querySelector("#timeline tbody");
  tbody.replaceChildren(...rows.map(({ res, when }) => {
    const coding = codingOf(res);
    const mark = markOf(res);
    let what;
    let result;
    if (res.resourceType === "ImagingStudy") {
      const modality = (res.modality || []).map((m) => m.code).join("/");
      const sites = (res.series || []).map((s) => s.bodySite && (s.bodySite.display || s.bodySite.code)).filter(Boolean);
      what = [el("span", {}, `影像 Imaging ${modality}`), sites.length ? ` · ${[...new Set(sites)].join(", ")}` : "",
        res.description ? el("span", { class: "muted" }, ` ${res.description}`) : null];
      result = `${(res.series || []).length} 个序列 series · ${res.numberOfInstances ?? (res.series || []).reduce((n, s) => n + (s.numberOfInstances || 0), 0)} 幅图像 images`;
    } else {
      what = itemName(coding.code, (res.code && res.code.text) || coding.display);
      const members = (res.result || []).map((r) => observations.get(`/fhir/${r.reference}`)).filter(Boolean);
      result = members.length === 0
        ? (res.conclusion || "—")
        : el("ul", { class: "values" }, ...members.map(({ res: obs, range }) => el("li", {},
          itemName(codingOf(obs).code, codingOf(obs).display), ": ",
          el("span", { class: "value" }, obsValue(obs)),
          range ? el("span", { class: "range" }, ` 参考范围 range ${range}`) : null, " ",
          flagList(obsFlags(obs)))));
    }
    return el("tr", { class: "timeline-row", "data-type": res.resourceType },
      el("td", { class: "date" }, localDateTime(when)),
      el("td", {}, hospital(res.meta && res.meta.source)),
      el("td", {}, what),
      el("td", {}, result),
      el("td", {}, pair(STATUS, res.status), mark ? [el("br"), `互认标识 mark ${mark}`] : null),
      el("td", {}, reportLink(`/fhir/${res.resourceType}/${res.id}`,
        res.resourceType === "ImagingStudy" ? ["检查", "Study"] : ["报告", "Report"]),
      res.resourceType === "ImagingStudy" ? [" ", imagesLink(studyImages(res, endpoints))] : null));
  }));
  if (rows.length === 0) tbody.append(el("tr", {}, el("td", { colspan: "6" }, "无既往结果 No prior results")));
  document.getElementById("timeline").hidden = false;
  document.getElementById("timeline-title").hidden = false;
  return observations;
}


// ---- consent and opt-out (issue #19): read via FHIR Consent POST _search, recorded and
// withdrawn through /api/v1/patients/consents. The identifier goes in bodies only. --------
const CONSENT_KIND = {
  "opt-out": ["拒绝跨院共享", "opt-out of cross-hospital sharing"],
  sensitive: ["敏感结果授权", "consent to share"],
};
const RECORDED_BY = "urn:mrb:fhir:extension:consent-recorded-by";
const WITHDRAWN_EXT = "urn:mrb:fhir:extension:consent-withdrawn";
const consent = {
  patient: null, // {system, value} the panel is for
  records: new Map(), // id -> row (fromFhir / fromApi), listed oldest first
};

function sameInstant(a, b) {
  return Boolean(a && b) && new Date(a).getTime() === new Date(b).getTime();
}

// A FHIR Consent (broker/fhir/consent.py) as a row. Once withdrawn before its expiry, the
// resource's period ends at the withdrawal and the expiry is not told: it stays unknown
// unless this page recorded or withdrew it (then the API's answer says it).
function fromFhir(res) {
  const ext = (url) => (res.extension || []).find((e) => e.url === url);
  const by = ext(RECORDED_BY);
  const gone = ext(WITHDRAWN_EXT);
  const part = (name) => gone && (gone.extension || []).find((e) => e.url === name);
  const withdrawnAt = part("at") ? part("at").valueDateTime : null;
  const provision = res.provision || {};
  const end = provision.period && provision.period.end;
  const rule = (((res.policyRule || {}).coding) || [])[0] || {};
  const code = ((((provision.code || [])[0] || {}).coding) || [])[0];
  const org = ((res.organization || [])[0] || {}).identifier;
  const earlier = consent.records.get(res.id);
  // Not withdrawn: the period ends at the expiry (or not at all, until withdrawn). Withdrawn:
  // an end before the withdrawal was the expiry; an end at the withdrawal hides it.
  const known = !withdrawnAt || Boolean(end && !sameInstant(end, withdrawnAt));
  return {
    id: res.id,
    kind: rule.code === "OPTOUT" ? "opt-out" : "sensitive",
    category: code ? code.code : null,
    status: res.status,
    recorded_by: by ? by.valueReference.identifier.value : "?",
    recorded_hospital: org ? org.value : null,
    recorded_at: res.dateTime,
    evidence: ((res.sourceReference || {}).identifier || {}).value || "",
    expires: known ? (end || null) : (earlier ? earlier.expires : null),
    expiry_known: known || Boolean(earlier && earlier.expiry_known),
    withdrawn_at: withdrawnAt,
    withdrawn_by: part("by") ? part("by").valueString : null,
  };
}

// The API's ConsentOut (POST record, POST withdraw) as a row.
function fromApi(out) {
  return { ...out, expiry_known: true };
}

function consentShown(patient) {
  return consent.patient && patient && consent.patient.system === patient.system
    && consent.patient.value === patient.value;
}

function enteredPatient() {
  return {
    system: document.getElementById("id-system").value,
    value: document.getElementById("patient").value.trim(),
  };
}

function closeConsents() {
  consent.patient = null;
  consent.records.clear();
  document.getElementById("consent").hidden = true;
  document.getElementById("consent-error").textContent = "";
  document.getElementById("consent-note").textContent = "";
}

async function openConsents() {
  const error = document.getElementById("consent-error");
  const patient = enteredPatient();
  if (!patient.value) {
    document.getElementById("check-error").textContent = "请先填写患者号码 Enter the patient's number first";
    return;
  }
  document.getElementById("check-error").textContent = "";
  if (!consentShown(patient)) consent.records.clear();
  consent.patient = patient;
  const system = ref.systems.find((s) => s.uri === patient.system);
  document.getElementById("consent-patient").textContent =
    `患者 Patient: ${system ? `${system.name.zh} ${system.name.en}` : patient.system} ${patient.value}`;
  document.getElementById("consent-note").textContent = "";
  error.textContent = "";
  document.getElementById("consent").hidden = false;
  try {
    await loadConsents(patient, stated());
  } catch (e) {
    error.textContent = `读取授权记录失败 Could not read the consent records — ${e.message}`;
    document.querySelector("#consent-list tbody").replaceChildren(); // unknown, not "none"
    return;
  }
  renderConsents();
}

// POST _search: the identifier stays in the body; audited with the purpose stated (never
// as break-glass: the reason is not sent for this read).
async function loadConsents(patient, why) {
  const form = new URLSearchParams({ "patient:identifier": `${patient.system}|${patient.value}` });
  const response = await call("/fhir/Consent/_search", {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", "X-Purpose-Of-Use": why.purpose },
    body: form,
  });
  if (!response.ok) throw new Error(await fhirProblem(response));
  const bundle = await response.json();
  const rows = (bundle.entry || []).map((e) => e.resource)
    .filter((r) => r && r.resourceType === "Consent").map(fromFhir);
  if (!consentShown(patient)) return; // the doctor moved on to another patient meanwhile
  consent.records = new Map(rows.map((r) => [r.id, r]));
}

async function fhirProblem(response) {
  const outcome = await response.json().catch(() => ({}));
  const issue = (outcome.issue || [])[0] || {};
  return `${response.status} ${issue.diagnostics || issue.code || ""}`.trim();
}

// A problem+json answer of the consent API, in words: Chinese first, the API's own text.
async function consentProblem(response) {
  const problem = await response.json().catch(() => ({}));
  let detail = problem.detail;
  if (detail && typeof detail !== "string") detail = JSON.stringify(detail);
  const api = `${response.status} ${problem.title || ""}${detail ? `: ${detail}` : ""}`;
  const lead = {
    400: "登记内容有误 The record is not valid",
    403: "无权登记授权 You may not record consents",
    404: "本院没有该患者的结果，不能登记、撤回或查阅其授权 Your hospital holds no results of this patient",
    422: "登记内容有误 The record is not valid",
  }[response.status] || "操作失败 Failed";
  return `${lead} — ${api}`;
}

async function consentCall(path, body) {
  const response = await call(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw new Error(await consentProblem(response));
  return response.json();
}

// The end of the chosen day in China: "valid until 2027-06-01" includes that day.
function expiryOf(day) {
  return `${day}T23:59:59+08:00`;
}

async function recordConsent(event) {
  event.preventDefault();
  const error = document.getElementById("consent-error");
  const note = document.getElementById("consent-note");
  error.textContent = "";
  note.textContent = "";
  if (!consent.patient) return;
  const kind = document.getElementById("consent-kind").value;
  const evidence = document.getElementById("consent-evidence").value.trim();
  const day = document.getElementById("consent-expires").value;
  if (!evidence) {
    error.textContent = "请填写证明材料编号 Enter the evidence reference";
    return;
  }
  if (kind === "sensitive" && !day) {
    error.textContent = "授权须填写有效期 A consent needs an expiry date";
    return;
  }
  const body = { patient: consent.patient, kind, evidence };
  if (kind === "sensitive") body.category = document.getElementById("consent-category").value;
  if (day) body.expires = expiryOf(day);
  const button = document.getElementById("consent-record");
  button.disabled = true;
  try {
    const out = await consentCall("/api/v1/patients/consents", body);
    consent.records.set(out.id, fromApi(out));
    renderConsents();
    document.getElementById("consent-evidence").value = "";
    note.textContent = "已登记，记入审计；下一次查询起生效（本页不会自动重新查询）。"
      + " Recorded and audited; the next check reflects it (nothing is re-run automatically).";
  } catch (e) {
    error.textContent = e.message;
  } finally {
    button.disabled = false;
  }
}

async function withdrawConsent(row) {
  const error = document.getElementById("consent-error");
  const note = document.getElementById("consent-note");
  const what = row.kind === "opt-out" ? "拒绝跨院共享 opt-out"
    : `授权 consent: ${categoryText(row.category)}`;
  if (!window.confirm(`撤回该记录？Withdraw this record?\n${what} · ${row.evidence}`)) return;
  error.textContent = "";
  note.textContent = "";
  try {
    const out = await consentCall(`/api/v1/patients/consents/${encodeURIComponent(row.id)}/withdraw`);
    consent.records.set(out.id, fromApi(out));
    renderConsents();
    note.textContent = "已撤回，记入审计；下一次查询起生效（本页不会自动重新查询）。"
      + " Withdrawn and audited; the next check reflects it (nothing is re-run automatically).";
  } catch (e) {
    error.textContent = e.message;
  }
}

function categoryText(code) {
  const c = ref.categories.find((x) => x.code === code);
  return c ? `${c.zh} ${c.en}` : (code || "—");
}

function consentStatus(row) {
  if (row.status === "active") return el("span", { class: "consent-status active" }, words("有效", "active"));
  if (row.withdrawn_at) return el("span", { class: "consent-status withdrawn" }, words("已撤回", "withdrawn"));
  return el("span", { class: "consent-status expired" }, words("已失效", "expired"));
}

function renderConsents() {
  const tbody = document.querySelector("#consent-list tbody");
  const rows = [...consent.records.values()]
    .sort((a, b) => new Date(a.recorded_at).getTime() - new Date(b.recorded_at).getTime());
  tbody.replaceChildren(...rows.map((row) => {
    const c = row.category && ref.categories.find((x) => x.code === row.category);
    return el("tr", { class: `consent-row ${row.status}`, "data-consent": row.id, "data-kind": row.kind,
      "data-status": row.status },
    el("td", { class: "kind" }, pair(CONSENT_KIND, row.kind)),
    el("td", { class: "category" }, row.kind === "opt-out" ? words("全部结果", "all results")
      : (c ? words(c.zh, c.en) : (row.category || "—"))),
    el("td", {}, consentStatus(row)),
    el("td", { class: "recorded" }, row.recorded_by, el("br"),
      el("span", { class: "muted" }, hospitalName(row.recorded_hospital)), el("br"),
      localDateTime(row.recorded_at)),
    el("td", { class: "expires" }, row.expires ? localDateTime(row.expires)
      : (row.expiry_known ? words("撤回前一直有效", "until withdrawn") : "—")),
    el("td", { class: "evidence" }, row.evidence),
    el("td", { class: "withdrawn" }, row.withdrawn_at
      ? [row.withdrawn_by || "?", el("br"), localDateTime(row.withdrawn_at)] : "—"),
    el("td", { class: "action" }, row.status === "active"
      ? el("button", { type: "button", class: "withdraw", onclick: () => withdrawConsent(row) },
        "撤回 Withdraw") : null));
  }));
  if (rows.length === 0) {
    tbody.append(el("tr", {}, el("td", { colspan: "8", class: "muted" }, "暂无记录 No records")));
  }
}

function consentKindChanged() {
  const sensitive = document.getElementById("consent-kind").value === "sensitive";
  document.getElementById("consent-category-label").hidden = !sensitive;
  document.getElementById("consent-expires").required = sensitive;
}

// The earliest expiry the date picker offers: tomorrow in China.
function tomorrowInChina() {
  const p = parts(Date.now() + 24 * 3600 * 1000);
  return p ? `${p.year}-${p.month}-${p.day}` : "";
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("refresh").addEventListener("click", () => loadNotices().catch(showError));
  document.getElementById("check-form").addEventListener("submit", runCheck);
  const search = document.getElementById("item-search");
  search.addEventListener("input", scheduleSearch);
  search.addEventListener("keydown", async (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault(); // Enter adds the best match rather than running the check
    clearTimeout(searchTimer);
    await searchItems().catch(showError);
    if (found.length) pick(found[0]);
  });
  document.getElementById("item-kind").addEventListener("change", scheduleSearch);
  const emergency = document.getElementById("emergency");
  emergency.addEventListener("change", () => {
    document.getElementById("break-glass-label").hidden = !emergency.checked;
    const purpose = document.getElementById("purpose");
    const wanted = emergency.checked ? "ETREAT" : "TREAT";
    if ([...purpose.options].some((o) => o.value === wanted)) purpose.value = wanted;
  });
  document.getElementById("show-consents").addEventListener("click", () => openConsents());
  document.getElementById("consent-form").addEventListener("submit", recordConsent);
  document.getElementById("consent-kind").addEventListener("change", consentKindChanged);
  document.getElementById("consent-expires").min = tomorrowInChina();
  consentKindChanged();
  // The panel belongs to the patient it was opened for: another patient closes it.
  for (const id of ["patient", "id-system"]) {
    document.getElementById(id).addEventListener("input", () => {
      if (!consentShown(enteredPatient())) closeConsents();
    });
  }
  startSession(ready);
});
