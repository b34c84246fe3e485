// backfilld web UI: progressive enhancements only; every page works without this script.
(function () {
  "use strict";

  // Times that are not a date at midnight UTC: shown in the browser's zone, UTC on hover.
  function localize(root) {
    root.querySelectorAll("time.local[datetime]").forEach(function (t) {
      var iso = t.getAttribute("datetime");
      var d = new Date(iso);
      if (isNaN(d.getTime())) return;
      var pad = function (n) { return String(n).padStart(2, "0"); };
      t.textContent = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) +
        " " + pad(d.getHours()) + ":" + pad(d.getMinutes());
      t.title = iso.replace("T", " ").replace("Z", " UTC");
    });
  }
  localize(document);

  // Live pages: while #live is active, fetch the same page every few seconds and swap the
  // region in, unless the user is typing in it (the scroll position stays where it is).
  var live = document.getElementById("live");
  if (live) {
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden || live.dataset.active !== "1") return;
      var a = document.activeElement;
      if (a && live.contains(a) && a.matches("input, textarea, select")) return;
      busy = true;
      fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
          if (!fresh) return;
          live.replaceChildren.apply(live, Array.from(fresh.childNodes));
          live.dataset.active = fresh.dataset.active;
          localize(live);
        })
        .catch(function () {})
        .finally(function () { busy = false; });
    }, 5000);
  }

  // The create form: the end may not be before the start; the tasks a pattern matches.
  var start = document.getElementById("start");
  var end = document.getElementById("end");
  if (start && end) {
    var order = function () {
      var ok = !start.value || !end.value || end.value.slice(0, 10) >= start.value.slice(0, 10);
      end.setCustomValidity(ok ? "" : "The last date is before the first date.");
    };
    start.addEventListener("input", order);
    end.addEventListener("input", order);
    order();
  }
  var tasks = document.getElementById("tasks");
  var dag = document.getElementById("dag_id");
  var out = document.getElementById("task-matches");
  if (tasks && dag && out) {
    var timer = null;
    var look = function () {
      if (!tasks.value.trim() || !dag.value) { out.textContent = ""; return; }
      var q = "tasks?dag_id=" + encodeURIComponent(dag.value) + "&tasks=" + encodeURIComponent(tasks.value);
      fetch(q, { credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (j) {
          out.classList.toggle("bad", !!j.error);
          out.textContent = j.error ? j.error : "Matches: " + j.matched.join(", ");
        })
        .catch(function () { out.textContent = ""; });
    };
    var later = function () { clearTimeout(timer); timer = setTimeout(look, 300); };
    tasks.addEventListener("input", later);
    dag.addEventListener("change", later);
    look();
  }
})();
