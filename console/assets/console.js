// linkgate console: the copy button and confirmation dialogs. Everything
// works without this file; it only adds convenience.
"use strict";

// Marks that the script runs, so that the phone layout may collapse the
// menu and the filters behind buttons only the script can open.
document.documentElement.classList.add("js");

// copyText puts text on the clipboard; the fallback copies from a
// temporary field, for plain-http consoles where the Clipboard API is off.
function copyText(text, done) {
  var fallback = function () {
    var field = document.createElement("textarea");
    field.value = text;
    field.setAttribute("readonly", "");
    field.className = "sr-only";
    document.body.append(field);
    field.select();
    document.execCommand("copy");
    field.remove();
    done();
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, fallback);
  } else {
    fallback();
  }
}

document.addEventListener("DOMContentLoaded", function () {
  // Copy buttons: shown only when the script runs, since they need it.
  // data-copy names a field to copy; data-copy-text holds the text.
  document.querySelectorAll("button[data-copy], button[data-copy-text]").forEach(function (btn) {
    var label = btn.textContent;
    var text = function () {
      if (btn.hasAttribute("data-copy-text")) return btn.getAttribute("data-copy-text");
      var field = document.getElementById(btn.getAttribute("data-copy"));
      return field ? field.value : "";
    };
    btn.hidden = false;
    btn.addEventListener("click", function () {
      copyText(text(), function () {
        btn.textContent = "Copied";
        btn.setAttribute("aria-live", "polite");
        setTimeout(function () { btn.textContent = label; }, 2000);
      });
    });
  });

  // Toggles open and close what they control (the menu and the filters
  // on a phone); without the script everything stays open.
  document.querySelectorAll("button[data-toggle]").forEach(function (btn) {
    var panel = document.getElementById(btn.getAttribute("data-toggle"));
    if (!panel) return;
    btn.hidden = false;
    btn.addEventListener("click", function () {
      var open = btn.getAttribute("aria-expanded") !== "true";
      btn.setAttribute("aria-expanded", open ? "true" : "false");
      panel.classList.toggle("open", open);
    });
  });

  // Read-only link fields select themselves on focus, for manual copying.
  document.querySelectorAll("input[readonly]").forEach(function (el) {
    el.addEventListener("focus", function () { el.select(); });
  });

  // Forms with data-confirm ask first, in a modal dialog (keyboard: Tab
  // moves between the buttons, Escape cancels).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (form.dataset.confirmed === "1" || typeof HTMLDialogElement !== "function") return;
      ev.preventDefault();
      var dlg = document.createElement("dialog");
      dlg.setAttribute("aria-labelledby", "confirm-text");
      var p = document.createElement("p");
      p.id = "confirm-text";
      p.textContent = form.getAttribute("data-confirm");
      var ok = document.createElement("button");
      ok.type = "button";
      ok.id = "confirm-ok";
      ok.textContent = "Continue";
      var cancel = document.createElement("button");
      cancel.type = "button";
      cancel.className = "secondary";
      cancel.textContent = "Cancel";
      var row = document.createElement("div");
      row.className = "dialog-actions";
      row.append(ok, cancel);
      dlg.append(p, row);
      document.body.append(dlg);
      var opener = document.activeElement;
      dlg.addEventListener("close", function () {
        dlg.remove();
        if (opener) opener.focus();
      });
      cancel.addEventListener("click", function () { dlg.close(); });
      ok.addEventListener("click", function () {
        form.dataset.confirmed = "1";
        dlg.close();
        form.requestSubmit();
      });
      dlg.showModal();
      ok.focus();
    });
  });
});
