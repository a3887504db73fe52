/*
 * Flywheel rating widget. No dependencies; see "Rating widget" in README.md.
 *
 *   <script src="https://HOST/static/flywheel/widget.js" data-key="fw_pk_..." async></script>
 *
 * Every element with data-flywheel-interaction="<interaction id>" gets a rating bar right after
 * it, drawn in a shadow root so that the host page's CSS cannot reach it. Ratings are written
 * to localStorage before they are sent and removed once the server took them, so a rating made
 * offline, or while the page was closing, is sent on the `online` event or the next page load.
 */
(() => {
  "use strict";

  const preloaded = window.Flywheel;
  if (preloaded && preloaded.rate) return; // the script is on the page twice

  // `async` scripts may run with currentScript null: find the tag by what it carries.
  const script =
    document.currentScript || document.querySelector("script[data-key][src*='flywheel/widget']");
  const config = (script && script.dataset) || {};
  // The API lives on the server that serves this file: static/flywheel/widget.js -> api/v1/ratings
  const endpoint =
    config.endpoint || (script ? new URL("../../api/v1/ratings", script.src).href : "");

  const QUEUE = "flywheel:queue";
  const ANONYMOUS_RATER = "flywheel:rater";
  const MAX_QUEUED = 100;
  const DEFAULT_RETRY_SECONDS = 30;
  const MESSAGES = {
    sent: "Thanks \u2014 rating sent",
    added: "Thanks \u2014 feedback added",
    offline: "Saved offline, will send when back online",
    retry: "Saved, will send again shortly",
  };

  // localStorage can be missing or full (private modes, sandboxed frames): keep the queue in
  // memory then, which still covers a connection that drops while the page stays open.
  const memory = {};
  const memoryStore = {
    getItem: (name) => (name in memory ? memory[name] : null),
    setItem: (name, value) => {
      memory[name] = value;
    },
  };
  let store = memoryStore;
  try {
    localStorage.getItem(QUEUE);
    store = localStorage;
  } catch {}

  const read = (name, fallback) => {
    try {
      return JSON.parse(store.getItem(name)) || fallback;
    } catch {
      return fallback;
    }
  };
  const write = (name, value) => {
    try {
      store.setItem(name, JSON.stringify(value));
    } catch {
      store = memoryStore;
      store.setItem(name, JSON.stringify(value));
    }
  };

  const randomId = () =>
    Array.from(crypto.getRandomValues(new Uint8Array(16)), (byte) =>
      byte.toString(16).padStart(2, "0"),
    ).join("");

  let raterOverride = config.raterId || "";
  const currentRater = () => {
    if (raterOverride) return raterOverride;
    let anonymous = read(ANONYMOUS_RATER, "");
    if (!anonymous) write(ANONYMOUS_RATER, (anonymous = "anonymous-" + randomId()));
    return anonymous;
  };

  const queued = () => {
    const items = read(QUEUE, []);
    return Array.isArray(items) ? items : [];
  };
  const dequeue = (id) => write(QUEUE, queued().filter((item) => item.id !== id));

  // Outcome callbacks of this page's ratings, by queue item id.
  const listeners = new Map();
  const FINAL = { sent: 1, refused: 1 };
  const notify = (item, result) => {
    const listener = listeners.get(item.id);
    if (!listener) return;
    if (FINAL[result.outcome]) listeners.delete(item.id);
    listener(result);
  };

  const serverAnswers = (url) =>
    fetch(url, { mode: "no-cors", cache: "no-store" }).then(
      () => true,
      () => false,
    );

  async function post(item) {
    let response;
    try {
      response = await fetch(item.url, {
        method: "POST",
        headers: { Authorization: "Bearer " + item.key, "Content-Type": "application/json" },
        body: JSON.stringify(item.body),
      });
    } catch {
      // A refused CORS preflight fails exactly like a lost connection. If the server answers a
      // request that needs no CORS, it is there and refused this page's origin: not worth
      // keeping. A server that is down or unreachable gets the rating later.
      return navigator.onLine && (await serverAnswers(item.url))
        ? {
            outcome: "refused",
            code: "origin_not_allowed",
            message: "this site may not send ratings (origin not allowed)",
          }
        : { outcome: "offline" };
    }
    const payload = await response.json().catch(() => ({}));
    if (response.ok) return { outcome: "sent", ratings: payload.ratings };
    if (response.status === 429 || response.status >= 500) {
      const seconds = Number(response.headers.get("Retry-After"));
      return { outcome: "retry", after: seconds > 0 ? seconds : DEFAULT_RETRY_SECONDS };
    }
    const error = payload.error || {};
    return {
      outcome: "refused",
      status: response.status,
      code: error.code,
      message: error.message || "the server answered " + response.status,
    };
  }

  let retryTimer = 0;
  async function deliverQueued() {
    for (let item; (item = queued()[0]); ) {
      const result = navigator.onLine === false ? { outcome: "offline" } : await post(item);
      if (!FINAL[result.outcome]) {
        // Offline, the `online` event brings us back; a server that is down does not.
        if (result.outcome === "retry" || navigator.onLine) {
          clearTimeout(retryTimer);
          retryTimer = setTimeout(flush, (result.after || DEFAULT_RETRY_SECONDS) * 1000);
        }
        queued().forEach((waiting) => notify(waiting, result));
        return;
      }
      dequeue(item.id);
      notify(item, result);
    }
    // Another tab, holding the lock before us, delivered the ratings made here.
    for (const [id, listener] of listeners) {
      listeners.delete(id);
      listener({ outcome: "sent" });
    }
  }

  let flushing = false;
  let flushAgain = false;
  async function flush() {
    if (flushing) {
      flushAgain = true;
      return;
    }
    flushing = true;
    try {
      do {
        flushAgain = false;
        // One sender across this site's tabs, so that a queued rating is not sent twice.
        await (navigator.locks
          ? navigator.locks.request("flywheel-ratings", deliverQueued)
          : deliverQueued());
      } while (flushAgain);
    } finally {
      flushing = false;
    }
  }

  const RATING_FIELDS = ["thumb", "score", "comment", "correction", "tags"];

  // Resolves with {status: "sent", ratings} or {status: "queued"}; rejects with an Error
  // carrying the server's `status` and `code` when the rating is refused.
  function submitRating(rating, onOutcome) {
    return new Promise((resolve, reject) => {
      const report = (result) => {
        if (onOutcome) onOutcome(result);
        if (result.outcome === "refused" || result.outcome === "invalid") {
          reject(Object.assign(new Error(result.message), result));
        } else {
          const status = result.outcome === "sent" ? "sent" : "queued";
          resolve({ status, ratings: result.ratings });
        }
      };
      rating = rating || {};
      if (!rating.interactionId) {
        return report({ outcome: "invalid", message: "The rating needs an interactionId." });
      }
      if (!(rating.thumb || rating.score || rating.comment || rating.correction)) {
        return report({
          outcome: "invalid",
          message: "Choose thumbs up or down, or write a comment or a better answer.",
        });
      }
      const body = { interaction_id: String(rating.interactionId), rater_id: currentRater() };
      for (const field of RATING_FIELDS) {
        if (rating[field] != null && rating[field] !== "") body[field] = rating[field];
      }
      const item = { id: randomId(), url: endpoint, key: config.key || "", body };
      listeners.set(item.id, report);
      write(QUEUE, [...queued(), item].slice(-MAX_QUEUED));
      flush();
    });
  }

  const STYLE = `
:host{all:initial!important;display:block!important;margin:.25em 0!important;
font:13px/1.4 system-ui,sans-serif!important;color:var(--flywheel-text,#1f2328)!important}
*{box-sizing:border-box;font:inherit;color:inherit}
.bar{display:flex;flex-wrap:wrap;gap:.25em;align-items:center}
.bar span{color:#59636e}
button{cursor:pointer;display:inline-flex;align-items:center;padding:.2em .45em;
border:1px solid #d1d9e0;border-radius:6px;background:#fff;color:#1f2328}
button[aria-pressed=true],button[type=submit]{background:var(--flywheel-accent,#0969da);
border-color:var(--flywheel-accent,#0969da);color:#fff}
svg{width:1.15em;height:1.15em;fill:none;stroke:currentColor;stroke-width:2;
stroke-linecap:round;stroke-linejoin:round}
p{margin:0 0 0 .25em;color:#59636e}
form{display:grid;gap:.4em;max-width:40em;margin-top:.4em}
form[hidden]{display:none}
.row{display:flex;gap:.4em;align-items:end}
label{display:grid;gap:.2em;flex:1}
input,textarea{width:100%;padding:.3em .5em;border:1px solid #8c959f;border-radius:6px;
background:#fff;color:#1f2328}
summary{cursor:pointer;width:fit-content;color:#59636e}
details label{margin-top:.4em}
:focus-visible{outline:2px solid var(--flywheel-accent,#0969da);outline-offset:2px}
p.error{color:#cf222e}`;

  const h = (tag, attributes, ...children) => {
    const node = document.createElement(tag);
    for (const name in attributes) node.setAttribute(name, attributes[name]);
    node.append(...children);
    return node;
  };

  // Feather's thumbs-up (MIT), turned over for thumbs-down. Drawn, not emoji: a system
  // without an emoji font shows emoji as empty boxes.
  const THUMB =
    "M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.28a2 2 0 0 0 2-1.7l1.38-9a2 2 0 0 0-2-2.3z" +
    "M7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3";
  const thumbIcon = (turned) => {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    const path = document.createElementNS(svg.namespaceURI, "path");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    path.setAttribute("d", THUMB);
    if (turned) path.setAttribute("transform", "rotate(180 12 12)");
    svg.append(path);
    return svg;
  };

  // One line under the answer: a click on a thumb sends the rating at once. The comment and a
  // better answer are optional follow-ups, sent as the same rater's new rating of the same
  // answer, which replaces the first on the server rather than adding a second.
  function ratingBar(answer) {
    const host = document.createElement("flywheel-rating");
    const root = host.attachShadow({ mode: "open" });
    const thumbButton = (value, label) =>
      h(
        "button",
        { type: "button", "aria-pressed": "false", "aria-label": label, title: label, value },
        thumbIcon(value === "down"),
      );
    const thumbs = [thumbButton("up", "Helpful"), thumbButton("down", "Not helpful")];
    const status = h("p", { role: "status", "aria-live": "polite" });
    const comment = h("input", { type: "text", maxlength: "5000" });
    const correction = h("textarea", { rows: "4", maxlength: "20000" });
    const followUp = h(
      "form",
      { hidden: "" },
      h(
        "div",
        { class: "row" },
        h("label", {}, "Comment (optional)", comment),
        h("button", { type: "submit" }, "Send feedback"),
      ),
      h(
        "details",
        {},
        h("summary", {}, "Suggest a better answer"),
        h("label", {}, "A better answer", correction),
      ),
    );
    const style = document.createElement("style");
    style.textContent = STYLE;
    root.append(
      style,
      h(
        "div",
        { class: "bar", role: "group", "aria-labelledby": "question" },
        h("span", { id: "question" }, "Was this answer helpful?"),
        ...thumbs,
        status,
      ),
      followUp,
    );

    // What the server holds for this rater: every send repeats all of it, since a new rating
    // replaces the old one whole.
    const sent = { thumb: "", comment: "", correction: "" };
    const send = (fields, sentMessage) => {
      Object.assign(sent, fields);
      return submitRating(
        // Read now: the page may have pointed the element at another interaction.
        { interactionId: answer.getAttribute("data-flywheel-interaction"), ...sent },
        ({ outcome, message }) => {
          const text = outcome === "sent" ? sentMessage : MESSAGES[outcome];
          status.className = text ? "" : "error";
          status.textContent =
            text || (outcome === "invalid" ? message : "Could not send the rating: " + message);
        },
      ).catch(() => {}); // shown in the status line
    };

    for (const button of thumbs) {
      button.addEventListener("click", () => {
        if (sent.thumb === button.value) return;
        for (const other of thumbs) other.setAttribute("aria-pressed", other === button);
        followUp.hidden = false;
        send({ thumb: button.value }, MESSAGES.sent);
      });
    }
    let sending = false;
    followUp.addEventListener("submit", (event) => {
      event.preventDefault();
      if (sending) return;
      sending = true;
      send(
        { comment: comment.value.trim(), correction: correction.value.trim() },
        MESSAGES.added,
      ).finally(() => {
        sending = false;
      });
    });
    return host;
  }

  // Answer element -> its rating bar; a bar goes when its answer leaves the page or stops
  // being one.
  const bars = new Map();
  function scan() {
    for (const [answer, bar] of bars) {
      if (!answer.isConnected || !answer.hasAttribute("data-flywheel-interaction")) {
        bar.remove();
        bars.delete(answer);
      }
    }
    for (const answer of document.querySelectorAll("[data-flywheel-interaction]")) {
      if (!bars.has(answer)) {
        const bar = ratingBar(answer);
        bars.set(answer, bar);
        answer.after(bar);
      }
    }
  }

  const api = {
    rate: (rating) => submitRating(rating),
    scan,
    setRater: (id) => {
      raterOverride = id ? String(id) : "";
    },
    flush,
  };
  window.Flywheel = api;
  // Calls queued before this script loaded: Flywheel.q.push(["rate", {...}]).
  for (const [method, ...args] of (preloaded && preloaded.q) || []) {
    if (api[method]) Promise.resolve(api[method](...args)).catch(() => {});
  }

  new MutationObserver(scan).observe(document.documentElement, {
    childList: true,
    subtree: true,
    attributes: true,
    attributeFilter: ["data-flywheel-interaction"],
  });
  scan();
  addEventListener("online", flush);
  flush();
})();
