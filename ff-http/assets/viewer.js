// ff live viewer: plain JavaScript, no build step.
//
// State for automated checks is exposed as `window.ffViewer`
// ({state, events: [the cursors of the rows kept, oldest first], shown,
// duplicates, lastId (the last event's cursor), position (the latest
// position the gateway gave: an event's, or an `ff-position` message's),
// caughtUp, errors, paused, pending, copied, families, chartDraws, chart
// (the last drawing's scale and bars), maxRows, rate(), rowClass(),
// remembered(), shortCursor()}) and as `data-state` on <body>.
// The page resumes from `position` after any error, so a filtered stream
// that has shown no event yet resumes where it was, not at the form's
// start. Whether it has caught up comes from the gateway's `ff-position`
// messages; the page never reads a cursor's bytes. Everything the page
// keeps is bounded: rows, cursors and duplicate detection by MAX_ROWS,
// errors by MAX_ERRORS, held events by PAUSE_CAP, the chart by
// CHART_SECONDS, so a dashboard left open for weeks stays small. URL parameters prefill the form and
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
  var MAX_ERRORS = 100;
  // Events held while paused; past this the stream is closed at the last
  // held event and reopened from there on resume, so nothing is lost.
  var PAUSE_CAP = 5000;
  var CHART_SECONDS = 300;
  var COLORS = {
    success: "#2a4", failure: "#d33", cancelled: "#999", other: "#a6c",
    acquired: "#38c", renewed: "#6ad", expired: "#d80", reclaimed: "#b6e", revoked: "#c55",
    satisfied: "#2a4", buffered: "#38c", deduped: "#999",
    attached: "#38c", cleared: "#999", "ff-error": "#d33"
  };

  var $ = function (id) { return document.getElementById(id); };
  var viewer = window.ffViewer = {
    state: "idle", events: [], shown: 0, duplicates: 0, lastId: null, position: null,
    caughtUp: false, errors: [], paused: false, pending: 0, copied: null, families: {},
    chartDraws: 0, chart: null, maxRows: MAX_ROWS
  };
  // The cursors in `viewer.events`, for duplicate checks.
  var seen = new Set();
  viewer.remembered = function () { return seen.size; };
  var source = null;
  var retryTimer = null;
  var wanted = false;
  var attempt = 0;
  var held = [];
  var heldOverflow = false;
  // Per-second counts by kind, oldest first: [{t: second, kinds: {kind: n}}].
  var buckets = [];
  var newestAt = null;
  // The latest `GET /v1/status` answer, to redraw the family chips when
  // the stream says the page caught up or fell behind.
  var lastStatus = null;

  function setState(state, text) {
    viewer.state = state;
    document.body.dataset.state = state;
    var s = $("status");
    var shown = viewer.paused && state === "live" ? "paused" : state;
    s.dataset.state = shown;
    s.textContent = text || shown;
  }

  function banner(text) { $("banner").textContent = text || ""; }

  // Highlight what needs attention: failures and expired leases.
  function rowClass(family, kind) {
    if (kind === "ff-error") return "row-error";
    if (family === "completion" && kind === "failure") return "row-failure";
    if (family === "lease-history" && kind === "expired") return "row-expired";
    return "";
  }
  viewer.rowClass = rowClass;

  var toastTimer = null;
  function toast(text) {
    var t = $("toast");
    t.textContent = text;
    t.className = "show";
    if (toastTimer) clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { t.className = ""; }, 1500);
  }

  // Copy a cell's full value (the table shows it truncated).
  function copy(value) {
    viewer.copied = value;
    var shown = value.length > 40 ? value.slice(0, 40) + "…" : value;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(value).then(
        function () { toast("copied " + shown); },
        function () { toast("copy this: " + value); });
    } else {
      toast("copy this: " + value);
    }
  }

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

  // One table cell, one line: long values are cut with an ellipsis (or
  // shown as `shown`), the full value is the tooltip and a click copies it.
  function cell(tr, text, cls, copyable, shown) {
    var td = document.createElement("td");
    td.textContent = shown === undefined ? text : shown;
    td.title = text;
    td.className = cls + (copyable && text ? " copy" : "");
    if (copyable && text) td.addEventListener("click", function () { copy(text); });
    tr.appendChild(td);
  }

  // A short digest of `text` (FNV-1a, 4 base-36 characters).
  function digest(text) {
    var h = 0x811c9dc5;
    for (var i = 0; i < text.length; i++) {
      h ^= text.charCodeAt(i);
      h = Math.imul(h, 0x01000193);
    }
    return ("000" + ((h >>> 0) % 1679616).toString(36)).slice(-4);
  }

  // What tells cursors apart, short enough for the column: cursors of one
  // stream share their leading characters, so show the last ten (where a
  // position's low bytes are) and a digest of the whole (a cursor that
  // changes in the middle, as over partitions, still reads differently).
  function shortCursor(cursor) {
    if (cursor.length <= 16) return cursor;
    return "…" + cursor.slice(-10) + " #" + digest(cursor);
  }
  viewer.shortCursor = shortCursor;

  function addRow(cursor, kind, data) {
    var tr = document.createElement("tr");
    tr.dataset.cursor = cursor;
    var cls = rowClass($("family").value, kind);
    if (cls) tr.className = cls;
    var at = typeof data.at === "number" ? new Date(data.at).toISOString().slice(11, 23) : "";
    var rest = {};
    Object.keys(data).forEach(function (k) {
      if (["cursor", "family", "type", "execution_id", "at"].indexOf(k) < 0) rest[k] = data[k];
    });
    cell(tr, at, "mono", false);
    cell(tr, kind, "kind", false);
    cell(tr, data.execution_id || "", "mono exec", true);
    cell(tr, cursor, "mono cursor", true, shortCursor(cursor));
    cell(tr, JSON.stringify(rest), "mono json", true);
    var rows = $("rows");
    rows.insertBefore(tr, rows.firstChild);
    while (rows.childNodes.length > MAX_ROWS) rows.removeChild(rows.lastChild);
  }

  function count(kind) {
    var t = Math.floor(Date.now() / 1000);
    var last = buckets[buckets.length - 1];
    if (!last || last.t !== t) {
      last = { t: t, kinds: {} };
      buckets.push(last);
      while (buckets.length && buckets[0].t <= t - CHART_SECONDS) buckets.shift();
    }
    last.kinds[kind] = (last.kinds[kind] || 0) + 1;
  }

  // Events per kind over the last `seconds` (default 60).
  viewer.rate = function (seconds) {
    var since = Math.floor(Date.now() / 1000) - (seconds || 60);
    var out = {};
    buckets.forEach(function (b) {
      if (b.t <= since) return;
      Object.keys(b.kinds).forEach(function (k) { out[k] = (out[k] || 0) + b.kinds[k]; });
    });
    return out;
  };

  // The chart's full height in events per second: the largest second shown
  // that is at most four times the median of the seconds with events, so
  // one burst (a replay, a backlog) does not flatten the live rate for five
  // minutes. Taller seconds are clipped and marked.
  function chartScale(totals) {
    var sorted = totals.filter(function (n) { return n > 0; })
      .sort(function (a, b) { return a - b; });
    if (!sorted.length) return 1;
    var median = sorted[Math.floor((sorted.length - 1) / 2)];
    var scale = median;
    sorted.forEach(function (n) { if (n <= 4 * median) scale = n; });
    return Math.max(scale, 1);
  }

  // Stacked bars of events per second by kind, newest on the right.
  function drawChart() {
    var canvas = $("chart");
    var ctx = canvas.getContext("2d");
    var w = canvas.width, h = canvas.height;
    var plot = h - 14;
    ctx.clearRect(0, 0, w, h);
    var now = Math.floor(Date.now() / 1000);
    var kinds = {};
    var totals = buckets.map(function (b) {
      var total = 0;
      Object.keys(b.kinds).forEach(function (k) { total += b.kinds[k]; kinds[k] = true; });
      return total;
    });
    var scale = chartScale(totals);
    var bar = w / CHART_SECONDS;
    var bars = [];
    var clipped = null;
    buckets.forEach(function (b, i) {
      var x = w - (now - b.t + 1) * bar;
      var y = h;
      var fit = Math.min(1, scale / totals[i]);
      Object.keys(b.kinds).sort().forEach(function (k) {
        var bh = b.kinds[k] / scale * plot * fit;
        ctx.fillStyle = COLORS[k] || "#888";
        ctx.fillRect(x, y - bh, Math.max(bar - 0.5, 1), bh);
        y -= bh;
      });
      if (totals[i] > scale) {
        // Clipped: a dark cap, and the tallest one's count beside it.
        ctx.fillStyle = "#333";
        ctx.fillRect(x, h - plot - 2, Math.max(bar - 0.5, 1), 3);
        if (!clipped || totals[i] > clipped.total) clipped = { x: x, total: totals[i] };
      }
      bars.push({ t: b.t, total: totals[i], px: Math.min(totals[i], scale) / scale * plot });
    });
    ctx.fillStyle = "#888";
    ctx.font = "10px sans-serif";
    ctx.fillText(scale + "/s", 3, 11);
    if (clipped) {
      var label = "▲ " + clipped.total + "/s";
      var lx = Math.min(Math.max(clipped.x - 20, 50), w - ctx.measureText(label).width - 3);
      ctx.fillStyle = "#555";
      ctx.fillText(label, lx, 11);
    }
    viewer.chart = { scale: scale, plot: plot, bars: bars };
    ctx.fillText("-5 min", 3, h - 3);
    ctx.fillText("now", w - 22, h - 3);
    var legend = $("legend");
    legend.textContent = "";
    var rates = viewer.rate(60);
    Object.keys(kinds).sort().forEach(function (k) {
      var line = document.createElement("div");
      var sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = COLORS[k] || "#888";
      line.appendChild(sw);
      line.appendChild(document.createTextNode(k + " " + ((rates[k] || 0) / 60).toFixed(2) + "/s"));
      legend.appendChild(line);
    });
    viewer.chartDraws += 1;
  }

  // A duplicate is a cursor still remembered.
  function isDuplicate(cursor) {
    return seen.has(cursor);
  }

  function remember(cursor) {
    seen.add(cursor);
    viewer.events.push(cursor);
    while (viewer.events.length > MAX_ROWS) seen.delete(viewer.events.shift());
  }

  // The latest position the gateway gave: where a reconnect resumes.
  function gotPosition(cursor) {
    if (cursor) viewer.position = cursor;
  }

  function setCaughtUp(caught) {
    if (viewer.caughtUp === caught) return;
    viewer.caughtUp = caught;
    if (lastStatus) renderFamilies(lastStatus);
  }

  function show(cursor, kind, data) {
    viewer.lastId = cursor;
    $("last").textContent = cursor;
    $("last").title = cursor;
    if (isDuplicate(cursor)) {
      viewer.duplicates += 1;
    } else {
      remember(cursor);
      viewer.shown += 1;
    }
    $("count").textContent = String(viewer.shown);
    addRow(cursor, kind, data);
  }

  function noteError(data) {
    viewer.errors.push(data);
    while (viewer.errors.length > MAX_ERRORS) viewer.errors.shift();
  }

  function setPending(n) {
    viewer.pending = n;
    $("pending").textContent = String(n);
  }

  function onEvent(e) {
    var data;
    try { data = JSON.parse(e.data); } catch (err) { data = { raw: e.data }; }
    var cursor = e.lastEventId || data.cursor || "";
    gotPosition(cursor);
    count(e.type);
    if (typeof data.at === "number") newestAt = data.at;
    attempt = 0;
    if (viewer.paused) {
      held.push([cursor, e.type, data]);
      setPending(held.length);
      if (held.length >= PAUSE_CAP) {
        heldOverflow = true;
        close();
      }
      return;
    }
    show(cursor, e.type, data);
  }

  // An `ff-position` message: the start position, a checkpoint past
  // filtered-out events, or the stream's news that this page caught up
  // with the gateway's live position or fell behind it.
  function onPosition(e) {
    var data;
    try { data = JSON.parse(e.data); } catch (err) { data = {}; }
    gotPosition(e.lastEventId || data.cursor);
    attempt = 0;
    if (data.reason === "caught-up") setCaughtUp(true);
    else if (data.reason === "start" || data.reason === "behind") setCaughtUp(false);
  }

  function pause() {
    viewer.paused = true;
    $("pause").dataset.paused = "true";
    $("pause").textContent = "Resume";
    setState(viewer.state);
  }

  // Show what arrived while paused, in order, and go on from there.
  function resume() {
    viewer.paused = false;
    $("pause").dataset.paused = "false";
    $("pause").textContent = "Pause";
    var backlog = held;
    held = [];
    setPending(0);
    backlog.forEach(function (h) { show(h[0], h[1], h[2]); });
    if (heldOverflow && wanted) {
      heldOverflow = false;
      start(viewer.position || undefined);
    } else {
      setState(viewer.state);
    }
    if (lastStatus) renderFamilies(lastStatus);
  }

  function onStreamError(e) {
    var data;
    try { data = JSON.parse(e.data); } catch (err) { data = { error: "unknown", detail: e.data }; }
    noteError(data);
    if (e.lastEventId) gotPosition(e.lastEventId);
    if (data.error === "corrupt") {
      count("ff-error");
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
    setCaughtUp(false);
    setState(attempt ? "reconnecting" : "connecting");
    var url = streamUrl(cursor);
    var es = new EventSource(url.toString());
    source = es;
    es.onopen = function () { setState("live"); banner(""); pollStatus(); };
    KINDS[$("family").value].forEach(function (k) { es.addEventListener(k, onEvent); });
    es.addEventListener("ff-error", onStreamError);
    es.addEventListener("ff-position", onPosition);
    es.onerror = function () {
      if (source !== es || !wanted) return;
      if (es.readyState === EventSource.CONNECTING) {
        // The browser reconnects by itself with Last-Event-ID.
        setState("reconnecting");
        return;
      }
      // The browser gave up (an HTTP error: a 503 at the client cap, a
      // proxy's 502, ...): find out why from the latest position, then
      // retry from there or stop.
      es.close();
      source = null;
      diagnose(streamUrl(viewer.position || undefined));
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
          noteError(body);
          if (resp.status === 503) return scheduleRetry(retry || 2);
          stop("error", String(resp.status));
          if (resp.status === 410 && body.oldest) offerRestart(body.oldest);
        }, function () {
          // Not the gateway's JSON: a proxy's error page. Retry.
          banner("HTTP " + resp.status + " (not from the gateway); retrying");
          noteError({ error: "http_" + resp.status });
          scheduleRetry(retry || 2);
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
      // Resume from the latest position given (an event, the start
      // position or a checkpoint); before any, the form's start.
      start(viewer.position || undefined);
    }, delay);
  }

  // Per family: for the one shown, whether this page has caught up with
  // the gateway's live position; for the others, the gateway's lag.
  function renderFamilies(status) {
    lastStatus = status;
    var box = $("families");
    box.textContent = "";
    Object.keys(KINDS).forEach(function (family) {
      var f = (status.families || {})[family] || {};
      var chip = document.createElement("span");
      chip.className = "chip";
      chip.dataset.family = family;
      var state, text;
      if (family === $("family").value && source && viewer.state === "live") {
        // Caught up as the stream says, with nothing held back by a pause.
        var caught = viewer.caughtUp && held.length === 0;
        state = caught ? "caught-up" : "behind";
        var age = newestAt ? Math.max(0, Math.round((Date.now() - newestAt) / 1000)) : null;
        text = family + ": " + (caught ? "caught up" : "behind" + (age !== null ? ", newest shown " + age + " s old" : ""));
      } else if (f.live) {
        state = "live";
        var lag = typeof f.delivery_lag_ms === "number" ? (Math.max(0, f.delivery_lag_ms) / 1000).toFixed(1) + " s" : "–";
        text = family + ": live, lag " + lag;
      } else {
        state = "idle";
        text = family + ": idle";
      }
      chip.dataset.state = state;
      chip.textContent = text;
      chip.title = f.position ? "gateway position " + f.position : "the gateway follows no subscription of this family";
      viewer.families[family] = state;
      box.appendChild(chip);
      box.appendChild(document.createTextNode(" "));
    });
  }

  function pollStatus() {
    fetch("v1/status", { credentials: "same-origin" })
      .then(function (resp) { return resp.ok ? resp.json() : null; })
      .then(function (status) { if (status) renderFamilies(status); })
      .catch(function () {});
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
    banner(""); attempt = 0; viewer.lastId = null; viewer.position = null;
    held = []; heldOverflow = false; setPending(0);
    start();
  });
  $("disconnect").addEventListener("click", function () { stop("idle", "disconnected"); });
  $("pause").addEventListener("click", function () { if (viewer.paused) resume(); else pause(); });
  $("clear").addEventListener("click", function () {
    $("rows").textContent = ""; viewer.events = []; viewer.shown = 0; viewer.duplicates = 0; seen.clear();
    $("count").textContent = "0";
  });
  $("signin-btn").addEventListener("click", signIn);
  $("signout-btn").addEventListener("click", signOut);

  setInterval(drawChart, 1000);
  setInterval(pollStatus, 2000);
  drawChart();
  pollStatus();
  if (prefill()) start();
})();
