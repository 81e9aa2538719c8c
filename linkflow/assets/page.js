// linkgate connect page: tells the application how the connection ended,
// with the message protocol of Truto's Link SDK.
(function () {
  "use strict";
  // A window can close itself only when a script opened it (a popup of
  // the Link SDK); in a tab opened from an e-mail the button would do
  // nothing, so it is shown only in a popup.
  var close = document.getElementById("close");
  if (close && window.opener && !window.opener.closed) {
    close.hidden = false;
    close.addEventListener("click", function () { window.close(); });
  }
  // The server marks a page opened from an origin it may not post to; the
  // mark is kept for the rest of this window's visit (sessionStorage
  // survives the provider's sign-in, on this origin), so the result page
  // can tell the end user that the application will not hear of it.
  var key = "linkgate-unreachable-opener";
  try {
    if (document.body.dataset.unreachable) {
      sessionStorage.setItem(key, document.body.dataset.unreachable);
    }
  } catch (e) {
    // Storage may be off; the note is then shown on fewer pages.
  }
  var el = document.getElementById("linkgate-result");
  if (!el) {
    return;
  }
  var cfg;
  try {
    cfg = JSON.parse(el.textContent);
  } catch (e) {
    return;
  }
  // A popup posts to its opener, a frame to its parent; a page opened on
  // its own (same-window mode) goes back to the application instead.
  var target = window.opener || (window.parent !== window ? window.parent : null);
  if (target) {
    var refused = null;
    try {
      refused = sessionStorage.getItem(key);
    } catch (e) {
      refused = null;
    }
    var note = document.getElementById("unreachable-note");
    if (note && (refused || !(cfg.targets || []).length)) {
      note.hidden = false;
    }
    (cfg.targets || []).forEach(function (origin) {
      try {
        target.postMessage(cfg.message, origin);
      } catch (e) {
        // An origin that cannot be a target is skipped.
      }
    });
  } else if (cfg.redirect) {
    window.location.replace(cfg.redirect);
  }
})();
