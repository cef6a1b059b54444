// grainproof auditor's desk: small conveniences; every page works without this script.
"use strict";

// Times are rendered on the server: tell it this browser's zone (read on the next page; UTC until then).
(() => {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const current = document.cookie.split("; ").find((c) => c.startsWith("grainproof_tz="));
  if (zone && current !== `grainproof_tz=${encodeURIComponent(zone)}`) {
    document.cookie = `grainproof_tz=${encodeURIComponent(zone)}; path=/desk; max-age=31536000; samesite=lax`;
  }
})();

document.addEventListener("DOMContentLoaded", () => {
  // Whole queue rows open the lot, not just the lot id link.
  for (const row of document.querySelectorAll("tr[data-href]")) {
    row.addEventListener("click", (event) => {
      if (event.target.closest("a, button, input, select")) return;
      window.location.assign(row.dataset.href);
    });
  }

  // Only a lot confirmed genuine may join the reference: the checkbox follows the decision.
  const form = document.getElementById("review-form");
  if (form) {
    const promote = form.querySelector("input[name=promote_to_reference]");
    const genuine = new Set(["false_alarm", "confirmed_genuine"]);
    const sync = () => {
      const chosen = form.querySelector("input[name=decision]:checked");
      const allowed = chosen !== null && genuine.has(chosen.value);
      promote.disabled = !allowed;
      if (!allowed) promote.checked = false;
    };
    form.addEventListener("change", sync);
    sync();
  }
});
