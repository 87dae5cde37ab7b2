// Vehicles on a plain latitude/longitude grid, drawn as SVG: no tiles and no third-party code,
// so it works offline (STREAM_MAP_TILE_URL=off). The view fits the vehicles seen.
"use strict";

window.GridView = (() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const WIDTH = 1000, HEIGHT = 700, MARGIN = 40;

  function svg(name, attributes = {}) {
    const element = document.createElementNS(SVG_NS, name);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
    return element;
  }

  function niceStep(raw) {
    const power = Math.pow(10, Math.floor(Math.log10(raw || 0.001)));
    return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || power * 10;
  }

  const line = (x1, y1, x2, y2) => svg("line", { x1, y1, x2, y2, class: "gridline" });
  const label = (x, y, text) => {
    const element = svg("text", { x, y, class: "gridlabel" });
    element.textContent = text;
    return element;
  };

  return class GridView {
    constructor(container) {
      this.root = svg("svg", {
        class: "grid-map", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "xMidYMid meet", role: "img",
      });
      this.grid = svg("g");
      this.trails = svg("g");
      this.markers = svg("g");
      this.scale = svg("g", { class: "scale" });
      this.root.append(this.grid, this.trails, this.markers, this.scale);
      container.append(this.root);
      this.shapes = new Map(); // id -> {marker, path}
    }

    draw(devices, changed) {
      for (const device of changed) {
        if (!this.shapes.has(device.id)) this.shapes.set(device.id, this.create(device.id));
      }
      if (devices.size === 0) return;
      // The projection moves with every vehicle, so everything is redrawn.
      const p = this.projection(devices);
      for (const device of devices.values()) {
        const { marker, path } = this.shapes.get(device.id);
        marker.setAttribute("transform", `translate(${p.x(device.lon).toFixed(1)},${p.y(device.lat).toFixed(1)})`);
        marker.classList.toggle("stopped", device.stopped);
        marker.classList.toggle("flash", device.flashing);
        marker.querySelector(".arrow").setAttribute("transform", `rotate(${device.heading ?? 0})`);
        path.setAttribute("points", device.trail.map((t) => `${p.x(t.lon).toFixed(1)},${p.y(t.lat).toFixed(1)}`).join(" "));
      }
      this.drawGrid(p);
      this.drawScale(p);
    }

    create(id) {
      const marker = svg("g", { class: "marker" });
      marker.dataset.deviceId = id;
      // An arrow pointing up, turned to the vehicle's heading; a dot when it stands still.
      const text = svg("text", { x: 10, y: 4 });
      text.textContent = id;
      const title = svg("title");
      title.textContent = id;
      marker.append(svg("circle", { class: "ring", r: 12 }), svg("path", { class: "arrow", d: "M0,-9 L6,6 L0,3 L-6,6 Z" }),
        svg("circle", { class: "dot", r: 5 }), text, title);
      this.markers.append(marker);
      const path = svg("polyline", { class: "trail" });
      this.trails.append(path);
      return { marker, path };
    }

    clear() {
      for (const { marker, path } of this.shapes.values()) {
        marker.remove();
        path.remove();
      }
      this.shapes.clear();
      this.grid.replaceChildren();
      this.scale.replaceChildren();
    }

    remove(device) {
      const shape = this.shapes.get(device.id);
      if (!shape) return;
      shape.marker.remove();
      shape.path.remove();
      this.shapes.delete(device.id);
    }

    focus(device, on) {
      this.shapes.get(device.id)?.marker.classList.toggle("focus", on);
    }

    reveal(device) {
      this.focus(device, true);
      setTimeout(() => this.focus(device, false), 1500);
    }

    // Equirectangular projection fitted to the vehicles seen, longitudes scaled by cos(latitude).
    projection(devices) {
      let minLat = Infinity, maxLat = -Infinity, minLon = Infinity, maxLon = -Infinity;
      for (const device of devices.values()) {
        for (const { lat, lon } of device.trail) {
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

    // A scale bar of a round number of metres, about a fifth of the map wide.
    drawScale(p) {
      const { minLat } = p.bounds;
      const metresPerPixel = 111320 / Math.abs(p.y(minLat + 1) - p.y(minLat));
      const metres = niceStep((WIDTH / 5) * metresPerPixel);
      const length = metres / metresPerPixel;
      const x = WIDTH - MARGIN - length, y = HEIGHT - 16;
      this.scale.replaceChildren(
        line(x, y, x + length, y),
        line(x, y - 5, x, y + 1),
        line(x + length, y - 5, x + length, y + 1),
        label(x, y - 8, metres >= 1000 ? `${metres / 1000} km` : `${metres} m`),
      );
    }

    drawGrid(p) {
      this.grid.replaceChildren();
      const { minLat, maxLat, minLon, maxLon } = p.bounds;
      const step = niceStep(Math.max(maxLat - minLat, maxLon - minLon) / 4);
      for (let lat = Math.floor(minLat / step) * step; lat <= maxLat + step; lat += step) {
        this.grid.append(line(0, p.y(lat), WIDTH, p.y(lat)), label(4, p.y(lat) - 3, lat.toFixed(3)));
      }
      for (let lon = Math.floor(minLon / step) * step; lon <= maxLon + step; lon += step) {
        this.grid.append(line(p.x(lon), 0, p.x(lon), HEIGHT), label(p.x(lon) + 3, HEIGHT - 4, lon.toFixed(3)));
      }
    }
  };
})();
