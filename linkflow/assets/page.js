// linkgate connect page: tells the application how the connection ended,
// with the message protocol of Truto's Link SDK.
(function () {
  "use strict";
  var close = document.getElementById("close");
  if (close) {
    close.addEventListener("click", function () { window.close(); });
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
