// The login page: once signed in, go to the page of the user's role (no "next" URL
// parameter: nothing from the address bar decides where a signed-in user is sent).
"use strict";

const PAGES = {
  doctor: "/doctor",
  finance: "/finance",
  "platform-finance": "/finance",
  admin: "/admin",
  "platform-admin": "/admin",
  "security-admin": "/admin",
  qc: "/admin",
};

document.addEventListener("DOMContentLoaded", () => {
  // The OpenID Connect issuer's sign-in, when one is configured: a plain link (the issuer
  // and back are top-level navigations).
  fetch("/auth/methods", { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : null))
    .then((methods) => {
      if (!methods || !methods.oidc_issuer || !methods.oidc_start) return;
      const host = new URL(methods.oidc_issuer).host;
      document.getElementById("oidc-issuer").textContent = host;
      document.getElementById("oidc-issuer-en").textContent = host;
      document.getElementById("oidc-start").href = methods.oidc_start;
      document.getElementById("oidc").hidden = false;
    })
    .catch(() => null);
  startSession((info) => {
    const page = PAGES[info.role];
    if (page) {
      location.assign(page);
    } else {
      document.getElementById("landing").textContent =
        `已登录；${info.role} 角色暂无网页 Signed in; no page for the ${info.role} role yet`;
    }
  });
});
