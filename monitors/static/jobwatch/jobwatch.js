// Jobwatch in the browser: draws the plotly charts the server describes, and polls the parts of
// a page that change. Loaded as a file (the Content Security Policy allows no inline script).
(function () {
  "use strict";

  // Charts: <div data-chart="ID"> drawn from <script type="application/json" id="ID">.
  function drawCharts(root) {
    if (!window.Plotly) return;
    root.querySelectorAll("[data-chart]").forEach(function (element) {
      var source = document.getElementById(element.dataset.chart);
      if (!source) return;
      var figure = JSON.parse(source.textContent);
      window.Plotly.react(element, figure.data, figure.layout, {displaylogo: false, responsive: true,
        modeBarButtonsToRemove: ["select2d", "lasso2d", "toImage"]});
    });
  }

  // Polling: an element with data-poll="5" (and hx-get, hx-trigger="jobwatch:poll") refreshes
  // every 5 s while the tab is visible, every 6 × that while hidden, and not while the operator
  // is typing or choosing inside it.
  var HIDDEN_FACTOR = 6;
  var lastPolled = new WeakMap();
  function poll() {
    var now = Date.now();
    document.querySelectorAll("[data-poll]").forEach(function (element) {
      var every = parseFloat(element.dataset.poll) * 1000 * (document.hidden ? HIDDEN_FACTOR : 1);
      var last = lastPolled.get(element) || now;
      if (!lastPolled.has(element)) lastPolled.set(element, now);
      if (now - last < every) return;
      if (element.contains(document.activeElement) && document.activeElement !== document.body) return;
      if (element.querySelector("input:checked")) return;  // a selection in progress survives
      lastPolled.set(element, now);
      window.htmx.trigger(element, "jobwatch:poll");
    });
  }

  // A poll that fails says so once at the top of the page, and clears when one succeeds.
  function liveStatus(ok, text) {
    var banner = document.getElementById("live-status");
    if (!banner) return;
    banner.hidden = ok;
    if (!ok) banner.textContent = text;
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts(document);
    if (!window.htmx) return;
    document.body.addEventListener("htmx:afterSettle", function (event) { drawCharts(event.target); });
    document.body.addEventListener("htmx:afterRequest", function (event) {
      var failed = event.detail.failed || !event.detail.xhr || event.detail.xhr.status === 0;
      if (failed) {
        var status = event.detail.xhr ? event.detail.xhr.status : 0;
        liveStatus(false, status ? "Live updates failed (HTTP " + status + "); showing the last data received."
                                 : "Jobwatch is unreachable; showing the last data received.");
      } else {
        liveStatus(true);
      }
    });
    setInterval(poll, 1000);
  });
})();
