// maintlink dashboard: small enhancements on pages that work without JavaScript.
//
// * Live parts: every element with data-live-part is refreshed from the same URL with
//   ?fragment=1 every few seconds, only while the tab is visible, and paused while a form
//   field (a search box) or something inside a live part has focus, so nothing moves under
//   the user's hands. On logs (data-live-mode="log"), when the reader has scrolled down,
//   new rows are announced with a "show" button instead of shifting the rows being read.
// * Copy buttons (data-copy) and read-only fields that select themselves on focus.
(function () {
  "use strict";

  var POLL_MS = 3000;
  var timer = null;
  var stopped = false;
  var inFlight = false;
  var pending = {};  // part name -> html waiting behind a "show new rows" button

  function announce(text) {
    var el = document.getElementById("live-announcer");
    if (el) { el.textContent = ""; window.setTimeout(function () { el.textContent = text; }, 50); }
  }

  function parts() { return document.querySelectorAll("[data-live-part]"); }

  function paused() {
    if (document.visibilityState !== "visible") return true;
    var active = document.activeElement;
    if (!active || active === document.body) return false;
    if (active.matches("input, select, textarea")) return true;
    return !!active.closest("[data-live-part]");
  }

  function fragmentUrl() {
    var url = new URL(window.location.href);
    url.hash = "";
    url.searchParams.delete("notice");
    url.searchParams.set("fragment", "1");
    return url.toString();
  }

  function rowIds(root) {
    var ids = new Set();
    root.querySelectorAll("tr[data-id]").forEach(function (tr) { ids.add(tr.getAttribute("data-id")); });
    return ids;
  }

  function statuses(root) {
    var out = {};
    root.querySelectorAll("[data-status]").forEach(function (el, i) {
      var row = el.closest("[data-id]");
      out[row ? row.getAttribute("data-id") : "#" + i] = el.textContent.trim();
    });
    return out;
  }

  function swap(current, html) {
    var open = [];
    current.querySelectorAll("details[id][open]").forEach(function (d) { open.push(d.id); });
    var before = statuses(current);
    current.innerHTML = html;
    open.forEach(function (id) { var d = document.getElementById(id); if (d) d.open = true; });
    var after = statuses(current);
    var changed = Object.keys(after).filter(function (k) { return k in before && before[k] !== after[k]; });
    if (changed.length) announce(changed.length === 1 ? "Status changed: " + after[changed[0]] : changed.length + " statuses changed");
    enhance(current);
  }

  function offerNew(current, name, html, count) {
    pending[name] = html;
    var bar = current.previousElementSibling;
    if (!bar || !bar.classList.contains("live-new")) {
      bar = document.createElement("p");
      bar.className = "live-new";
      bar.innerHTML = '<button type="button" class="button button-quiet"></button>';
      current.parentNode.insertBefore(bar, current);
      bar.querySelector("button").addEventListener("click", function () {
        if (pending[name] !== undefined) swap(current, pending[name]);
        delete pending[name];
        bar.remove();
      });
    }
    bar.querySelector("button").textContent = count + " new — show";
  }

  function apply(doc) {
    doc.querySelectorAll("[data-live-part]").forEach(function (fresh) {
      var name = fresh.getAttribute("data-live-part");
      var current = document.querySelector('[data-live-part="' + name + '"]');
      if (!current) return;
      var html = fresh.innerHTML;
      if (current.getAttribute("data-html") === html) return;
      current.setAttribute("data-html", html);
      if (current.getAttribute("data-live-mode") === "log" && window.scrollY > 120) {
        var known = rowIds(current);
        var added = 0;
        rowIds(fresh).forEach(function (id) { if (!known.has(id)) added += 1; });
        if (added) { offerNew(current, name, html, added); return; }
      }
      var bar = current.previousElementSibling;
      if (bar && bar.classList.contains("live-new")) bar.remove();
      delete pending[name];
      swap(current, html);
    });
  }

  function signedOut() {
    stopped = true;
    var main = document.getElementById("main");
    if (!main || document.getElementById("signed-out")) return;
    var p = document.createElement("p");
    p.id = "signed-out";
    p.className = "notice notice-warn";
    p.setAttribute("role", "alert");
    p.innerHTML = 'Your session ended, so this page no longer updates. <a href="/dashboard/login">Sign in again</a>.';
    main.insertBefore(p, main.firstChild);
  }

  function tick() {
    timer = null;
    if (stopped) return;
    if (paused() || inFlight) { schedule(); return; }
    inFlight = true;
    fetch(fragmentUrl(), { credentials: "same-origin", cache: "no-store", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.status === 401) { signedOut(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (text) {
        if (text === null || text === undefined || paused()) return;
        var template = document.createElement("template");
        template.innerHTML = text;
        apply(template.content);
      })
      .catch(function () { /* offline for a moment: try again next tick */ })
      .then(function () { inFlight = false; schedule(); });
  }

  function schedule() {
    if (!stopped && timer === null) timer = window.setTimeout(tick, POLL_MS);
  }

  function enhance(root) {
    if (navigator.clipboard) {
      root.querySelectorAll("button[data-copy]").forEach(function (b) { b.hidden = false; });
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button || !navigator.clipboard) return;
    navigator.clipboard.writeText(button.getAttribute("data-copy")).then(function () {
      var label = button.firstChild;
      var old = label.textContent;
      label.textContent = "Copied";
      announce("Copied");
      window.setTimeout(function () { label.textContent = old; }, 1500);
    });
  });

  document.addEventListener("focusin", function (event) {
    if (event.target.matches && event.target.matches("[data-select-on-focus]")) event.target.select();
  });

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && timer !== null) {
      window.clearTimeout(timer);
      timer = null;
      tick();
    }
  });

  function start() {
    enhance(document);
    if (parts().length) {
      parts().forEach(function (p) { p.setAttribute("data-html", p.innerHTML); });
      schedule();
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
