// Lockdown console: the incident page follows the incident live. The
// server renders the page body on every change of the incident's document
// and sends it as a server-sent event; this swaps it in. No reload, no
// framework, no build step.
(function () {
  "use strict";
  var root = document.getElementById("incident");
  var live = document.getElementById("live");
  if (!root || !window.EventSource) { return; }
  var updates = 0;
  var source = new EventSource(root.dataset.events);
  source.addEventListener("open", function () { live.textContent = "live: updates as they happen"; });
  source.addEventListener("incident", function (e) {
    root.innerHTML = e.data;
    updates++;
    document.body.dataset.updates = String(updates);
    live.textContent = "live: updated " + new Date().toLocaleTimeString();
  });
  source.addEventListener("closed", function () {
    source.close();
    live.textContent = "the incident is closed: this page is final";
  });
  source.addEventListener("problem", function (e) { live.textContent = "live updates stopped: " + e.data; });
  source.addEventListener("error", function () {
    // EventSource reconnects by itself (a console restart, a network blip).
    if (source.readyState !== EventSource.CLOSED) { live.textContent = "reconnecting…"; }
  });
})();
