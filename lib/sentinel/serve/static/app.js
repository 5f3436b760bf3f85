// Pressure Sentinel operator page: the sensor map, the open incidents (acknowledge, close,
// label) and one sensor's chart, refreshed by polling the API every POLL_MS.
// Every text from the store goes in with textContent (never innerHTML): ids and explanations
// are data, not markup. The operator token lives in this tab only (sessionStorage).
// uPlot: static/vendor/uPlot.iife.min.js, loaded first by index.html (built from web/).
const uPlot = globalThis.uPlot;

const POLL_MS = 3000;
const LABELS = ["confirmed", "false_alarm", "maintenance", "sensor_fault"];
const COLOURS = { ok: "#2e7d32", anomalous: "#ef6c00", incident: "#c62828", muted: "#7b1fa2", silent: "#757575" };
const $ = (sel) => document.querySelector(sel);
const state = { sensors: [], incidents: [], selected: null, batch: null, polls: 0, charts: [], busy: false };

// ------------------------------------------------------------------ helpers
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}
const svg = (tag, attrs = {}) => {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
};
const fmtTime = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC") : "—");
const fmtNum = (x, d = 2) => (x === null || x === undefined ? "—" : Number(x).toFixed(d));

function say(text, kind = "info") {
  const s = $("#status");
  s.textContent = text;
  s.dataset.kind = kind;
}

async function api(path, options = {}) {
  const resp = await fetch(path, { headers: { Accept: "application/json" }, ...options });
  let body = null;
  try { body = await resp.json(); } catch { body = null; }
  if (!resp.ok) {
    const why = body && typeof body.detail === "string" ? body.detail : `${resp.status} ${resp.statusText}`;
    throw Object.assign(new Error(why), { status: resp.status });
  }
  return body;
}

// ------------------------------------------------------------------ map
function convexHull(points) {  // Andrew's monotone chain; points [[x, y], ...]
  const p = [...points].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  if (p.length < 3) return p;
  const cross = (o, a, b) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
  const half = (pts) => {
    const out = [];
    for (const q of pts) {
      while (out.length >= 2 && cross(out[out.length - 2], out[out.length - 1], q) <= 0) out.pop();
      out.push(q);
    }
    out.pop();
    return out;
  };
  return [...half(p), ...half([...p].reverse())];
}

function inside([x, y], poly) {  // ray casting; points on the outline count as outside
  let hit = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i], [xj, yj] = poly[j];
    if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) hit = !hit;
  }
  return hit;
}

// Equirectangular projection: x = lon * cos(mid latitude), y = -lat, scaled into the box.
function drawMap(sensors) {
  const W = 640, H = 400, PAD = 36;
  const placed = sensors.filter((s) => Number.isFinite(s.latitude) && Number.isFinite(s.longitude));
  const box = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `map of ${placed.length} sensors` });
  if (placed.length) {
    const lats = placed.map((s) => s.latitude), lons = placed.map((s) => s.longitude);
    const k = Math.cos(((Math.min(...lats) + Math.max(...lats)) / 2) * Math.PI / 180);
    const xs = lons.map((l) => l * k), ys = lats.map((l) => -l);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const scale = Math.min((W - 2 * PAD) / (x1 - x0 || 1e-9), (H - 2 * PAD) / (y1 - y0 || 1e-9));
    const ox = (W - (x1 - x0) * scale) / 2, oy = (H - (y1 - y0) * scale) / 2;
    const px = (s) => [ox + (s.longitude * k - x0) * scale, oy + (-s.latitude - y0) * scale];
    const zones = new Map();
    for (const s of placed) {
      const key = s.zone || "";
      if (!zones.has(key)) zones.set(key, []);
      zones.get(key).push(px(s));
    }
    // Zones as outlines with their names where they do not overlap; where they do (zones that
    // are groups rather than areas), each sensor's label names its zone instead.
    const hulls = [...zones].filter(([z]) => z).map(([z, pts]) => [z, convexHull(pts), pts]);
    const separate = hulls.every(([z, hull]) => hull.length < 3 ||
      hulls.every(([z2, , pts2]) => z2 === z || pts2.every((q) => !inside(q, hull))));
    box.dataset.zoneLayout = separate ? "outlines" : "labels";
    for (const [zone, hull, pts] of separate ? hulls : []) {
      // one sensor: a disc; two or a line of them: a band (the outline's wide round stroke)
      box.append(hull.length === 1 ? svg("circle", { class: "zone-hull", "data-zone": zone, cx: hull[0][0], cy: hull[0][1], r: 4 })
        : svg("polygon", { class: "zone-hull", "data-zone": zone,
          points: hull.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ") }));
      const cx = pts.reduce((a, q) => a + q[0], 0) / pts.length, top = Math.min(...pts.map((q) => q[1]));
      const label = svg("text", { class: "zone-label", x: cx.toFixed(1), y: (top - 12).toFixed(1), "text-anchor": "middle",
        "data-zone-label": zone });
      label.textContent = zone;
      box.append(label);
    }
    for (const s of placed) {
      const [x, y] = px(s);
      const dot = svg("circle", { class: "sensor" + (state.selected && state.selected.sensor === s.sensor_id ? " selected" : ""),
        cx: x.toFixed(1), cy: y.toFixed(1), r: s.state === "incident" ? 9 : 7, tabindex: 0, role: "button",
        "data-sensor-id": s.sensor_id, "data-state": s.state, "aria-label": `sensor ${s.sensor_id}: ${s.state}` });
      const tip = svg("title");
      tip.textContent = `${s.sensor_id} (${s.zone || "no zone"}): ${s.state}` +
        (s.last_event_time ? `, last reading ${fmtTime(s.last_event_time)}` : ", no reading yet") +
        (s.severity !== null && s.severity !== undefined ? `, severity ${fmtNum(s.severity)}` : "");
      dot.append(tip);
      if (placed.length <= 40) {  // ids beside the dots while they fit
        const name = svg("text", { class: "sensor-label", x: (x + 10).toFixed(1), y: (y + 4).toFixed(1) });
        name.textContent = separate || !s.zone ? s.sensor_id : `${s.sensor_id} · ${s.zone}`;
        box.append(name);
      }
      const open = () => selectSensor(s.sensor_id);
      dot.addEventListener("click", open);
      dot.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } });
      box.append(dot);
    }
  }
  $("#map").replaceChildren(box);
  const unplaced = sensors.filter((s) => !placed.includes(s));
  const up = $("#unplaced");
  up.replaceChildren();
  if (unplaced.length) {
    up.append(`${unplaced.length} sensor(s) without coordinates: `);
    unplaced.forEach((s, i) => {
      up.append(el("button", { class: "link", type: "button", "data-sensor-id": s.sensor_id, "data-state": s.state,
        text: `${s.sensor_id} (${s.state})`, onclick: () => selectSensor(s.sensor_id) }));
      if (i < unplaced.length - 1) up.append(", ");
    });
  }
}

// ------------------------------------------------------------------ incidents
function incidentCard(inc) {
  const id = inc.incident_id;
  const sensors = (inc.sensors || []).map((s) => `${s.sensor_id} (${Math.round((s.share || 0) * 100)}%)`).join(", ");
  const labelSel = el("select", { "aria-label": `label for incident ${id}`, "data-role": "label-choice" },
    ...LABELS.map((l) => el("option", { value: l, text: l.replace("_", " "), selected: inc.label === l })));
  const act = (action, extra) => () => operate(id, action, extra ? extra() : {});
  const closed = inc.status === "closed";
  return el("article", { class: "incident" + (state.selected && state.selected.incident === id ? " selected" : ""),
      "data-incident-id": id, "data-status": inc.status, "data-muted": String(!!inc.muted), "data-kind": inc.kind },
    el("h3", {},
      el("button", { class: "link", type: "button", text: id, "aria-label": `show the chart of incident ${id}`,
        onclick: () => selectIncident(inc) }),
      el("span", { class: "badge kind", text: inc.kind }),
      el("span", { class: `badge status-${inc.status}`, "data-role": "status", text: inc.status }),
      inc.muted ? el("span", { class: "badge muted", text: "muted" }) : null,
      inc.label ? el("span", { class: "badge", "data-role": "label", text: `label: ${inc.label}` }) : null),
    el("dl", {},
      el("dt", { text: "zone" }), el("dd", { text: inc.zone || "—" }),
      el("dt", { text: "sensors" }), el("dd", { text: sensors || inc.first_sensor || "—" }),
      el("dt", { text: "since" }), el("dd", { text: fmtTime(inc.opened_at) }),
      el("dt", { text: "last seen" }), el("dd", { text: fmtTime(inc.last_seen) }),
      el("dt", { text: "severity" }), el("dd", { text: `${fmtNum(inc.peak_severity)} peak, ${inc.readings} readings` }),
      inc.acknowledged_by ? el("dt", { text: "acknowledged" }) : null,
      inc.acknowledged_by ? el("dd", { text: `${inc.acknowledged_by}, ${fmtTime(inc.acknowledged_at)}` }) : null),
    el("p", { class: "explanation", text: inc.explanation || "" }),
    el("div", { class: "actions" },
      el("button", { type: "button", "data-action": "ack", disabled: inc.status !== "new",
        "aria-label": `acknowledge incident ${id}`, text: "Acknowledge", onclick: act("ack") }),
      el("button", { type: "button", "data-action": "close", disabled: closed,
        "aria-label": `close incident ${id}`, text: "Close", onclick: act("close") }),
      labelSel,
      el("button", { type: "button", "data-action": "label", "aria-label": `label incident ${id}`, text: "Label",
        onclick: act("label", () => ({ label: labelSel.value })) })));
}

function drawIncidents(items) {
  const box = $("#incidents");
  box.dataset.count = String(items.length);
  $("#incident-count").textContent = String(items.length);
  box.replaceChildren(...(items.length ? items.map(incidentCard) : [el("p", { class: "empty", text: "No open incidents." })]));
}

async function operate(id, action, extra) {
  const token = $("#token").value.trim();
  sessionStorage.setItem("sentinel-token", token);
  sessionStorage.setItem("sentinel-actor", $("#actor").value.trim());
  if (!token) { say("Type the operator token (SENTINEL_API_TOKEN of the server) to change an incident.", "error"); return; }
  const body = { actor: $("#actor").value.trim() || "operator", ...extra };
  try {
    await api(`api/incidents/${encodeURIComponent(id)}/${action}`, {
      method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", Accept: "application/json", Authorization: `Bearer ${token}` } });
    const done = { ack: "acknowledged", close: "closed", label: `labelled ${extra.label}` }[action];
    say(`Incident ${id} ${done}.`, "ok");
    await refresh(true);
  } catch (err) {
    say(err.message, "error");
  }
}

// ------------------------------------------------------------------ chart
function selectSensor(sensorId, window = {}) {
  state.selected = { sensor: sensorId, incident: window.incident || null, since: window.since, until: window.until };
  drawMap(state.sensors);
  drawIncidents(state.incidents);
  loadChart();
}

function selectIncident(inc) {
  const top = (inc.sensors && inc.sensors.length ? inc.sensors[0].sensor_id : inc.first_sensor);
  const start = Date.parse(inc.opened_at), end = Date.parse(inc.closed_at || inc.last_seen || inc.opened_at);
  const pad = 12 * 3600e3;
  selectSensor(top, { incident: inc.incident_id, since: new Date(start - pad).toISOString(),
    until: new Date(Math.max(end, start) + pad).toISOString() });
}

function spansPlugin(spans) {  // shades each incident's span on the chart
  return { hooks: { drawClear: [(u) => {
    const { ctx, bbox } = u;
    ctx.save();
    for (const s of spans) {
      const a = u.valToPos(s.start, "x", true), b = u.valToPos(s.end, "x", true);
      ctx.fillStyle = s.incident_id === (state.selected && state.selected.incident) ? "rgba(198,40,40,0.22)" : "rgba(198,40,40,0.12)";
      ctx.fillRect(Math.max(a, bbox.left), bbox.top, Math.max(2, Math.min(b, bbox.left + bbox.width) - Math.max(a, bbox.left)), bbox.height);
    }
    ctx.restore();
  }] } };
}

async function loadChart() {
  const sel = state.selected;
  if (!sel) return;
  const q = new URLSearchParams();
  if (sel.since) q.set("since", sel.since);
  if (sel.until) q.set("until", sel.until);
  let data;
  try {
    data = await api(`api/sensors/${encodeURIComponent(sel.sensor)}/series?${q}`);
  } catch (err) {
    say(err.message, "error");
    return;
  }
  if (state.selected !== sel) return;  // another click came first
  const s = state.sensors.find((x) => x.sensor_id === sel.sensor);
  $("#chart-title").textContent = `${sel.sensor}${s && s.zone ? ` (${s.zone})` : ""}: ${fmtTime(data.since)} – ${fmtTime(data.until)}`;
  $("#chart-note").textContent = data.time.length ? `${data.time.length} scored readings, ${data.anomalies.length} anomalies, ` +
    `${data.incidents.length} incident(s)${data.truncated ? " (newest readings only: narrow the window)" : ""}` :
    "No scored readings in this window (the stream writes them when sinks.write_scores is on).";
  for (const c of state.charts) c.destroy();
  state.charts = [];
  const width = Math.max(320, $(".chart-panel").clientWidth - 24);
  const spans = data.incidents.map((i) => ({ ...i, start: Date.parse(i.start) / 1e3, end: Date.parse(i.end) / 1e3 }));
  const xs = data.time;
  // anomalies on the time axis: the reading (top) and the score (bottom), null elsewhere
  const flagged = new Map(data.anomalies.map((a) => [Date.parse(a.event_time) / 1e3, a]));
  const feature = data.features[0];
  const readings = [xs];
  const series = [{}];
  for (const f of data.features) {
    readings.push(data.values[f]);
    series.push({ label: f, stroke: "#1565c0", width: 1.5 });
    readings.push(data.expected[f]);
    series.push({ label: `expected ${f}`, stroke: "#66bb6a", width: 1.5, dash: [6, 4] });
  }
  readings.push(xs.map((t, i) => (flagged.has(t) || data.is_anomaly[i] ? data.values[feature][i] : null)));
  series.push({ label: "anomaly", stroke: COLOURS.incident, width: 0, paths: () => null,
    points: { show: true, size: 8, fill: COLOURS.incident, stroke: COLOURS.incident } });
  const sync = uPlot.sync("sentinel");
  const common = (h) => ({ width, height: h, cursor: { sync: { key: sync.key } }, plugins: [spansPlugin(spans)],
    scales: { x: { time: true } } });
  const top = el("div", { "data-role": "readings" });
  $("#chart-readings").replaceChildren(top);
  $("#chart-readings").dataset.points = String(xs.length);
  state.charts.push(new uPlot({ ...common(230), series, axes: [{}, { label: data.unit || "reading" }] }, readings, top));
  const bottom = el("div", { "data-role": "score" });
  $("#chart-score").replaceChildren(bottom);
  $("#chart-score").dataset.points = String(xs.length);
  const scoreData = [xs, data.score, data.threshold,
    xs.map((t, i) => (flagged.has(t) || data.is_anomaly[i] ? data.score[i] : null))];
  state.charts.push(new uPlot({ ...common(170), series: [{}, { label: "score", stroke: "#37474f", width: 1.5 },
    { label: "threshold", stroke: COLOURS.incident, width: 1.5, dash: [4, 4] },
    { label: "anomaly", stroke: COLOURS.incident, width: 0, paths: () => null,
      points: { show: true, size: 8, fill: COLOURS.incident, stroke: COLOURS.incident } }],
    axes: [{}, { label: "score" }] }, scoreData, bottom));
}

// ------------------------------------------------------------------ polling
async function refresh(force = false) {
  if (state.busy && !force) return;
  state.busy = true;
  try {
    const [health, sensors, incidents] = await Promise.all([
      api("api/health"), api("api/sensors"), api("api/incidents?status=open&limit=200")]);
    const nb = health.newest_batch;
    $("#health").dataset.state = health.reachable ? "up" : "down";
    $("#health").textContent = health.reachable
      ? (nb ? `batch ${nb.batch_id} at ${fmtTime(nb.written_at)}, events up to ${fmtTime(nb.max_event_time)}` +
          (health.batch_age_s !== null ? ` (${Math.round(health.batch_age_s)} s ago)` : "") : "store reachable, no batch yet")
      : `store unreachable: ${health.error || ""}`;
    state.sensors = sensors.items;
    state.incidents = incidents.items;
    const counts = Object.entries(sensors.counts || {}).filter(([, n]) => n).map(([k, n]) => `${n} ${k}`).join(", ");
    $("#sensor-counts").textContent = `${sensors.items.length}${counts ? `: ${counts}` : ""}`;
    drawMap(state.sensors);
    drawIncidents(state.incidents);
    const batch = nb ? nb.batch_id : null;
    if (state.selected && (force || batch !== state.batch)) loadChart();
    state.batch = batch;
    state.polls += 1;
    $("#updated").dataset.polls = String(state.polls);
    $("#updated").textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC (every ${POLL_MS / 1000} s)`;
  } catch (err) {
    $("#health").dataset.state = "down";
    $("#health").textContent = `cannot reach the server: ${err.message}`;
  } finally {
    state.busy = false;
  }
}

$("#token").value = sessionStorage.getItem("sentinel-token") || "";
$("#actor").value = sessionStorage.getItem("sentinel-actor") || "";
refresh();
setInterval(refresh, POLL_MS);
