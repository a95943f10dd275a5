// The administration page: hospitals, QC certifications (expiry warnings), the unmapped-
// code worklist, API tokens, users and roles, the identity review queue and the item
// catalog, each shown only to the roles the API grants it (the API's 403 stays the real
// guard). Every change goes through the API, which audits it, with the session's CSRF
// header (session.js).
"use strict";

const WARN_DAYS = 30;  // a certification expiring within this many days is flagged
const state = { hospitals: {}, catalog: [] };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined && v !== false) node.setAttribute(k, String(v));
  }
  node.append(...children.map((c) => (c instanceof Node ? c : document.createTextNode(c))));
  return node;
}

const hospitalName = (id) => (state.hospitals[id] ? `${state.hospitals[id].name} (${id})` : id);

function shanghaiDay(date = new Date()) {
  return new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Shanghai" }).format(date);
}

function localTime(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString("zh-CN", { timeZone: "Asia/Shanghai", hour12: false });
}

function daysBetween(fromDay, toDay) {
  const utc = (d) => Date.UTC(Number(d.slice(0, 4)), Number(d.slice(5, 7)) - 1, Number(d.slice(8, 10)));
  return Math.round((utc(toDay) - utc(fromDay)) / 86400000);
}

function say(text) {
  document.getElementById("status").textContent = text;
  document.getElementById("error").textContent = "";
}

function fail(err) {
  document.getElementById("error").textContent = err.message;
}

function emptyRow(body, columns) {
  if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: columns }, "暂无 None")));
}

// -- hospitals and certifications ------------------------------------------------------

async function loadHospitals() {
  const hospitals = await api("/api/v1/admin/hospitals");
  state.hospitals = Object.fromEntries(hospitals.map((h) => [h.id, h]));
  const ownership = { public: "公立 public", private: "民营 private" };
  document.querySelector("#hospitals tbody").replaceChildren(...hospitals.map((h) =>
    el("tr", { "data-hospital": h.id },
      el("th", { scope: "row" }, h.name), el("td", {}, h.id),
      el("td", {}, `${h.level}级${h.grade || ""}`),
      el("td", {}, ownership[h.ownership] || h.ownership), el("td", {}, h.region),
      el("td", {}, h.alliances.join("、") || "—"), el("td", {}, h.price_tier || "—"),
      el("td", {}, h.timezone),
      el("td", { class: "keys" }, ...keyList(h.keys || [])),
      ...(session.claims.role === "platform-admin" ? [editCell(h)] : []))));
  certifications(hospitals);
  const select = document.getElementById("cert-hospital");
  select.replaceChildren(...hospitals.map((h) => el("option", { value: h.id }, `${h.name} (${h.id})`)));
}

const HOSPITAL_FIELDS = {
  "h-id": "id", "h-name": "name", "h-region": "region", "h-level": "level", "h-grade": "grade",
  "h-ownership": "ownership", "h-price-tier": "price_tier", "h-timezone": "timezone",
};

function editCell(h) {
  const button = el("button", { type: "button", class: "edit" }, "编辑 Edit");
  button.addEventListener("click", () => {
    for (const [id, key] of Object.entries(HOSPITAL_FIELDS)) {
      document.getElementById(id).value = h[key] || "";
    }
    document.getElementById("h-alliances").value = h.alliances.join(", ");
    document.getElementById("hospital-form").scrollIntoView();
    document.getElementById("h-name").focus();
  });
  return el("td", {}, button);
}

// Create or update (PUT): alliances are replaced by those given (platform-admin).
async function saveHospital(event) {
  event.preventDefault();
  const body = {};
  for (const [id, key] of Object.entries(HOSPITAL_FIELDS)) {
    body[key] = document.getElementById(id).value.trim() || null;
  }
  body.ownership = body.ownership || "public";
  body.alliances = document.getElementById("h-alliances").value.split(/[,，、\s]+/)
    .filter(Boolean);
  await api(`/api/v1/admin/hospitals/${encodeURIComponent(body.id)}`, {
    method: "PUT", body: JSON.stringify(body),
  });
  say(`已保存 Saved ${body.name} (${body.id})`);
  await loadHospitals();
}

function keyList(keys) {
  if (keys.length === 0) return ["无 none"];
  return [el("ul", { class: "plain" }, ...keys.map((k) => el("li", { class: k.revoked_at ? "revoked" : "" },
    el("code", {}, k.key_id), " ",
    k.revoked_at ? `已吊销 revoked ${localTime(k.revoked_at)}` : `自 since ${localTime(k.added_at)}`)))];
}

function certifications(hospitals) {
  const today = shanghaiDay();
  const rows = [];
  let expiring = 0, expired = 0;
  for (const h of hospitals) {
    for (const c of h.certifications) {
      const left = daysBetween(today, c.valid_to);
      let status, cls;
      if (left < 0) {
        expired += 1;
        [status, cls] = [`已过期 Expired ${-left} 天 days ago`, "expired"];
      } else if (left <= WARN_DAYS) {
        expiring += 1;
        [status, cls] = [`${left} 天后到期 Expires in ${left} days`, "expiring"];
      } else if (c.valid_from > today) {
        [status, cls] = ["未生效 Not yet valid", "pending"];
      } else {
        [status, cls] = ["有效 Valid", "valid"];
      }
      rows.push({ h, c, left, status, cls });
    }
  }
  rows.sort((a, b) => a.left - b.left);  // the most urgent first
  document.querySelector("#certs tbody").replaceChildren(...rows.map(({ h, c, status, cls }) =>
    el("tr", { class: `cert ${cls}`, "data-hospital": h.id, "data-scope": c.scope },
      el("th", { scope: "row" }, hospitalName(h.id)), el("td", {}, c.scope),
      el("td", {}, c.body), el("td", {}, `${c.valid_from} – ${c.valid_to}`),
      el("td", { class: "cert-status" }, status))));
  emptyRow(document.querySelector("#certs tbody"), 5);
  const warnings = document.getElementById("cert-warnings");
  warnings.className = expiring || expired ? "warning" : "muted";
  warnings.textContent = expiring || expired
    ? `⚠ ${expiring} 项认证将在 ${WARN_DAYS} 天内到期，${expired} 项已过期：到期后其结果不再被互认。` +
      ` ${expiring} expiring within ${WARN_DAYS} days, ${expired} expired: results after` +
      " expiry are no longer recognised."
    : `无 ${WARN_DAYS} 天内到期的认证 No certification expires within ${WARN_DAYS} days`;
}

async function certify(event) {
  event.preventDefault();
  const hospital = document.getElementById("cert-hospital").value;
  const value = (id) => document.getElementById(id).value.trim();
  await api(`/api/v1/admin/hospitals/${encodeURIComponent(hospital)}/certifications`, {
    method: "POST",
    body: JSON.stringify({
      scope: value("cert-scope"), body: value("cert-body"), valid_from: value("cert-from"),
      valid_to: value("cert-to"), reference: value("cert-reference") || null,
    }),
  });
  say(`已登记 Recorded: ${hospitalName(hospital)} ${value("cert-scope")}`);
  await loadHospitals();
}

// -- the unmapped-code worklist ----------------------------------------------------------

async function loadUnmapped() {
  const own = session.claims.hospital;
  const query = own ? `?${new URLSearchParams({ hospital: own })}` : "";
  const rows = await api(`/api/v1/admin/mappings/unmapped${query}`);
  const body = document.querySelector("#unmapped tbody");
  body.replaceChildren(...rows.map((u, i) => {
    const input = el("input", { list: "catalog-codes", required: true, maxlength: 64,
      id: `map-${i}`, "aria-label": `目录代码 Catalog code for ${u.code}` });
    const form = el("form", { class: "map-form" }, input, el("button", { type: "submit" }, "映射 Map"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      map(u, input.value.trim()).catch(fail);
    });
    return el("tr", { "data-code": u.code },
      el("th", { scope: "row" }, hospitalName(u.hospital)), el("td", {}, u.system),
      el("td", {}, u.code), el("td", {}, u.display || ""), el("td", {}, String(u.occurrences)),
      el("td", {}, localTime(u.last_seen)), el("td", {}, form));
  }));
  emptyRow(body, 7);
}

async function map(u, catalogCode) {
  const done = await api("/api/v1/admin/mappings", {
    method: "POST",
    body: JSON.stringify({ hospital: u.hospital, system: u.system, code: u.code,
      catalog_code: catalogCode }),
  });
  say(`已映射 Mapped ${u.code} → ${catalogCode}（${done.results_covered} 条结果 results）`);
  await loadUnmapped();
}

// -- API tokens --------------------------------------------------------------------------

async function loadTokens() {
  const params = new URLSearchParams();
  if (session.claims.hospital) params.set("hospital", session.claims.hospital);
  if (document.getElementById("tokens-live").checked) params.set("live", "true");
  const tokens = await api(`/api/v1/admin/tokens?${params}`);
  const now = new Date();
  const body = document.querySelector("#tokens tbody");
  body.replaceChildren(...tokens.map((t) => {
    const live = !t.revoked_at && new Date(t.expires_at) > now;
    const status = t.revoked_at
      ? `已吊销 Revoked ${localTime(t.revoked_at)}（${t.reason || ""}）`
      : live ? "有效 Live" : "已过期 Expired";
    const action = el("td", {});
    if (live) {
      const reason = el("input", { maxlength: 200, required: true, placeholder: "原因 Reason",
        "aria-label": `吊销原因 Reason to revoke ${t.subject}` });
      const form = el("form", { class: "revoke-form" }, reason,
        el("button", { type: "submit" }, "吊销 Revoke"));
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        revoke(t, reason.value.trim()).catch(fail);
      });
      action.append(form);
    }
    return el("tr", { "data-jti": t.jti },
      el("th", { scope: "row" }, t.subject), el("td", {}, t.role),
      el("td", {}, t.hospital === "*" ? "全平台 all" : hospitalName(t.hospital)),
      el("td", {}, t.kind), el("td", {}, localTime(t.issued_at)),
      el("td", {}, localTime(t.expires_at)), el("td", {}, status), action);
  }));
  emptyRow(body, 8);
}

async function revoke(token, reason) {
  await api("/api/v1/admin/tokens/revoke", {
    method: "POST", body: JSON.stringify({ jti: token.jti, reason }),
  });
  say(`已吊销 Revoked the token of ${token.subject}`);
  await loadTokens();
}

// -- users and roles (security-admin: everyone; a hospital admin: their own people) -------

const ROLES = {
  doctor: "医生 Doctor",
  finance: "财务 Finance",
  admin: "医院管理员 Hospital admin",
  "platform-admin": "系统管理员 Platform admin",
  "security-admin": "安全管理员 Security admin",
  audit: "审计管理员 Auditor",
  qc: "质控 QC",
  "platform-finance": "平台财务 Platform finance",
};
const PLATFORM_ROLES = ["platform-admin", "security-admin", "audit", "qc", "platform-finance"];
const roleName = (role) => ROLES[role] || role;
const scopeName = (hospital) => (hospital === "*" ? "全平台 All hospitals" : hospitalName(hospital));

function personState(p) {
  if (p.disabled_at) return `已停用 Disabled ${localTime(p.disabled_at)}`;
  if (p.locked_until && new Date(p.locked_until) > new Date()) {
    return `已锁定至 Locked until ${localTime(p.locked_until)}`;
  }
  return "启用 Enabled";
}

function disableForm(label, onReason) {
  const reason = el("input", { maxlength: 200, required: true, placeholder: "原因 Reason",
    "aria-label": `停用原因 Reason to disable ${label}` });
  const form = el("form", { class: "disable-form" }, reason,
    el("button", { type: "submit" }, "停用 Disable"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    onReason(reason.value.trim()).catch(fail);
  });
  return form;
}

function resetButton(username) {
  const button = el("button", { type: "button", class: "reset" }, "重设密码 Reset password");
  button.addEventListener("click", () => {
    document.getElementById("reset-username").value = username;
    document.getElementById("reset-form").scrollIntoView();
    document.getElementById("reset-password").focus();
  });
  return button;
}

function fillSelects() {
  for (const select of document.querySelectorAll("select.role-select")) {
    if (select.options.length) continue;
    select.replaceChildren(...Object.entries(ROLES).map(([value, label]) =>
      el("option", { value }, label)));
  }
  for (const select of document.querySelectorAll("select.hospital-select")) {
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, "— 平台角色 Platform role (all)"),
      ...Object.values(state.hospitals).map((h) => el("option", { value: h.id }, `${h.name} (${h.id})`)));
    select.value = chosen;
  }
}

async function loadPeople() {
  fillSelects();
  const params = new URLSearchParams();
  if (document.getElementById("people-enabled").checked) params.set("enabled", "true");
  const people = await api(`/api/v1/admin/users?${params}`);
  const rows = [];
  for (const a of people.accounts) {
    const action = el("td", {}, resetButton(a.username));
    if (a.enabled) {
      action.prepend(disableForm(a.username, (reason) => disable(
        `/api/v1/admin/users/accounts/${encodeURIComponent(a.username)}/disable`, { reason }, a.username)));
    }
    rows.push(el("tr", { class: a.enabled ? "person" : "person muted", "data-username": a.username },
      el("th", { scope: "row" }, a.username), el("td", {}, a.display_name || "—"),
      el("td", {}, "本地账户 Local account"), el("td", {}, roleName(a.role)),
      el("td", {}, scopeName(a.hospital)), el("td", { class: "state" }, personState(a)), action));
  }
  for (const u of people.mapped) {
    const label = `${u.subject} @ ${u.issuer}`;
    const action = el("td", {});
    if (u.enabled) {
      action.append(disableForm(u.subject, (reason) => disable("/api/v1/admin/users/oidc/disable",
        { issuer: u.issuer, subject: u.subject, reason }, label)));
    }
    rows.push(el("tr", { class: u.enabled ? "person" : "person muted", "data-subject": u.subject },
      el("th", { scope: "row" }, u.subject, el("br"), el("small", { class: "muted" }, u.issuer)),
      el("td", {}, u.display_name || "—"), el("td", {}, "统一身份 OpenID Connect"),
      el("td", {}, roleName(u.role)), el("td", {}, scopeName(u.hospital)),
      el("td", { class: "state" }, personState(u)), action));
  }
  const body = document.querySelector("#people tbody");
  body.replaceChildren(...rows);
  emptyRow(body, 7);
  document.getElementById("local-usernames").replaceChildren(...people.accounts.map((a) =>
    el("option", { value: a.username }, a.display_name || a.username)));
}

async function disable(path, body, label) {
  const done = await api(path, { method: "POST", body: JSON.stringify(body) });
  say(done.changed ? `已停用 Disabled ${label}` : `${label} 已是停用状态 was disabled already`);
  await loadPeople();
}

// Two password fields that must agree; the password is never shown, logged or kept.
function newPassword(first, second) {
  const a = document.getElementById(first);
  const b = document.getElementById(second);
  const password = a.value;
  const same = password === b.value;
  a.value = "";
  b.value = "";
  if (!same) throw new Error("两次输入的密码不一致 The two passwords differ");
  return password;
}

// The person fields shared by adding an account and mapping a person.
function grant(prefix) {
  const role = document.getElementById(`${prefix}-role`).value;
  const hospital = document.getElementById(`${prefix}-hospital`).value || null;
  if (PLATFORM_ROLES.includes(role) && hospital) {
    throw new Error(`${roleName(role)} 是平台角色，不选医院 is a platform role: choose no hospital`);
  }
  const name = document.getElementById(`${prefix}-name`).value.trim();
  return { role, hospital, display_name: name || null };
}

async function addAccount(event) {
  event.preventDefault();
  const username = document.getElementById("acct-username").value.trim();
  const body = { username, ...grant("acct"), password: newPassword("acct-password", "acct-password2") };
  const added = await api("/api/v1/admin/users/accounts", { method: "POST", body: JSON.stringify(body) });
  event.target.reset();
  say(`已添加账户 Added ${added.username}: ${roleName(added.role)}, ${scopeName(added.hospital)}`);
  await loadPeople();
}

async function resetPassword(event) {
  event.preventDefault();
  const username = document.getElementById("reset-username").value.trim();
  const enable = document.getElementById("reset-enable").checked;
  const password = newPassword("reset-password", "reset-password2");
  const done = await api(`/api/v1/admin/users/accounts/${encodeURIComponent(username)}/password`, {
    method: "POST", body: JSON.stringify({ password, enable }),
  });
  event.target.reset();
  say(`已为 ${done.username} 设置新密码，其会话已结束 New password set for ${done.username}; ` +
    `its sessions ended${done.enabled ? "" : "（仍停用 still disabled）"}`);
  await loadPeople();
}

async function mapPerson(event) {
  event.preventDefault();
  const issuer = document.getElementById("map-issuer").value.trim() || null;
  const subject = document.getElementById("map-subject").value.trim();
  const body = { issuer, subject, ...grant("map") };
  const mapped = await api("/api/v1/admin/users/oidc", { method: "POST", body: JSON.stringify(body) });
  event.target.reset();
  say(`已映射 Mapped ${mapped.subject}: ${roleName(mapped.role)}, ${scopeName(mapped.hospital)}`);
  await loadPeople();
}

// -- the identity review queue (platform-admin) -----------------------------------------

const LEVELS = { exact: "一致 exact", homophone: "同音 homophone", different: "不同 different",
  missing: "缺失 missing" };

async function loadReviews() {
  const items = await api("/api/v1/admin/identity/reviews");
  const body = document.querySelector("#reviews tbody");
  body.replaceChildren(...items.map((r) => {
    const fields = r.fields.map((f) => `${f.field}: ${LEVELS[f.level] || f.level} (${f.weight})`)
      .join("; ");
    const buttons = el("td", {},
      el("button", { type: "button", class: "confirm" }, "确认同一人 Confirm"), " ",
      el("button", { type: "button", class: "reject" }, "不是同一人 Reject"));
    buttons.querySelector(".confirm").addEventListener("click", () => decide(r, "confirm").catch(fail));
    buttons.querySelector(".reject").addEventListener("click", () => decide(r, "reject").catch(fail));
    return el("tr", { class: "review", "data-review": r.review_id },
      el("th", { scope: "row" }, localTime(r.created_at)), el("td", {}, hospitalName(r.hospital)),
      el("td", {}, r.decision), el("td", {}, String(r.total)), el("td", {}, fields), buttons);
  }));
  emptyRow(body, 6);
}

async function decide(review, decision) {
  const done = await api(`/api/v1/admin/identity/reviews/${encodeURIComponent(review.review_id)}/decision`, {
    method: "POST", body: JSON.stringify({ decision }),
  });
  say(done.status === "confirmed" ? "已确认并关联 Confirmed and linked" : "已拒绝 Rejected");
  await loadReviews();
}

// -- the catalog -------------------------------------------------------------------------

async function loadCatalog(event) {
  if (event) event.preventDefault();
  const region = document.getElementById("catalog-region").value.trim();
  const query = region ? `?${new URLSearchParams({ region })}` : "";
  const catalog = await api(`/api/v1/admin/catalog${query}`);
  state.catalog = catalog.items;
  document.getElementById("catalog-codes").replaceChildren(...catalog.items.map((i) =>
    el("option", { value: i.code }, `${i.name.zh} ${i.name.en}`)));
  const find = document.getElementById("catalog-find").value.trim().toLowerCase();
  const shown = catalog.items.filter((i) => !find ||
    [i.code, i.name.zh, i.name.en, ...i.loinc].some((t) => t.toLowerCase().includes(find)));
  document.getElementById("catalog-summary").textContent =
    `目录版本 Catalog ${catalog.version}${region ? ` · 地区 region ${region}` : ""} · ` +
    `${shown.length} / ${catalog.items.length} 项 items · 负面清单 negative list: ` +
    `${catalog.negative_list.join(", ") || "—"}`;
  document.querySelector("#catalog tbody").replaceChildren(...shown.map((i) =>
    el("tr", { "data-code": i.code },
      el("th", { scope: "row" }, i.code), el("td", {}, `${i.name.zh} ${i.name.en}`),
      el("td", {}, i.category),
      el("td", {}, i.recognizable ? "是 yes" : "否 no"),
      el("td", {}, String(i.validity_days ?? "")), el("td", {}, i.qc_group || ""),
      el("td", {}, ["3", "2", "1"].map((t) => (i.fees[t] ? `¥${i.fees[t]}` : "—")).join(" / ")))));
}

// -- which sections, for whom ------------------------------------------------------------

const LOADERS = {
  "hospitals-section": loadHospitals,
  "unmapped-section": loadUnmapped,
  "tokens-section": loadTokens,
  "users-section": loadPeople,
  "identity-section": loadReviews,
  "catalog-section": loadCatalog,
};

async function ready(info) {
  const allowed = (node) => node.dataset.roles.split(" ").includes(info.role);
  const sections = [...document.querySelectorAll("main section[data-roles]")];
  for (const node of document.querySelectorAll("[data-roles]")) node.hidden = !allowed(node);
  const shown = sections.filter((s) => !s.hidden);
  document.getElementById("no-access").hidden = shown.length > 0;
  // Jump buttons, not #fragment links: nothing is ever put in the address bar.
  document.querySelector("#sections-nav ul").replaceChildren(...shown.map((s) => {
    const jump = el("button", { type: "button", class: "link" }, s.querySelector("h2").textContent);
    jump.addEventListener("click", () => s.scrollIntoView());
    return el("li", {}, jump);
  }));
  // Reference data first (names for the other sections), then the rest side by side.
  const loads = shown.map((s) => LOADERS[s.id]).filter(Boolean);
  if (loads.includes(loadHospitals)) await loadHospitals().catch(fail);
  await Promise.all(loads.filter((l) => l !== loadHospitals).map((l) => l().catch(fail)));
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("certify-form").addEventListener("submit", (e) => certify(e).catch(fail));
  document.getElementById("hospital-form").addEventListener("submit", (e) => saveHospital(e).catch(fail));
  document.getElementById("catalog-form").addEventListener("submit", (e) => loadCatalog(e).catch(fail));
  document.getElementById("tokens-live").addEventListener("change", () => loadTokens().catch(fail));
  document.getElementById("people-enabled").addEventListener("change", () => loadPeople().catch(fail));
  document.getElementById("account-form").addEventListener("submit", (e) => addAccount(e).catch(fail));
  document.getElementById("reset-form").addEventListener("submit", (e) => resetPassword(e).catch(fail));
  document.getElementById("map-form").addEventListener("submit", (e) => mapPerson(e).catch(fail));
  startSession(ready);
});
