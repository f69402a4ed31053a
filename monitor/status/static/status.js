// foundry-monitor status page: local times, a light poll that swaps the live region, copy buttons.
// The page works without it: times read in UTC and a <noscript> refresh reloads it every minute.
(function () {
  "use strict";
  const fmt = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    timeZoneName: "short",
  });

  function localise(root) {
    for (const el of root.querySelectorAll("time[datetime]")) {
      const when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) el.textContent = fmt.format(when);
    }
  }

  function wireCopy(root) {
    for (const button of root.querySelectorAll("button[data-copy]")) {
      button.addEventListener("click", function () {
        const field = document.getElementById(button.dataset.copy);
        if (!field) return;
        field.select();
        const done = function () { button.textContent = "Copied"; };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(field.value).then(done, function () {});
        } else {
          done();
        }
      });
    }
  }

  let paused = false;
  const live = document.getElementById("live");
  const period = live ? Number(live.dataset.refresh || 15) * 1000 : 0;

  async function refresh() {
    // Never yank the page from under a reader: skip while hidden, or while focus or the pointer is inside.
    if (paused || document.hidden || !live) return;
    if (live.contains(document.activeElement) && document.activeElement !== document.body) return;
    if (live.matches(":hover")) return;
    try {
      const response = await fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } });
      if (!response.ok) return;
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = doc.getElementById("live");
      if (!fresh) return;
      live.innerHTML = fresh.innerHTML;
      localise(live);
      wireCopy(live);
      const stamp = document.getElementById("refresh-state");
      if (stamp) stamp.firstChild.textContent = "Live, updated " + fmt.format(new Date()) + ". ";
    } catch (e) {
      // A missed poll is retried at the next period.
    }
  }

  function wireRefresh() {
    const stamp = document.getElementById("refresh-state");
    if (!stamp || !period) return;
    stamp.textContent = "Live, updates every " + period / 1000 + " s. ";
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Pause";
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", function () {
      paused = !paused;
      button.textContent = paused ? "Resume" : "Pause";
      button.setAttribute("aria-pressed", String(paused));
    });
    stamp.appendChild(button);
    setInterval(refresh, period);
  }

  localise(document);
  wireCopy(document);
  wireRefresh();
})();
