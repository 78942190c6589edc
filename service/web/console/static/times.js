// Times in the reader's own time zone: every <time datetime> the server wrote in UTC is shown in
// the browser's zone and language, including those in fragments the live updates put in later.
(function () {
  "use strict";
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
    timeZoneName: "short"
  });

  function localise(root) {
    var els = root.querySelectorAll ? root.querySelectorAll("time[datetime]:not([data-local])") : [];
    for (var i = 0; i < els.length; i++) {
      var at = new Date(els[i].getAttribute("datetime"));
      if (isNaN(at.getTime())) { continue; }
      els[i].title = els[i].textContent; // the UTC text stays at hand
      els[i].textContent = format.format(at);
      els[i].setAttribute("data-local", "");
    }
  }

  function start() {
    localise(document);
    new MutationObserver(function (changes) {
      for (var i = 0; i < changes.length; i++) {
        for (var j = 0; j < changes[i].addedNodes.length; j++) { localise(changes[i].addedNodes[j]); }
      }
    }).observe(document.body, { childList: true, subtree: true });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
