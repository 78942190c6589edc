// Live updates for the console, with no framework: every element with data-poll is refreshed from
// that URL (an HTML fragment rendered by the server) every second while the fragment says a
// job is still running (data-live="true"). Served from the package; the page's CSP allows only
// scripts from this origin, so there is no inline script anywhere.
(function () {
  "use strict";
  var INTERVAL_MS = 1000;

  function isLive(el) {
    return el.querySelector('[data-live="true"]') !== null;
  }

  function poll(el) {
    var url = el.getAttribute("data-poll");
    fetch(url, { credentials: "same-origin", headers: { "X-Console-Fragment": "1" } })
      .then(function (response) {
        if (response.status >= 400 && response.status < 500) {
          return null; // signed out, or no longer allowed: stop; a reload shows why
        }
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var focused = document.activeElement && el.contains(document.activeElement);
        el.innerHTML = html;
        if (focused) { el.focus(); }
        if (isLive(el)) { window.setTimeout(function () { poll(el); }, INTERVAL_MS); }
      })
      .catch(function () {
        // The server is busy or restarting: try again a little later rather than give up.
        window.setTimeout(function () { poll(el); }, INTERVAL_MS * 3);
      });
  }

  function start() {
    var els = document.querySelectorAll("[data-poll]");
    for (var i = 0; i < els.length; i++) {
      if (isLive(els[i])) { window.setTimeout(poll.bind(null, els[i]), INTERVAL_MS); }
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
