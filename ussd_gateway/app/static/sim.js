// The web phone: a USSD dialog and an SMS inbox over this server's own endpoints.
// Plain JS, no build step, no third-party code. Server text is only ever set with
// textContent (never parsed as HTML).
"use strict";

(function () {
  const HOP_TIMEOUT_MS = 10000;
  const POLL_MS = 4000;
  const PUSH_POLL_MS = 1500;
  const $ = (id) => document.getElementById(id);

  // ---- state ---------------------------------------------------------------------------
  let session = null;      // {id, msisdn, code, language, seq, lastBody, open}
  let inFlight = false;
  const inbox = [];        // {msisdn, dir: "in"|"out"|"queued", peer, text, at}
  const queuedSeen = new Map();  // msisdn -> the last /sms/outbound snapshot (keys)
  let unread = 0;
  let traceCount = 0;

  // ---- helpers -------------------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function randomId() {
    const bytes = new Uint8Array(6);
    crypto.getRandomValues(bytes);
    return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // The inbox is keyed by subscriber; the server's rules decide what is valid.
  function msisdnKey(raw) {
    let n = String(raw).trim().replace(/[\s-]/g, "");
    if (n.startsWith("+")) n = n.slice(1);
    else if (n.startsWith("00")) n = n.slice(2);
    else if (n.startsWith("0")) n = "84" + n.slice(1);
    return n;
  }

  function currentMsisdn() { return $("msisdn").value.trim(); }
  function currentLanguage() { return $("language").value; }

  function remember() {
    try {
      localStorage.setItem("webphone.msisdn", currentMsisdn());
      localStorage.setItem("webphone.language", currentLanguage());
    } catch (e) { /* storage may be off: nothing to remember then */ }
  }

  function restore() {
    try {
      const m = localStorage.getItem("webphone.msisdn");
      const l = localStorage.getItem("webphone.language");
      if (m) $("msisdn").value = m;
      if (l && ["vi", "vi_dau", "en"].includes(l)) $("language").value = l;
    } catch (e) { /* ignore */ }
  }

  // One HTTP exchange, timed with performance.now(): {ok, status, data, error, ms}.
  async function exchange(method, url, body) {
    const started = performance.now();
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), HOP_TIMEOUT_MS);
    const init = { method, signal: controller.signal, credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      init.headers = { "Content-Type": "application/json" };
      init.body = JSON.stringify(body);
    }
    try {
      const response = await fetch(url, init);
      const raw = await response.text();
      let data = null;
      try { data = JSON.parse(raw); } catch (e) { data = null; }
      const ms = performance.now() - started;
      if (!response.ok) {
        const reason = data && typeof data.error === "string" ? data.error : raw.slice(0, 300) || response.statusText;
        return { ok: false, status: response.status, data, error: reason, ms };
      }
      if (data === null) return { ok: false, status: response.status, data, error: "the answer is not JSON", ms };
      return { ok: true, status: response.status, data, error: null, ms };
    } catch (e) {
      const ms = performance.now() - started;
      const why = e && e.name === "AbortError" ? `no answer within ${HOP_TIMEOUT_MS / 1000} s` : (e && e.message) || String(e);
      return { ok: false, status: 0, data: null, error: why, ms };
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- trace ---------------------------------------------------------------------------
  function trace(entry) {
    traceCount += 1;
    const item = el("li", "hop " + (entry.ok ? "ok" : "failed"));
    item.dataset.kind = entry.kind;
    const head = el("div", "hop-head");
    head.append(
      el("span", "hop-n", "#" + traceCount),
      el("span", "hop-what", entry.what),
      el("span", "hop-status", entry.status ? "HTTP " + entry.status : "network error"),
      el("span", "hop-ms", entry.ms.toFixed(1) + " ms"),
    );
    item.append(head);
    if (entry.meta) item.append(el("div", "hop-meta", entry.meta));
    if (entry.request !== undefined) {
      item.append(el("div", "hop-label", "request"), el("pre", "hop-req", JSON.stringify(entry.request)));
    }
    item.append(el("div", "hop-label", entry.ok ? "response" : "error"), el("pre", "hop-resp", entry.response));
    const list = $("trace");
    list.append(item);
    list.scrollTop = list.scrollHeight;  // the newest hop, without scrolling the page
  }

  function showSession() {
    $("session-id").textContent = session ? session.id : "–";
    $("session-seq").textContent = session ? String(session.seq) : "–";
  }

  // ---- the USSD dialog -----------------------------------------------------------------
  function dialog(mode, text, error) {
    // mode: "busy" (waiting), "continue" (answer field), "end" (OK), "error", "neterror"
    $("ussd-backdrop").hidden = false;
    $("ussd-busy").hidden = mode !== "busy";
    $("ussd-text").hidden = mode === "busy" || !text;
    if (text !== undefined && text !== null) $("ussd-text").textContent = text;
    $("ussd-error").hidden = !error;
    $("ussd-error").textContent = error || "";
    $("ussd-dialog").dataset.state = mode;
    const answering = mode === "continue";
    $("ussd-answer").hidden = !answering;
    $("ussd-send").hidden = !answering;
    $("ussd-cancel").hidden = !(answering || mode === "neterror");
    $("ussd-retry").hidden = mode !== "neterror";
    $("ussd-ok").hidden = !(mode === "end" || mode === "error");
    if (answering) {
      $("ussd-answer").value = "";
      $("ussd-answer").focus();
    } else if (mode === "end" || mode === "error") {
      $("ussd-ok").focus();
    } else if (mode === "neterror") {
      $("ussd-retry").focus();
    }
  }

  function closeDialog() {
    $("ussd-backdrop").hidden = true;
    $("ussd-dialog").dataset.state = "closed";
    $("dial-code").focus();
  }

  async function hop(body) {
    inFlight = true;
    session.lastBody = body;
    showSession();
    dialog("busy");
    const result = await exchange("POST", "ussd", body);
    inFlight = false;
    const what = `USSD ${body.event}` + (body.input !== undefined ? ` "${body.input}"` : "");
    const meta = `session ${body.session_id} · seq ${body.seq} · ${body.msisdn} · ${body.service_code} · ${body.language}`;
    if (result.ok) {
      const text = typeof result.data.text === "string" ? result.data.text : "";
      const end = result.data.end === true;
      trace({ kind: "ussd", what, meta, ok: true, status: result.status, ms: result.ms, request: body,
              response: (end ? "END " : "CON ") + text });
      session.open = !end;
      if (end) {
        dialog("end", text);
        refreshOutbound(true);
      } else {
        dialog("continue", text);
      }
    } else if (result.status === 0) {
      trace({ kind: "ussd", what, meta, ok: false, status: 0, ms: result.ms, request: body, response: result.error });
      // Retry re-sends the very same hop with the same seq: the server answers a
      // retried hop from its saved reply, so nothing is taken (or charged) twice.
      dialog("neterror", null, `Network error: ${result.error}. Retry sends the same hop again (seq ${body.seq}).`);
    } else {
      trace({ kind: "ussd", what, meta, ok: false, status: result.status, ms: result.ms, request: body, response: result.error });
      session.open = false;
      dialog("error", null, `The server refused the request (HTTP ${result.status}): ${result.error}`);
    }
  }

  function call(code) {
    if (inFlight) return;
    code = code.trim();
    if (!code) { $("dial-code").focus(); return; }
    if (session && session.open) abort();
    remember();
    session = {
      id: randomId(), msisdn: currentMsisdn(), code, language: currentLanguage(), seq: 0, open: true, lastBody: null,
    };
    hop({ session_id: session.id, msisdn: session.msisdn, service_code: session.code, event: "begin",
          seq: 0, language: session.language });
  }

  function answer() {
    if (inFlight || !session || !session.open) return;
    const value = $("ussd-answer").value;
    session.seq += 1;
    hop({ session_id: session.id, msisdn: session.msisdn, service_code: session.code, event: "continue",
          input: value, seq: session.seq, language: session.language });
  }

  async function abort() {
    // Hanging up: tell the server (in the background) and close the dialog.
    if (!session || !session.open) return;
    session.open = false;
    session.seq += 1;
    const body = { session_id: session.id, msisdn: session.msisdn, service_code: session.code, event: "abort",
                   seq: session.seq, language: session.language };
    session.lastBody = null;
    showSession();
    const result = await exchange("POST", "ussd", body);
    trace({ kind: "ussd", what: "USSD abort", meta: `session ${body.session_id} · seq ${body.seq} · ${body.msisdn}`,
            ok: result.ok, status: result.status, ms: result.ms, request: body,
            response: result.ok ? (result.data.end ? "END " : "CON ") + String(result.data.text || "") : result.error });
  }

  function retry() {
    if (inFlight || !session || !session.lastBody) return;
    hop(session.lastBody);
  }

  // ---- SMS -----------------------------------------------------------------------------
  function renderInbox() {
    const key = msisdnKey(currentMsisdn());
    const list = $("inbox");
    list.replaceChildren();
    const mine = inbox.filter((m) => m.msisdn === key);
    for (const m of mine) {
      const item = el("li", "sms " + m.dir);
      const who = m.dir === "out" ? `To ${m.peer}` : `From ${m.peer}` + (m.dir === "queued" ? " (queued)" : "");
      item.append(el("span", "sms-who", who), el("span", "sms-text", m.text), el("span", "sms-at", m.at));
      list.append(item);
    }
    if (!mine.length) list.append(el("li", "sms empty", "No messages yet."));
    list.scrollTop = list.scrollHeight;
    $("status-msisdn").textContent = currentMsisdn();
  }

  function addMessage(msisdn, dir, peer, text) {
    const now = new Date();
    const at = now.toTimeString().slice(0, 8);
    inbox.push({ msisdn: msisdnKey(msisdn), dir, peer, text, at });
    if (dir !== "out" && $("view-messages").hidden) {
      unread += 1;
      $("unread").textContent = String(unread);
      $("unread").hidden = false;
    }
    renderInbox();
  }

  async function sendSms() {
    const to = $("sms-to").value.trim();
    const text = $("sms-text").value;
    if (!text.trim()) { $("sms-text").focus(); return; }
    const msisdn = currentMsisdn();
    remember();
    const body = { msisdn, short_code: to, text };
    $("sms-send").disabled = true;
    $("inbox-status").textContent = `Sending to ${to}…`;
    const result = await exchange("POST", "sms", body);
    $("sms-send").disabled = false;
    trace({ kind: "sms", what: `SMS to ${to} "${text}"`, meta: `${msisdn} → ${to}`, ok: result.ok,
            status: result.status, ms: result.ms, request: body,
            response: result.ok ? (result.data.reply === null ? "(no reply)" : String(result.data.reply)) : result.error });
    if (!result.ok) {
      $("inbox-status").textContent = result.status
        ? `Not sent: the server refused it (HTTP ${result.status}): ${result.error}`
        : `Not sent: network error: ${result.error}`;
      return;
    }
    $("sms-text").value = "";
    addMessage(msisdn, "out", to, text);
    if (result.data.reply !== null && result.data.reply !== undefined) addMessage(msisdn, "in", to, String(result.data.reply));
    $("inbox-status").textContent = result.data.reply == null ? `Delivered to ${to}; no reply.` : "";
    refreshOutbound(false);
  }

  // What the server queued for this subscriber (purchase confirmations, …). The queue
  // is read, not consumed, so new messages are what was not in the last snapshot.
  let outboundChain = Promise.resolve();
  function refreshOutbound(traced) {
    // One read at a time, so two overlapping reads never add the same SMS twice.
    outboundChain = outboundChain.then(() => readOutbound(traced), () => readOutbound(traced));
    return outboundChain;
  }

  async function readOutbound(traced) {
    const msisdn = currentMsisdn();
    if (!msisdn) return;
    const url = "sms/outbound?to=" + encodeURIComponent(msisdn);
    const result = await exchange("GET", url);
    if (!result.ok || !Array.isArray(result.data)) {
      if (traced) trace({ kind: "outbound", what: "GET /sms/outbound", meta: msisdn, ok: false, status: result.status,
                          ms: result.ms, response: result.error || "unexpected answer" });
      $("inbox-status").textContent = `Cannot read the queued SMS: ${result.error || "unexpected answer"}`;
      return;
    }
    const key = msisdnKey(msisdn);
    const before = new Map();
    for (const k of queuedSeen.get(key) || []) before.set(k, (before.get(k) || 0) + 1);
    const snapshot = [];
    const fresh = [];
    for (const sms of result.data) {
      const k = String(sms.from) + "\u0000" + String(sms.text);
      snapshot.push(k);
      if (before.get(k)) before.set(k, before.get(k) - 1);
      else fresh.push(sms);
    }
    queuedSeen.set(key, snapshot);
    for (const sms of fresh) addMessage(msisdn, "queued", String(sms.from), String(sms.text));
    if (traced) {
      trace({ kind: "outbound", what: "GET /sms/outbound", meta: msisdn, ok: true, status: result.status, ms: result.ms,
              response: `${result.data.length} queued, ${fresh.length} new` +
                fresh.map((s) => `\n${s.from}: ${s.text}`).join("") });
    }
  }

  // ---- USSD push ------------------------------------------------------------------------
  // A dialogue the network begins (POST /admin/ussd/push with "bind": "web"): the phone
  // takes the push waiting for its subscriber and shows it like any screen; the answers
  // go to /ussd under the push's session id, so they walk the menus from that screen.
  let pushPolling = false;
  async function pollPush() {
    const msisdn = currentMsisdn();
    if (pushPolling || inFlight || (session && session.open) || !msisdn || document.hidden) return;
    pushPolling = true;
    try {
      const result = await exchange("GET", "admin/ussd/push?msisdn=" + encodeURIComponent(msisdn));
      if (!result.ok || !result.data || !result.data.push) return;
      const push = result.data.push;
      if (msisdnKey(push.msisdn) !== msisdnKey(currentMsisdn()) || inFlight || (session && session.open)) return;
      const text = typeof push.text === "string" ? push.text : "";
      const end = push.end === true;
      session = {
        id: String(push.session_id), msisdn, code: String(push.service_code), language: currentLanguage(), seq: 0,
        open: !end, lastBody: null,
      };
      showSession();
      trace({ kind: "push", what: "USSD push", meta: `session ${session.id} · ${msisdn}`, ok: true, status: result.status,
              ms: result.ms, response: (end ? "END " : "CON ") + text });
      dialog(end ? "end" : "continue", text);
    } finally {
      pushPolling = false;
    }
  }

  // ---- views ---------------------------------------------------------------------------
  function show(view) {
    const phone = view === "phone";
    $("view-dialer").hidden = !phone;
    $("view-messages").hidden = phone;
    $("tab-phone").setAttribute("aria-pressed", String(phone));
    $("tab-messages").setAttribute("aria-pressed", String(!phone));
    if (!phone) {
      unread = 0;
      $("unread").hidden = true;
      renderInbox();
      $("sms-text").focus();
    } else {
      $("dial-code").focus();
    }
  }

  function tick() {
    $("clock").textContent = new Date().toTimeString().slice(0, 5);
  }

  // ---- wiring --------------------------------------------------------------------------
  function init() {
    restore();
    $("status-msisdn").textContent = currentMsisdn();
    tick();
    setInterval(tick, 15000);

    $("dial-form").addEventListener("submit", (e) => { e.preventDefault(); call($("dial-code").value); });
    for (const key of document.querySelectorAll(".key")) {
      key.addEventListener("click", () => {
        $("dial-code").value += key.dataset.key;
        $("dial-code").focus();
      });
    }
    $("dial-backspace").addEventListener("click", () => {
      $("dial-code").value = $("dial-code").value.slice(0, -1);
      $("dial-code").focus();
    });
    $("dial-clear").addEventListener("click", () => { $("dial-code").value = ""; $("dial-code").focus(); });

    $("ussd-form").addEventListener("submit", (e) => { e.preventDefault(); answer(); });
    $("ussd-cancel").addEventListener("click", () => { abort(); closeDialog(); });
    $("ussd-ok").addEventListener("click", closeDialog);
    $("ussd-retry").addEventListener("click", retry);
    $("ussd-dialog").addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        e.preventDefault();
        if ($("ussd-dialog").dataset.state === "end" || $("ussd-dialog").dataset.state === "error") closeDialog();
        else if (!inFlight) { abort(); closeDialog(); }
      }
    });

    $("sms-form").addEventListener("submit", (e) => { e.preventDefault(); sendSms(); });
    $("inbox-refresh").addEventListener("click", () => refreshOutbound(true));
    $("tab-phone").addEventListener("click", () => show("phone"));
    $("tab-messages").addEventListener("click", () => show("messages"));
    $("trace-clear").addEventListener("click", () => { $("trace").replaceChildren(); traceCount = 0; });

    $("msisdn").addEventListener("change", () => { remember(); renderInbox(); refreshOutbound(false); });
    $("language").addEventListener("change", remember);
    for (const chip of document.querySelectorAll(".chip")) {
      chip.addEventListener("click", () => {
        $("msisdn").value = chip.dataset.msisdn;
        remember();
        renderInbox();
        refreshOutbound(false);
      });
    }

    renderInbox();
    refreshOutbound(false);
    setInterval(() => { if (!document.hidden) refreshOutbound(false); }, POLL_MS);
    setInterval(pollPush, PUSH_POLL_MS);
    document.body.dataset.ready = "true";
    $("dial-code").focus();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
