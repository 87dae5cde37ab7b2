// Live fleet for the demo page: one WebSocket of JSON frames (message, alert, ping, ack, error),
// a table of vehicles and a list of alerts beside a map. The map is Leaflet over raster tiles
// when the server names a tile server (the siscom-map-tiles <meta>), else the offline grid.
//
// Trails hold the positions of the last TRAIL_MINUTES received since the page opened: the
// stream cannot replay past positions yet (there is no `since=`), so a trail builds up live.
//
// ?device_ids=a,b shows only those vehicles (the filter box reconnects with it);
// ?lat=..&lon=..&zoom=.. fixes the first view of the tile map instead of fitting the vehicles.
//
// Zoomed in to BBOX_ZOOM or closer by the user, the page streams only what is in view: it
// reconnects once with ?bbox=, then moves the box with {"action":"subscribe","bbox":[...]} as the
// map pans; vehicles that leave the view ("leave" frames) are dropped. Zoomed out again, the
// box becomes the whole world.
"use strict";

(() => {
  const TRAIL_MINUTES = 5, TRAIL_POINTS = 300, FLASH_MS = 6000, ALERTS_SHOWN = 50;
  const BBOX_ZOOM = 15, WORLD = [-180, -90, 180, 90];
  const $ = (selector) => document.querySelector(selector);
  const devices = new Map(); // id -> {id, lat, lon, speed, heading, time, stopped, flashing, trail, row}
  const changed = new Set();
  let socket = null;
  let drawScheduled = false;
  let received = 0; // message frames since the last rate update
  let streamBox = null; // the box of the current stream, if it was opened with one

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

  function streamUrl(deviceIds, box) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const params = [];
    if (deviceIds) params.push("device_ids=" + encodeURIComponent(deviceIds));
    if (box) params.push("bbox=" + box.join(","));
    const query = params.length ? "?" + params.join("&") : "";
    return `${scheme}//${location.host}/api/v1/stream${query}`;
  }

  function setStatus(text, state) {
    const status = $("#status");
    status.textContent = text;
    status.className = "status " + (state || "");
  }

  function connect(deviceIds, box = null) {
    streamBox = box;
    if (socket) {
      socket.onclose = null;
      socket.close(1000);
    }
    for (const device of devices.values()) device.row.remove();
    devices.clear();
    changed.clear();
    view.clear();
    socket = new WebSocket(streamUrl(deviceIds, box));
    setStatus("connecting…");
    socket.onopen = () => setStatus("live", "open");
    received = 0;
    socket.onmessage = (event) => handleFrame(JSON.parse(event.data));
    socket.onclose = (event) => {
      setStatus(`closed (${event.code}${event.reason ? ": " + event.reason : ""}), retrying…`, "closed");
      setTimeout(() => connect(deviceIds, streamBox), 2000);
    };
  }

  function handleFrame(frame) {
    if (frame.event === "message") {
      received += 1;
      updateDevice(frame.data);
    } else if (frame.event === "alert") {
      showAlert(frame.data);
    } else if (frame.event === "leave") {
      removeDevice(String(frame.data.device_id));
    } else if (frame.event === "error") {
      setStatus("error: " + frame.data.message, "closed");
    } // ping and ack need no answer
  }

  function fieldsOf(record) {
    const data = record.data || record;
    return { data, id: String(data.DEVICE_ID ?? data.device_id ?? record.device_id) };
  }

  function updateDevice(record) {
    const { data, id } = fieldsOf(record);
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
    const box = zoom >= BBOX_ZOOM ? bbox : WORLD;
    if (!streamBox) {
      if (zoom >= BBOX_ZOOM) connect($("#device-ids").value.trim(), box);
      return;
    }
    streamBox = box;
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ action: "subscribe", bbox: box }));
    }
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

  // An alert goes to the top of the list, and its vehicle flashes for a few seconds.
  function showAlert(record) {
    const { data, id } = fieldsOf(record);
    const item = document.createElement("li");
    item.dataset.deviceId = id;
    const time = (data.GPS_DATETIME || new Date().toISOString()).split(/[ T]/).pop();
    item.textContent = `${time} ${id} ${data.ALERT || "alert"}`;
    const list = $("#alerts");
    list.prepend(item);
    while (list.children.length > ALERTS_SHOWN) list.lastChild.remove();
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
    connect(ids, streamBox);
  });

  // Vehicles on the map and frames per second, next to the connection status.
  setInterval(() => {
    $("#summary").textContent = `${devices.size} vehicles · ${received} positions/s`;
    received = 0;
  }, 1000);

  const initial = new URLSearchParams(location.search).get("device_ids") || "";
  $("#device-ids").value = initial;
  connect(initial);
})();
