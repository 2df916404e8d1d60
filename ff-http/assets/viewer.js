// ff live viewer: plain JavaScript, no build step.
//
// State for automated checks is exposed as `window.ffViewer`
// ({state, events: [cursor...], duplicates, lastId, errors}) and as
// `data-state` on <body>. URL parameters prefill the form and
// `autoconnect=1` connects at once, e.g. `/?family=completion&from=beginning&autoconnect=1`.
(function () {
  "use strict";

  var KINDS = {
    "lease-history": ["acquired", "renewed", "expired", "reclaimed", "revoked"],
    "completion": ["success", "failure", "cancelled", "other"],
    "signal-delivery": ["satisfied", "buffered", "deduped", "other"],
    "instance-tags": ["attached", "cleared"]
  };
  var MAX_ROWS = 500;

  var $ = function (id) { return document.getElementById(id); };
  var viewer = window.ffViewer = {
    state: "idle", events: [], duplicates: 0, lastId: null, errors: []
  };
  var seen = new Set();
  var source = null;
  var retryTimer = null;
  var wanted = false;
  var attempt = 0;

  function setState(state, text) {
    viewer.state = state;
    document.body.dataset.state = state;
    var s = $("status");
    s.dataset.state = state;
    s.textContent = text || state;
  }

  function banner(text) { $("banner").textContent = text || ""; }

  function renderKinds() {
    var family = $("family").value;
    var box = $("kinds");
    box.textContent = "kinds: ";
    KINDS[family].forEach(function (k) {
      var label = document.createElement("label");
      var input = document.createElement("input");
      input.type = "checkbox";
      input.value = k;
      input.className = "kind";
      label.appendChild(input);
      label.appendChild(document.createTextNode(k));
      box.appendChild(label);
    });
    var hint = document.createElement("span");
    hint.className = "muted";
    hint.textContent = "(none checked: every kind)";
    box.appendChild(hint);
  }

  // The stream URL for the form's filters, starting after `cursor` when given.
  function streamUrl(cursor) {
    var family = $("family").value;
    var url = new URL("v1/streams/" + encodeURIComponent(family), document.baseURI);
    var p = url.searchParams;
    if (cursor) {
      p.set("cursor", cursor);
    } else if ($("from").value === "cursor" && $("cursor").value.trim()) {
      p.set("cursor", $("cursor").value.trim());
    } else if ($("from").value === "beginning") {
      p.set("from", "beginning");
    }
    var kinds = Array.prototype.map.call(
      document.querySelectorAll("input.kind:checked"), function (i) { return i.value; });
    if (kinds.length) p.set("kinds", kinds.join(","));
    ["execution_id", "namespace", "tag"].forEach(function (name) {
      var v = $(name).value.trim();
      if (v) p.set(name, v);
    });
    return url;
  }

  function addRow(cursor, kind, data) {
    var tr = document.createElement("tr");
    tr.dataset.cursor = cursor;
    var at = typeof data.at === "number" ? new Date(data.at).toISOString() : "";
    var rest = {};
    Object.keys(data).forEach(function (k) {
      if (["cursor", "family", "type", "execution_id", "at"].indexOf(k) < 0) rest[k] = data[k];
    });
    [[cursor, "cursor"], [kind, ""], [data.execution_id || "", "cursor"], [at, ""],
     [JSON.stringify(rest), "json"]].forEach(function (cell) {
      var td = document.createElement("td");
      td.textContent = cell[0];
      if (cell[1]) td.className = cell[1];
      tr.appendChild(td);
    });
    var rows = $("rows");
    rows.insertBefore(tr, rows.firstChild);
    while (rows.childNodes.length > MAX_ROWS) rows.removeChild(rows.lastChild);
  }

  function onEvent(e) {
    var data;
    try { data = JSON.parse(e.data); } catch (err) { data = { raw: e.data }; }
    var cursor = e.lastEventId || data.cursor || "";
    viewer.lastId = cursor;
    $("last").textContent = cursor;
    if (seen.has(cursor)) {
      viewer.duplicates += 1;
    } else {
      seen.add(cursor);
      viewer.events.push(cursor);
    }
    $("count").textContent = String(viewer.events.length);
    addRow(cursor, e.type, data);
    attempt = 0;
  }

  function onStreamError(e) {
    var data;
    try { data = JSON.parse(e.data); } catch (err) { data = { error: "unknown", detail: e.data }; }
    viewer.errors.push(data);
    if (data.error === "corrupt") {
      addRow(data.cursor || e.lastEventId || "", "ff-error", data);
      return;
    }
    banner(data.error + ": " + (data.detail || ""));
    if (data.error === "cursor_expired" && data.oldest) {
      stop("error", "expired");
      offerRestart(data.oldest);
    }
  }

  function offerRestart(oldest) {
    var b = document.createElement("button");
    b.type = "button";
    b.textContent = "Continue from the oldest retained event";
    b.addEventListener("click", function () { banner(""); start(oldest); });
    $("banner").appendChild(document.createElement("br"));
    $("banner").appendChild(b);
  }

  function close() {
    if (source) { source.close(); source = null; }
    if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
  }

  function stop(state, text) {
    wanted = false;
    close();
    setState(state || "idle", text);
  }

  // Open the stream after `cursor` (or per the form when none).
  function start(cursor) {
    close();
    wanted = true;
    setState(attempt ? "reconnecting" : "connecting");
    var url = streamUrl(cursor);
    var es = new EventSource(url.toString());
    source = es;
    es.onopen = function () { setState("live"); banner(""); };
    KINDS[$("family").value].forEach(function (k) { es.addEventListener(k, onEvent); });
    es.addEventListener("ff-error", onStreamError);
    es.onerror = function () {
      if (source !== es || !wanted) return;
      if (es.readyState === EventSource.CONNECTING) {
        // The browser reconnects by itself with Last-Event-ID.
        setState("reconnecting");
        return;
      }
      // The browser gave up (an HTTP error): find out why, then retry or stop.
      es.close();
      source = null;
      diagnose(url);
    };
  }

  function diagnose(url) {
    var ctrl = new AbortController();
    fetch(url.toString(), { credentials: "same-origin", signal: ctrl.signal })
      .then(function (resp) {
        if (resp.ok) { ctrl.abort(); return scheduleRetry(1); }
        var retry = parseInt(resp.headers.get("retry-after") || "0", 10);
        return resp.json().then(function (body) {
          banner(resp.status + " " + body.error + ": " + (body.detail || ""));
          viewer.errors.push(body);
          if (resp.status === 503) return scheduleRetry(retry || 2);
          stop("error", String(resp.status));
          if (resp.status === 410 && body.oldest) offerRestart(body.oldest);
        });
      })
      .catch(function () { scheduleRetry(2); });
  }

  function scheduleRetry(seconds) {
    if (!wanted) return;
    attempt += 1;
    setState("reconnecting", "reconnecting in " + seconds + " s");
    var delay = Math.min(seconds * 1000 * Math.min(attempt, 5), 30000);
    retryTimer = setTimeout(function () {
      retryTimer = null;
      // Resume after the last event seen; before any, the form's start.
      start(viewer.lastId || undefined);
    }, delay);
  }

  function signIn() {
    var token = $("token").value;
    fetch("v1/session", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: token })
    }).then(function (resp) {
      $("token").value = "";
      $("signin-state").textContent = resp.ok ? "signed in" : "sign-in failed (" + resp.status + ")";
    }).catch(function () { $("signin-state").textContent = "sign-in failed"; });
  }

  function signOut() {
    fetch("v1/session", { method: "DELETE", credentials: "same-origin" }).then(function () {
      $("signin-state").textContent = "signed out";
    });
  }

  function prefill() {
    var p = new URLSearchParams(window.location.search);
    if (p.get("family") && KINDS[p.get("family")]) $("family").value = p.get("family");
    renderKinds();
    if (p.get("from")) $("from").value = p.get("from") === "beginning" ? "beginning" : "tail";
    if (p.get("cursor")) { $("from").value = "cursor"; $("cursor").value = p.get("cursor"); }
    (p.get("kinds") || "").split(",").forEach(function (k) {
      var box = document.querySelector('input.kind[value="' + k.replace(/"/g, "") + '"]');
      if (box) box.checked = true;
    });
    ["execution_id", "namespace", "tag"].forEach(function (name) {
      if (p.get(name)) $(name).value = p.get(name);
    });
    return p.get("autoconnect") === "1";
  }

  $("family").addEventListener("change", renderKinds);
  $("connect").addEventListener("click", function () {
    banner(""); attempt = 0; viewer.lastId = null; start();
  });
  $("disconnect").addEventListener("click", function () { stop("idle", "disconnected"); });
  $("clear").addEventListener("click", function () {
    $("rows").textContent = ""; viewer.events = []; viewer.duplicates = 0; seen.clear();
    $("count").textContent = "0";
  });
  $("signin-btn").addEventListener("click", signIn);
  $("signout-btn").addEventListener("click", signOut);

  if (prefill()) start();
})();
