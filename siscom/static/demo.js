// Live fleet map for the demo page: plain WebSocket + JSON.parse, drawn as SVG.
// No tiles and no third-party code, so it works offline; the view fits the vehicles seen.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const WIDTH = 1000, HEIGHT = 700, MARGIN = 40, TRAIL = 40;
const devices = new Map(); // id -> {lat, lon, speed, heading, time, trail: [[lat, lon]], marker, path, row}
let socket = null;
let drawScheduled = false;
let received = 0; // message frames since the last rate update

const $ = (selector) => document.querySelector(selector);

function streamUrl(deviceIds) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = deviceIds ? "?device_ids=" + encodeURIComponent(deviceIds) : "";
  return `${scheme}//${location.host}/api/v1/stream${query}`;
}

function setStatus(text, state) {
  const status = $("#status");
  status.textContent = text;
  status.className = "status " + (state || "");
}

function connect(deviceIds) {
  if (socket) {
    socket.onclose = null;
    socket.close(1000);
  }
  for (const device of devices.values()) {
    device.marker.remove();
    device.path.remove();
    device.row.remove();
  }
  devices.clear();
  socket = new WebSocket(streamUrl(deviceIds));
  setStatus("connecting…");
  socket.onopen = () => setStatus("live", "open");
  received = 0;
  socket.onmessage = (event) => handleFrame(JSON.parse(event.data));
  socket.onclose = (event) => {
    setStatus(`closed (${event.code}${event.reason ? ": " + event.reason : ""}), retrying…`, "closed");
    setTimeout(() => connect(deviceIds), 2000);
  };
}

function handleFrame(frame) {
  if (frame.event === "message") {
    received += 1;
    updateDevice(frame.data);
  } else if (frame.event === "alert") {
    const data = frame.data.data || frame.data;
    const item = document.createElement("li");
    item.textContent = `${data.GPS_DATETIME || new Date().toISOString()} ${data.DEVICE_ID || ""} ${data.ALERT || "alert"}`;
    const list = $("#alerts");
    list.prepend(item);
    while (list.children.length > 20) list.lastChild.remove();
  } else if (frame.event === "error") {
    setStatus("error: " + frame.data.message, "closed");
  }
}

function updateDevice(record) {
  const data = record.data || record;
  const id = String(data.DEVICE_ID ?? data.device_id ?? record.device_id);
  const lat = parseFloat(data.LATITUD), lon = parseFloat(data.LONGITUD);
  if (!Number.isFinite(lat) || !Number.isFinite(lon)) return;
  let device = devices.get(id);
  if (!device) {
    device = createDevice(id);
    devices.set(id, device);
  }
  const heading = parseFloat(data.HEADING);
  Object.assign(device, {
    lat, lon, speed: parseFloat(data.SPEED) || 0, time: data.GPS_DATETIME || "",
    heading: Number.isFinite(heading) ? heading : null,
  });
  device.trail.push([lat, lon]);
  if (device.trail.length > TRAIL) device.trail.shift();
  device.row.cells[1].textContent = device.speed.toFixed(1);
  // The time of day is what changes; the full timestamp is in the tooltip.
  device.row.cells[2].textContent = device.time.split(" ").pop();
  device.row.cells[2].title = device.time;
  scheduleDraw();
}

function createDevice(id) {
  const marker = document.createElementNS(SVG_NS, "g");
  marker.setAttribute("class", "marker");
  marker.dataset.deviceId = id;
  // An arrow pointing up, turned to the vehicle's heading; a dot when it stands still.
  const arrow = document.createElementNS(SVG_NS, "path");
  arrow.setAttribute("class", "arrow");
  arrow.setAttribute("d", "M0,-9 L6,6 L0,3 L-6,6 Z");
  const circle = document.createElementNS(SVG_NS, "circle");
  circle.setAttribute("r", 5);
  const label = document.createElementNS(SVG_NS, "text");
  label.setAttribute("x", 10);
  label.setAttribute("y", 4);
  label.textContent = id;
  const title = document.createElementNS(SVG_NS, "title");
  title.textContent = id;
  marker.append(arrow, circle, label, title);
  $("#markers").append(marker);
  const path = document.createElementNS(SVG_NS, "polyline");
  path.setAttribute("class", "trail");
  $("#trails").append(path);
  const row = $("#devices tbody").insertRow();
  row.insertCell().textContent = id;
  row.insertCell().className = "number";
  row.insertCell().className = "number";
  // Pointing at a row picks out its vehicle on the map.
  row.addEventListener("mouseenter", () => marker.classList.add("focus"));
  row.addEventListener("mouseleave", () => marker.classList.remove("focus"));
  return { trail: [], marker, path, row };
}

function scheduleDraw() {
  if (!drawScheduled) {
    drawScheduled = true;
    requestAnimationFrame(draw);
  }
}

// Equirectangular projection fitted to the vehicles seen, longitudes scaled by cos(latitude).
function projection() {
  let minLat = Infinity, maxLat = -Infinity, minLon = Infinity, maxLon = -Infinity;
  for (const d of devices.values()) {
    for (const [lat, lon] of d.trail) {
      minLat = Math.min(minLat, lat); maxLat = Math.max(maxLat, lat);
      minLon = Math.min(minLon, lon); maxLon = Math.max(maxLon, lon);
    }
  }
  const k = Math.cos(((minLat + maxLat) / 2) * Math.PI / 180);
  const spanX = Math.max((maxLon - minLon) * k, 0.005), spanY = Math.max(maxLat - minLat, 0.005);
  const scale = Math.min((WIDTH - 2 * MARGIN) / spanX, (HEIGHT - 2 * MARGIN) / spanY);
  const cx = (minLon + maxLon) / 2, cy = (minLat + maxLat) / 2;
  return {
    x: (lon) => WIDTH / 2 + (lon - cx) * k * scale,
    y: (lat) => HEIGHT / 2 - (lat - cy) * scale,
    bounds: { minLat, maxLat, minLon, maxLon },
  };
}

function draw() {
  drawScheduled = false;
  if (devices.size === 0) return;
  const p = projection();
  for (const d of devices.values()) {
    d.marker.setAttribute("transform", `translate(${p.x(d.lon).toFixed(1)},${p.y(d.lat).toFixed(1)})`);
    d.marker.classList.toggle("stopped", d.speed < 1);
    d.marker.querySelector(".arrow").setAttribute("transform", `rotate(${d.heading ?? 0})`);
    d.path.setAttribute("points", d.trail.map(([lat, lon]) => `${p.x(lon).toFixed(1)},${p.y(lat).toFixed(1)}`).join(" "));
  }
  drawGrid(p);
  drawScale(p);
}

// A scale bar of a round number of metres, about a fifth of the map wide.
function drawScale(p) {
  const { minLat, maxLat } = p.bounds;
  const metresPerPixel = 111320 / Math.abs(p.y(minLat + 1) - p.y(minLat));
  const metres = niceStep((WIDTH / 5) * metresPerPixel);
  const length = metres / metresPerPixel;
  const x = WIDTH - MARGIN - length, y = HEIGHT - 16;
  const scale = $("#scale");
  scale.replaceChildren(
    line(x, y, x + length, y),
    line(x, y - 5, x, y + 1),
    line(x + length, y - 5, x + length, y + 1),
    label(x, y - 8, metres >= 1000 ? `${metres / 1000} km` : `${metres} m`),
  );
  if (!Number.isFinite(maxLat)) scale.replaceChildren();
}

function drawGrid(p) {
  const grid = $("#grid");
  grid.replaceChildren();
  const { minLat, maxLat, minLon, maxLon } = p.bounds;
  const step = niceStep(Math.max(maxLat - minLat, maxLon - minLon) / 4);
  for (let lat = Math.floor(minLat / step) * step; lat <= maxLat + step; lat += step) {
    grid.append(line(0, p.y(lat), WIDTH, p.y(lat)), label(4, p.y(lat) - 3, lat.toFixed(3)));
  }
  for (let lon = Math.floor(minLon / step) * step; lon <= maxLon + step; lon += step) {
    grid.append(line(p.x(lon), 0, p.x(lon), HEIGHT), label(p.x(lon) + 3, HEIGHT - 4, lon.toFixed(3)));
  }
}

function niceStep(raw) {
  const power = Math.pow(10, Math.floor(Math.log10(raw || 0.001)));
  return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || power * 10;
}

function line(x1, y1, x2, y2) {
  const element = document.createElementNS(SVG_NS, "line");
  Object.entries({ x1, y1, x2, y2 }).forEach(([k, v]) => element.setAttribute(k, v));
  element.setAttribute("class", "gridline");
  return element;
}

function label(x, y, text) {
  const element = document.createElementNS(SVG_NS, "text");
  element.setAttribute("x", x);
  element.setAttribute("y", y);
  element.setAttribute("class", "gridlabel");
  element.textContent = text;
  return element;
}

$("#filter").addEventListener("submit", (event) => {
  event.preventDefault();
  const ids = $("#device-ids").value.trim();
  const url = new URL(location.href);
  if (ids) url.searchParams.set("device_ids", ids); else url.searchParams.delete("device_ids");
  history.replaceState(null, "", url);
  connect(ids);
});

// Vehicles on the map and frames per second, next to the connection status.
setInterval(() => {
  $("#summary").textContent = `${devices.size} vehicles · ${received} positions/s`;
  received = 0;
}, 1000);

const initial = new URLSearchParams(location.search).get("device_ids") || "";
$("#device-ids").value = initial;
connect(initial);
