// linkgate Link SDK: connects or reconnects an integrated account from the
// application's front end. It speaks the message protocol of Truto's Link
// SDK, so either SDK works against linkgate.
//
//   import { authenticate } from "https://gateway.example.com/connect-account/sdk.js";
//   button.onclick = () => authenticate(linkToken, { baseUrl: "https://gateway.example.com" })
//     .then((r) => console.log(r.integrated_account_id))   // {result: "success", integration, integrated_account_id}
//     .catch((e) => console.log(e));                        // "closed", "blocked" or {result: "error", error, error_type}
//
// Call authenticate synchronously from a click handler, or the browser
// blocks the popup.

const SDK_PATH = "/connect-account/sdk.js";

// defaultBaseUrl is where this file was loaded from, less its own path.
function defaultBaseUrl() {
  const u = new URL(import.meta.url);
  const path = u.pathname.endsWith(SDK_PATH) ? u.pathname.slice(0, -SDK_PATH.length) : "";
  return u.origin + path;
}

function connectUrl(linkToken, options) {
  const base = String(options.baseUrl || defaultBaseUrl()).replace(/\/+$/, "");
  const url = new URL(base + "/connect-account");
  url.searchParams.set("link_token", linkToken);
  if (options.integration) {
    url.searchParams.set("integration", options.integration);
  }
  return { url, origin: new URL(base).origin };
}

// settle returns a message listener that accepts only a linkgate (Truto)
// message from source on exactly origin; the first one settles.
function listen(origin, source, settle) {
  const onMessage = (event) => {
    if (event.origin !== origin || event.source !== source()) {
      return;
    }
    const data = event.data;
    if (!data || typeof data !== "object" || data.is_truto !== true) {
      return;
    }
    settle(data);
  };
  window.addEventListener("message", onMessage);
  return () => window.removeEventListener("message", onMessage);
}

function viaPopup(url, origin) {
  return new Promise((resolve, reject) => {
    const width = 520;
    const height = 720;
    const left = Math.max(0, Math.round(window.screenX + (window.outerWidth - width) / 2));
    const top = Math.max(0, Math.round(window.screenY + (window.outerHeight - height) / 2));
    const popup = window.open(url.toString(), "linkgate-connect",
      `popup=yes,width=${width},height=${height},left=${left},top=${top}`);
    if (!popup) {
      reject("blocked");
      return;
    }
    let done = false;
    let unlisten = () => {};
    const timer = setInterval(() => {
      if (popup.closed) {
        finish(reject, "closed");
      }
    }, 400);
    function finish(fn, value) {
      if (done) {
        return;
      }
      done = true;
      clearInterval(timer);
      unlisten();
      fn(value);
    }
    unlisten = listen(origin, () => popup, (data) => {
      try {
        popup.close();
      } catch (e) {
        // Already gone.
      }
      finish(data.result === "success" ? resolve : reject, data);
    });
  });
}

function viaIframe(url, origin) {
  return new Promise((resolve, reject) => {
    url.searchParams.set("iframe", "true");
    const overlay = document.createElement("div");
    overlay.setAttribute("data-linkgate-overlay", "");
    Object.assign(overlay.style, {
      position: "fixed", inset: "0", zIndex: "2147483647", display: "flex",
      alignItems: "center", justifyContent: "center", background: "rgba(0,0,0,0.45)",
    });
    const box = document.createElement("div");
    Object.assign(box.style, {
      position: "relative", width: "min(480px, 100vw)", height: "min(680px, 100vh)",
      background: "#fff", borderRadius: "12px", overflow: "hidden",
    });
    const frame = document.createElement("iframe");
    frame.src = url.toString();
    frame.title = "Connect account";
    frame.referrerPolicy = "no-referrer";
    Object.assign(frame.style, { width: "100%", height: "100%", border: "0" });
    const close = document.createElement("button");
    close.type = "button";
    close.textContent = "\u00d7";
    close.setAttribute("aria-label", "Close");
    Object.assign(close.style, {
      position: "absolute", top: "4px", right: "8px", border: "0", background: "transparent",
      fontSize: "24px", cursor: "pointer", lineHeight: "1",
    });
    box.append(frame, close);
    overlay.append(box);

    let done = false;
    function finish(fn, value) {
      if (done) {
        return;
      }
      done = true;
      unlisten();
      document.removeEventListener("keydown", onKey);
      overlay.remove();
      fn(value);
    }
    function onKey(e) {
      if (e.key === "Escape") {
        finish(reject, "closed");
      }
    }
    const unlisten = listen(origin, () => frame.contentWindow, (data) => {
      finish(data.result === "success" ? resolve : reject, data);
    });
    close.addEventListener("click", () => finish(reject, "closed"));
    document.addEventListener("keydown", onKey);
    document.body.append(overlay);
  });
}

// authenticate opens the connect page for linkToken and settles with its
// result. options: baseUrl (linkgate's public URL; default where this file
// was loaded from), iframe (show it in an overlay frame), sameWindow
// (navigate this window; the page returns to the link token's redirect_uri),
// integration (must match the link token's).
export function authenticate(linkToken, options = {}) {
  const { url, origin } = connectUrl(linkToken, options);
  if (options.sameWindow) {
    window.location.assign(url.toString());
    return new Promise(() => {});
  }
  if (options.iframe) {
    return viaIframe(url, origin);
  }
  return viaPopup(url, origin);
}

export default authenticate;
