// Live fleet for the demo page: the stream through siscom-stream.js (which reconnects, resumes
// from the last cursor so that no alert is missed, and changes the subscription in place), a
// table of vehicles and a list of alerts beside a map. The map is Leaflet over raster tiles
// when the server names a tile server (the siscom-map-tiles <meta>), else the offline grid.
//
// Trails hold the positions of the last TRAIL_MINUTES received since the page opened.
//
// ?device_ids=a,b shows only those vehicles (the filter box changes the subscription);
// ?lat=..&lon=..&zoom=.. fixes the first view of the tile map instead of fitting the vehicles.
//
// Zoomed in to BBOX_ZOOM or closer by the user, the page streams only what is in view: it
// reconnects once with ?bbox= (the library's setBbox), then moves the box in place as the map
// pans; vehicles that leave the view ("leave" frames) are dropped. Zoomed out again, the box
// becomes the whole world.
"use strict";

(() => {
  const TRAIL_MINUTES = 5, TRAIL_POINTS = 300, FLASH_MS = 6000, ALERTS_SHOWN = 50;
  const BBOX_ZOOM = 15, WORLD = [-180, -90, 180, 90];
  const $ = (selector) => document.querySelector(selector);
  const devices = new Map(); // id -> {id, lat, lon, speed, heading, time, stopped, flashing, trail, row}
  const changed = new Set();
  let drawScheduled = false;
  let received = 0; // message frames since the last rate update

  const view = createView(new URLSearchParams(location.search));

  function createView(query) {
    const url = $('meta[name="siscom-map-tiles"]').content;
    if (!url) return new GridView($("#map"));
    const attribution = $('meta[name="siscom-map-attribution"]').content;
    const [lat, lon, zoom] = ["lat", "lon", "zoom"].map((name) => parseFloat(query.get(name)));
    const fixed = [lat, lon, zoom].every(Number.isFinite) ? { lat, lon, zoom } : null;
    $("#map").classList.add("tiles");
    return new TileMapView($("#map"), { url, attribution }, fixed);
  }

  function setStatus(text, state) {
    const status = $("#status");
    status.textContent = text;
    status.className = "status " + (state || "");
  }

  function showStatus(status, detail) {
    if (status === "reset") {
      clearDevices(); // a new view starts with its own snapshot
    } else if (status === "connecting") {
      setStatus("connecting…");
    } else if (status === "open") {
      setStatus(detail.resuming ? "resuming…" : "live", "open");
    } else if (status === "resumed") {
      setStatus(detail.recovered ? "live (resumed)" : "live (resumed, some alerts may be missing)", "open");
      if (!detail.recovered) noteGap(detail.reason);
    } else if (status === "reconnecting") {
      const why = detail.code ? ` (${detail.code}${detail.reason ? ": " + detail.reason : ""})` : "";
      setStatus(`connection lost${why}, retrying in ${(detail.delay / 1000).toFixed(1)} s…`, "closed");
    } else if (status === "failed") {
      setStatus("error: " + (detail.error || detail.reason || detail.code), "closed");
    }
  }

  const stream = new SiscomStream({
    deviceIds: new URLSearchParams(location.search).get("device_ids") || null,
    onMessage: (record) => {
      received += 1;
      updateDevice(record);
    },
    onAlert: showAlert,
    onLeave: removeDevice,
    onError: (message) => setStatus("error: " + message, "closed"),
    onStatus: showStatus,
  });

  // The vehicles of the page are those of the subscription: a filter change drops the others.
  function watched(id) {
    return stream.deviceIds === null || stream.deviceIds.includes(id);
  }

  function applyFilter(ids) {
    stream.setDevices(ids || null);
    for (const device of [...devices.values()]) {
      if (!watched(device.id)) removeDevice(device.id);
    }
  }

  function fieldsOf(record) {
    const data = record.data || record;
    return { data, id: String(data.DEVICE_ID ?? data.device_id ?? record.device_id) };
  }

  function updateDevice(record) {
    const { data, id } = fieldsOf(record);
    if (!watched(id)) return; // sent before an unsubscribe reached the server
    const lat = parseFloat(data.LATITUD), lon = parseFloat(data.LONGITUD);
    if (!Number.isFinite(lat) || !Number.isFinite(lon)) return;
    let device = devices.get(id);
    if (!device) {
      device = createDevice(id);
      devices.set(id, device);
    }
    const heading = parseFloat(data.HEADING ?? data.COURSE);
    const speed = parseFloat(data.SPEED) || 0;
    Object.assign(device, {
      lat, lon, speed, stopped: speed < 1, time: data.GPS_DATETIME || "",
      heading: Number.isFinite(heading) ? heading : null,
    });
    const now = Date.now();
    device.trail.push({ lat, lon, at: now });
    while (device.trail.length > TRAIL_POINTS || device.trail[0].at < now - TRAIL_MINUTES * 60000) device.trail.shift();
    device.row.cells[1].textContent = speed.toFixed(1);
    // The time of day is what changes; the full timestamp is in the tooltip.
    device.row.cells[2].textContent = device.time.split(" ").pop();
    device.row.cells[2].title = device.time;
    touch(device);
  }

  function clearDevices() {
    for (const device of devices.values()) device.row.remove();
    devices.clear();
    changed.clear();
    view.clear();
  }

  function removeDevice(id) {
    const device = devices.get(id);
    if (!device) return;
    devices.delete(id);
    changed.delete(device);
    device.row.remove();
    view.remove(device);
  }

  // The view moved (by the user): stream only what is in it when zoomed in.
  function viewChanged({ zoom, bbox }) {
    if (zoom >= BBOX_ZOOM) stream.setBbox(bbox);
    else if (stream.bbox) stream.setBbox(WORLD);
  }
  if (view.onViewChange) view.onViewChange(viewChanged);

  function createDevice(id) {
    const device = { id, trail: [], stopped: false, flashing: false, heading: null };
    const row = $("#devices tbody").insertRow();
    row.dataset.deviceId = id;
    row.insertCell().textContent = id;
    row.insertCell().className = "number";
    row.insertCell().className = "number";
    // Pointing at a row picks out its vehicle on the map; a click brings it into view.
    row.addEventListener("mouseenter", () => view.focus(device, true));
    row.addEventListener("mouseleave", () => view.focus(device, false));
    row.addEventListener("click", () => view.reveal(device));
    device.row = row;
    return device;
  }

  // An alert goes to the top of the list, with its record's id, and its vehicle flashes for a
  // few seconds. The stream resumes from its cursor after a reconnect, so the list has no gap.
  function showAlert(record, frame) {
    const { data, id } = fieldsOf(record);
    const alertId = String(record.uuid ?? data.ALERT_ID ?? frame.id ?? "");
    const item = document.createElement("li");
    item.dataset.deviceId = id;
    item.dataset.alertId = alertId;
    const time = (data.GPS_DATETIME || new Date().toISOString()).split(/[ T]/).pop();
    item.textContent = `${time} ${id} ${data.ALERT || "alert"} `;
    const label = document.createElement("small");
    label.className = "alert-id";
    label.textContent = alertId.length > 12 ? alertId.slice(0, 8) + "…" : alertId;
    label.title = alertId;
    item.append(label);
    prependAlert(item);
    const device = devices.get(id);
    if (!device) return;
    item.addEventListener("click", () => view.reveal(device));
    device.flashing = true;
    clearTimeout(device.flashTimer);
    device.flashTimer = setTimeout(() => {
      device.flashing = false;
      touch(device);
    }, FLASH_MS);
    touch(device);
  }

  function prependAlert(item) {
    const list = $("#alerts");
    list.prepend(item);
    while (list.children.length > ALERTS_SHOWN) list.lastChild.remove();
  }

  // A resume that could not be honoured: what came meanwhile is not in the list.
  function noteGap(reason) {
    const item = document.createElement("li");
    item.className = "gap";
    item.textContent = `reconnected: alerts in between may be missing${reason ? " (" + reason + ")" : ""}`;
    prependAlert(item);
  }

  function touch(device) {
    changed.add(device);
    if (!drawScheduled) {
      drawScheduled = true;
      requestAnimationFrame(draw);
    }
  }

  function draw() {
    drawScheduled = false;
    // A vehicle dropped by a reconnect may still have a flash timer running.
    const live = [...changed].filter((device) => devices.get(device.id) === device);
    changed.clear();
    view.draw(devices, live);
  }

  $("#filter").addEventListener("submit", (event) => {
    event.preventDefault();
    const ids = $("#device-ids").value.trim();
    const url = new URL(location.href);
    if (ids) url.searchParams.set("device_ids", ids); else url.searchParams.delete("device_ids");
    history.replaceState(null, "", url);
    applyFilter(ids);
  });

  // Vehicles on the map and frames per second, next to the connection status.
  setInterval(() => {
    $("#summary").textContent = `${devices.size} vehicles · ${received} positions/s`;
    received = 0;
  }, 1000);

  $("#device-ids").value = new URLSearchParams(location.search).get("device_ids") || "";
})();
