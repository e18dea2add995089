/* The hosted connection flow's enhancements. Every page works without this file; it adds:
   the picker's live search, the "Verifying with {system}..." state, the OAuth popup when
   embedded (an authorization page usually refuses to be framed), and postMessage to the
   embedding page. Messages go to the link token's allowed origin only, never to "*", and
   carry no secret except the one-time code on success. */
(function () {
  "use strict";

  var body = document.body;
  var embedded = body.dataset.embed === "1" && window.parent !== window;
  // The OAuth popup an embedded flow opened (its pages may be reloaded or retried).
  var inPopup = window.name === "maintlink_oauth" || body.dataset.popup === "1";
  var origin = body.dataset.origin || "";

  function toParent(message) {
    if (embedded && origin) {
      window.parent.postMessage(message, origin);
    }
  }

  function emit(name, extra) {
    var message = { type: "maintlink:event", name: name, step: body.dataset.step || null };
    if (extra) {
      Object.keys(extra).forEach(function (key) { message[key] = extra[key]; });
    }
    toParent(message);
  }

  emit("open", body.dataset.errorCode ? { error_code: body.dataset.errorCode } : null);

  // Cancel and "Return to ..." links: in a frame, tell the embedding page instead.
  Array.prototype.forEach.call(document.querySelectorAll("[data-action=exit]"), function (a) {
    a.addEventListener("click", function (event) {
      if (!embedded) { return; }
      event.preventDefault();
      toParent({ type: "maintlink:exit", reason: body.dataset.errorCode || "cancelled" });
    });
  });
  document.addEventListener("keydown", function (event) {
    if (embedded && event.key === "Escape") {
      toParent({ type: "maintlink:exit", reason: "closed" });
    }
  });

  // Picker: filter as the customer types (the form still searches server-side without JS).
  var search = document.querySelector("[data-filter]");
  if (search) {
    var list = document.getElementById(search.getAttribute("aria-controls"));
    var count = document.getElementById("systems-count");
    var none = document.getElementById("no-match");
    var items = list ? Array.prototype.slice.call(list.querySelectorAll("li")) : [];
    var timer = null;
    search.addEventListener("input", function () {
      var query = search.value.trim().toLowerCase();
      var shown = 0;
      items.forEach(function (item) {
        var match = !query || (item.dataset.name || "").indexOf(query) !== -1;
        item.hidden = !match;
        if (match) { shown += 1; }
      });
      if (none) { none.hidden = shown !== 0; }
      // Announce the count once typing pauses, not on every key.
      clearTimeout(timer);
      timer = setTimeout(function () {
        if (count) {
          count.textContent = query
            ? shown + " of " + items.length + " match \u201c" + search.value.trim() + "\u201d"
            : items.length + (items.length === 1 ? " system" : " systems");
        }
        emit("search", { results: shown });
      }, 300);
    });
  }

  // Credentials form: a visible, announced "verifying" state; no double submission.
  var form = document.getElementById("connect-form");
  if (form) {
    var status = document.getElementById("status");
    var button = form.querySelector("button[type=submit]");
    var system = form.dataset.system || "the system";
    var oauth = form.dataset.oauth === "1";

    var summary = document.getElementById("error-summary");
    if (summary && !summary.hidden) { summary.focus(); }

    var setBusy = function (busy, text) {
      form.dataset.busy = busy ? "1" : "";
      form.setAttribute("aria-busy", busy ? "true" : "false");
      button.setAttribute("aria-disabled", busy ? "true" : "false");
      status.textContent = text || "";
    };

    form.addEventListener("submit", function (event) {
      if (form.dataset.busy === "1") { event.preventDefault(); return; }
      emit("submit");
      if (inPopup) { form.elements.popup.value = "1"; }
      if (oauth && embedded) {
        // Opened in the click's own task, or Safari blocks it.
        var popup = window.open("", "maintlink_oauth", "popup,width=520,height=720");
        if (popup) {
          form.target = "maintlink_oauth";
          form.elements.popup.value = "1";
          setBusy(true, "Sign in to " + system + " in the new window\u2026");
          watchPopup(popup);
          return;
        }
        form.target = "";
        form.elements.popup.value = "0";
        status.textContent = "Your browser blocked the sign-in window; continuing here.";
      }
      setBusy(true, oauth ? "Opening " + system + " sign-in\u2026" : "Verifying with " + system + "\u2026");
    });

    // The popup's pages are ours at the start and the end only; the server knows when the
    // flow finished, so ask it rather than relying on window.opener (which a provider's
    // Cross-Origin-Opener-Policy may sever).
    var watchPopup = function (popup) {
      var closedSeen = false;
      var poll = setInterval(function () {
        fetch(form.dataset.statusUrl, { cache: "no-store", credentials: "omit" })
          .then(function (response) { return response.json(); })
          .then(function (state) {
            if (state.status === "used") {
              clearInterval(poll);
              window.location.replace(form.dataset.successUrl);
            } else if (state.status !== "open") {
              clearInterval(poll);
              window.location.reload();
            }
          })
          .catch(function () { /* next tick */ });
        if (popup.closed && !closedSeen) {
          closedSeen = true;
          emit("oauth_window_closed");
          setBusy(false, "");
          form.target = "";
          form.elements.popup.value = "0";
          status.textContent = "The sign-in window was closed. If you finished signing in, " +
            "this page continues by itself; otherwise press the button to try again.";
        }
      }, 1500);
    };
  }

  // Success: hand the code to the embedding page, or return to the application.
  var result = document.getElementById("result");
  if (result) {
    var code = result.dataset.code;
    if (inPopup) {
      setTimeout(function () { window.close(); }, 800);
    } else if (embedded) {
      if (code) {
        toParent({ type: "maintlink:success", code: code, integration: result.dataset.integration });
      } else {
        toParent({ type: "maintlink:exit", reason: "already_completed" });
      }
    } else {
      var next = document.getElementById("continue");
      if (next) {
        setTimeout(function () { window.location.replace(next.href); }, 1200);
      }
    }
  }
})();
