// headway web UI: keeps a page current without a reload. Every 3 s while the
// tab is visible, the page is fetched again and #main replaced when it changed,
// unless the admin is typing in one of its forms. Pages that show something
// once (a new key) say data-live="off". These refreshes do not count as use: a
// session still ends after an hour without a click, and then the page shows the
// sign-in. Without JavaScript, pages simply stay.
(function () {
  "use strict";
  var main = document.getElementById("main");
  if (!main || main.getAttribute("data-live") !== "on") return;
  var busy = false;
  var last = main.innerHTML;
  function editing() {
    var a = document.activeElement;
    if (a && main.contains(a) && /^(INPUT|TEXTAREA|SELECT)$/.test(a.tagName)) return true;
    return main.querySelector("form[data-dirty]") !== null;
  }
  main.addEventListener("input", function (e) {
    var form = e.target.closest && e.target.closest("form");
    if (form) form.setAttribute("data-dirty", "1");
  });
  function tick() {
    if (busy || document.hidden || editing()) return;
    busy = true;
    fetch(location.href, { credentials: "same-origin", headers: { "X-Headway-Live": "1" } })
      .then(function (r) {
        // Signed out or idle too long: show the sign-in page.
        if (r.redirected) { location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (text) {
        if (text === null || editing()) return;
        var next = new DOMParser().parseFromString(text, "text/html").getElementById("main");
        if (next && next.innerHTML !== last) {
          main.innerHTML = next.innerHTML;
          last = main.innerHTML;
        }
      })
      .catch(function () {})
      .then(function () { busy = false; });
  }
  setInterval(tick, 3000);
})();
