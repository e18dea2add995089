/* maintlink Connect embed script, for the developer's own pages.

     <script src="https://maintlink.example.com/static/maintlink-connect.js"></script>
     <script>
       button.addEventListener("click", function () {
         MaintlinkConnect.open({
           url: linkTokenUrl,                   // the `url` of POST /api/v1/link-tokens
           onSuccess: function (code, meta) {}, // send `code` to your backend to exchange
           onExit: function (info) {},          // info.reason: cancelled | closed | link_expired ...
           onEvent: function (event) {}         // optional: open, search, submit, ... (no secrets)
         });
       });
     </script>

   Opens the flow in a full-screen modal iframe. Only messages from the flow's own origin
   and from that very iframe are believed. The modal is a labelled dialog: focus moves into
   it, stays in it, and returns to where it was; Escape closes it. The link token must have
   been created with `allowed_origin` set to this page's origin. */
(function (global) {
  "use strict";

  var doc = global.document;
  var openDialog = null;

  function style(element, rules) {
    Object.keys(rules).forEach(function (key) { element.style[key] = rules[key]; });
  }

  function open(options) {
    if (!options || !options.url) {
      throw new Error("MaintlinkConnect.open: `url` (the link token's url) is required");
    }
    if (openDialog) { openDialog.close(); }
    var target = new URL(options.url, global.location.href);
    var origin = target.origin;
    target.searchParams.set("embed", "1");
    var returnFocus = doc.activeElement;
    var label = options.title || "Connect your maintenance system";

    var overlay = doc.createElement("div");
    style(overlay, {
      position: "fixed", inset: "0", zIndex: "2147483647", background: "rgba(15,18,24,0.6)",
      display: "flex", alignItems: "center", justifyContent: "center"
    });
    var dialog = doc.createElement("div");
    dialog.setAttribute("role", "dialog");
    dialog.setAttribute("aria-modal", "true");
    dialog.setAttribute("aria-label", label);
    var small = global.matchMedia && global.matchMedia("(max-width: 600px)").matches;
    style(dialog, {
      display: "flex", flexDirection: "column", background: "#fff", overflow: "hidden",
      width: small ? "100%" : "min(560px, 96vw)", height: small ? "100%" : "min(760px, 94vh)",
      borderRadius: small ? "0" : "12px", boxShadow: "0 12px 40px rgba(0,0,0,0.35)"
    });
    // A bar of its own for the close button, so it never covers the flow's content.
    var bar = doc.createElement("div");
    style(bar, {
      display: "flex", justifyContent: "flex-end", alignItems: "center", flex: "0 0 auto",
      padding: "2px 4px", background: "#f4f5f7", borderBottom: "1px solid #d5d9e0"
    });
    var close = doc.createElement("button");
    close.type = "button";
    close.textContent = "Close";
    close.setAttribute("aria-label", "Close the connection window");
    style(close, {
      minWidth: "44px", minHeight: "44px", padding: "0 12px", border: "1px solid #9aa1ad",
      borderRadius: "8px", background: "#fff", color: "#1c1f24", font: "inherit",
      fontSize: "15px", cursor: "pointer"
    });
    var frame = doc.createElement("iframe");
    frame.src = target.href;
    frame.title = label;
    frame.setAttribute("referrerpolicy", "no-referrer");
    style(frame, { border: "0", width: "100%", flex: "1 1 auto", display: "block" });

    // Sentinels keep Tab inside the dialog: leaving either end wraps to the other.
    var before = doc.createElement("span");
    var after = doc.createElement("span");
    before.tabIndex = 0;
    after.tabIndex = 0;
    before.addEventListener("focus", function () { frame.focus(); });
    after.addEventListener("focus", function () { close.focus(); });

    bar.appendChild(close);
    dialog.appendChild(bar);
    dialog.appendChild(frame);
    overlay.appendChild(before);
    overlay.appendChild(dialog);
    overlay.appendChild(after);

    var overflow = doc.body.style.overflow;
    var finished = false;

    function finish(kind, payload) {
      if (finished) { return; }
      finished = true;
      global.removeEventListener("message", onMessage);
      doc.removeEventListener("keydown", onKey, true);
      if (overlay.parentNode) { overlay.parentNode.removeChild(overlay); }
      doc.body.style.overflow = overflow;
      openDialog = null;
      if (returnFocus && typeof returnFocus.focus === "function") { returnFocus.focus(); }
      if (kind === "success") {
        if (options.onSuccess) { options.onSuccess(payload.code, { integration: payload.integration }); }
      } else if (options.onExit) {
        options.onExit({ reason: payload.reason || "closed" });
      }
    }

    function onMessage(event) {
      if (event.origin !== origin || event.source !== frame.contentWindow) { return; }
      var data = event.data;
      if (!data || typeof data.type !== "string") { return; }
      if (data.type === "maintlink:success" && typeof data.code === "string") {
        finish("success", data);
      } else if (data.type === "maintlink:exit") {
        finish("exit", { reason: typeof data.reason === "string" ? data.reason : "cancelled" });
      } else if (data.type === "maintlink:event" && options.onEvent) {
        options.onEvent(data);
      }
    }

    function onKey(event) {
      if (event.key === "Escape") {
        event.preventDefault();
        finish("exit", { reason: "closed" });
      }
    }

    close.addEventListener("click", function () { finish("exit", { reason: "closed" }); });
    global.addEventListener("message", onMessage);
    doc.addEventListener("keydown", onKey, true);
    doc.body.style.overflow = "hidden";
    doc.body.appendChild(overlay);
    frame.addEventListener("load", function () { frame.focus(); });
    close.focus();

    openDialog = { close: function () { finish("exit", { reason: "closed" }); } };
    return openDialog;
  }

  global.MaintlinkConnect = { open: open, version: "1" };
})(window);
