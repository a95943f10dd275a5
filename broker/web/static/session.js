// Signing in on mrb's pages: the token comes from the link's fragment (never sent to a
// server) or the sign-in box, stays in this tab (sessionStorage), and goes with every
// API call. A 401 asks to sign in again.
"use strict";

const session = { token: null, claims: null };

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: {
      Authorization: `Bearer ${session.token}`,
      "content-type": "application/json",
      ...(options.headers || {}),
    },
  });
  if (response.status === 401) {
    sessionStorage.removeItem("mrb-token");
    showLogin();
    throw new Error("请重新登录 Sign in again");
  }
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new Error(`${problem.title || response.status}: ${problem.detail || ""}`);
  }
  return response.status === 204 ? null : response.json();
}

function decodeToken(jwt) {
  const part = (jwt.split(".")[1] || "").replace(/-/g, "+").replace(/_/g, "/");
  const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

function showLogin() {
  document.getElementById("login").hidden = false;
  document.getElementById("app").hidden = true;
}

async function signIn(token, onReady) {
  try {
    session.claims = decodeToken(token);
  } catch {
    document.getElementById("who").textContent = "令牌无效 Invalid token";
    return showLogin();
  }
  session.token = token;
  sessionStorage.setItem("mrb-token", token);
  const c = session.claims;
  document.getElementById("who").textContent = `${c.sub} · ${c.role} · ${c.hospital}`;
  document.getElementById("login").hidden = true;
  document.getElementById("app").hidden = false;
  await onReady();
}

// Call once the page is loaded: signs in from the link or the tab, else shows the box.
function startSession(onReady) {
  document.getElementById("signin").addEventListener("click", () =>
    signIn(document.getElementById("token").value.trim(), onReady));
  const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromLink) history.replaceState(null, "", location.pathname);
  const saved = fromLink || sessionStorage.getItem("mrb-token");
  if (saved) {
    signIn(saved, onReady).catch((e) => { document.getElementById("who").textContent = e.message; });
  } else {
    showLogin();
  }
}
