// Airlock console: refreshes the pool table in place every second. The page works without
// it (reload to refresh). A refresh is skipped while a form in the table is being used,
// so a half-typed reason is never wiped.
"use strict";
(function () {
  const live = document.getElementById("pool-live");
  if (!live) { return; }
  const url = live.getAttribute("data-refresh");
  function busy() {
    if (live.contains(document.activeElement) && document.activeElement !== document.body) { return true; }
    for (const i of live.querySelectorAll("input[name=reason]")) { if (i.value !== "") { return true; } }
    return false;
  }
  async function refresh() {
    if (busy()) { return; }
    try {
      const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (r.redirected || r.status === 401 || r.status === 403) { window.location.assign("/console/login"); return; }
      if (!r.ok) { return; }
      const html = await r.text();
      if (!busy()) { live.innerHTML = html; live.setAttribute("data-refreshed", String(Date.now())); }
    } catch (e) { /* the broker is restarting: try again at the next tick */ }
  }
  setInterval(refresh, 1000);
})();
