// Signing in on mrb's pages: a username and password for a server-side session. The
// session id lives in an HttpOnly cookie no script can read; the CSRF token from the
// login answer goes with every API call that changes something. Nothing secret is ever
// put in a URL or in storage. A 401 asks to sign in again.
"use strict";

const session = { csrf: null, claims: null };
const SAFE = ["GET", "HEAD", "OPTIONS"];

async function problemText(response) {
  const problem = await response.json().catch(() => ({}));
  return `${problem.title || response.status}: ${problem.detail || ""}`;
}

// fetch with the session cookie and, for a change, the CSRF header; a 401 signs out.
async function call(path, options = {}) {
  const method = (options.method || "GET").toUpperCase();
  const headers = { ...(options.headers || {}) };
  if (!SAFE.includes(method)) headers["X-CSRF-Token"] = session.csrf || "";
  const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
  if (response.status === 401) {
    signedOut("会话已结束，请重新登录 Session ended, sign in again");
    throw new Error("请重新登录 Sign in again");
  }
  return response;
}

async function api(path, options = {}) {
  const response = await call(path, {
    ...options,
    headers: { "content-type": "application/json", ...(options.headers || {}) },
  });
  if (!response.ok) throw new Error(await problemText(response));
  return response.status === 204 ? null : response.json();
}

function signedOut(message) {
  session.csrf = null;
  session.claims = null;
  document.getElementById("who").textContent = "未登录 Not signed in";
  document.getElementById("logout").hidden = true;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("login").hidden = false;
  document.getElementById("app").hidden = true;
  document.getElementById("username").focus();
}

async function signedIn(info, onReady) {
  session.csrf = info.csrf_token;
  session.claims = { sub: info.username, role: info.role, hospital: info.hospital };
  const name = info.display_name ? `${info.display_name} (${info.username})` : info.username;
  document.getElementById("who").textContent =
    `${name} · ${info.role} · ${info.hospital || "全平台 all hospitals"}`;
  document.getElementById("logout").hidden = false;
  document.getElementById("login").hidden = true;
  document.getElementById("app").hidden = false;
  await onReady(info);
}

async function signIn(event, onReady) {
  event.preventDefault();
  const error = document.getElementById("login-error");
  error.textContent = "";
  const password = document.getElementById("password");
  const response = await fetch("/auth/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    credentials: "same-origin",
    body: JSON.stringify({
      username: document.getElementById("username").value.trim(),
      password: password.value,
    }),
  });
  password.value = "";
  if (!response.ok) {
    error.textContent = response.status === 401
      ? "用户名或密码错误，或账户已停用或锁定 Wrong username or password, or the account is disabled or locked"
      : await problemText(response);
    return;
  }
  await signedIn(await response.json(), onReady);
}

async function signOut() {
  await fetch("/auth/logout", {
    method: "POST",
    headers: { "X-CSRF-Token": session.csrf || "" },
    credentials: "same-origin",
  }).catch(() => null);
  signedOut("已退出 Signed out");
}

// Call once the page is loaded: resumes the browser's session, else shows the form.
function startSession(onReady) {
  document.getElementById("login-form").addEventListener("submit", (e) =>
    signIn(e, onReady).catch((err) => {
      document.getElementById("login-error").textContent = err.message;
    }));
  document.getElementById("logout").addEventListener("click", signOut);
  fetch("/auth/session", { credentials: "same-origin" })
    .then(async (response) => {
      if (response.ok) await signedIn(await response.json(), onReady);
      else signedOut("");
    })
    .catch((err) => signedOut(err.message));
}
