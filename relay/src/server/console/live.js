// The relay console's one script: keeps the page current without a reload. A new bundle
// (an event on the watch channel, the same one consoles and agents follow) or a 10 s poll
// fetches the page again and swaps its <main> for the fresh one. The browser sends the
// credentials it already holds for this relay; nothing is fetched from anywhere else.
(function () {
  "use strict";
  var busy = false;
  function refresh() {
    if (busy) { return; }
    busy = true;
    // location.origin: never the page's URL itself, which may carry user:password@ (fetch
    // refuses such a URL); the browser sends the credentials it holds for this origin.
    fetch(location.origin + location.pathname, { cache: "no-store", credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("main");
        var old = document.querySelector("main");
        if (fresh && old) {
          old.replaceWith(fresh);
          document.body.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () { /* the next poll tries again */ })
      .finally(function () { busy = false; });
  }
  if (window.EventSource) {
    var watch = new EventSource(location.origin + "/api/v1/feeds/watch");
    watch.addEventListener("bundle", refresh);
  }
  setInterval(refresh, 10000);
})();
