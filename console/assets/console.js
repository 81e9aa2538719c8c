// linkgate console: the copy button and confirmation dialogs. Everything
// works without this file; it only adds convenience.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  // Copy buttons: shown only when the script runs, since they need it.
  document.querySelectorAll("button[data-copy]").forEach(function (btn) {
    var target = document.getElementById(btn.getAttribute("data-copy"));
    if (!target) return;
    btn.hidden = false;
    btn.addEventListener("click", function () {
      var done = function () {
        btn.textContent = "Copied";
        btn.setAttribute("aria-live", "polite");
        setTimeout(function () { btn.textContent = "Copy"; }, 2000);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(target.value).then(done, function () {
          target.select();
          document.execCommand("copy");
          done();
        });
      } else {
        target.select();
        document.execCommand("copy");
        done();
      }
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
