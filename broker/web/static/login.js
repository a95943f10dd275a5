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
