// Vehicles on a Leaflet map over raster tiles; the tile URL and its attribution come from the
// server. Past CLUSTER_AT vehicles the markers are grouped (leaflet.markercluster).
"use strict";

window.TileMapView = (() => {
  const CLUSTER_AT = 300;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const FIT = { padding: [40, 40], maxZoom: 16 };
  const FIT_WAIT_MS = 300;

  // A DivIcon that draws the vehicle: an arrow turned to its heading, a dot when it stands
  // still, its id beside it. Leaflet calls createIcon again whenever the marker comes back on
  // the map (the cluster group takes markers off and on), so the element always shows `vehicle`
  // as it is now.
  const VehicleIcon = L.DivIcon.extend({
    options: { className: "marker", iconSize: [24, 24], html: "" },

    createIcon(oldIcon) {
      const element = L.DivIcon.prototype.createIcon.call(this, oldIcon);
      const vehicle = this.options.vehicle;
      element.dataset.deviceId = vehicle.id;
      const arrow = document.createElementNS(SVG_NS, "svg");
      arrow.setAttribute("class", "arrow");
      arrow.setAttribute("viewBox", "-12 -12 24 24");
      const path = document.createElementNS(SVG_NS, "path");
      path.setAttribute("d", "M0,-11 L8,9 L0,4 L-8,9 Z");
      arrow.append(path);
      const dot = document.createElement("span");
      dot.className = "dot";
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = vehicle.id;
      element.append(arrow, dot, label);
      style(element, vehicle);
      return element;
    },
  });

  function style(element, vehicle) {
    element.classList.toggle("stopped", vehicle.stopped);
    element.classList.toggle("flash", vehicle.flashing);
    // A style property, not a style attribute: the page's CSP forbids inline style attributes.
    element.firstChild.style.transform = `rotate(${vehicle.heading ?? 0}deg)`;
  }

  return class TileMapView {
    // `view` ({lat, lon, zoom}) fixes the first view; without it the map fits the first vehicles.
    constructor(container, tiles, view) {
      this.map = L.map(container, { zoomSnap: 1 });
      L.tileLayer(tiles.url, { maxZoom: 19, attribution: tiles.attribution }).addTo(this.map);
      L.control.scale({ imperial: false }).addTo(this.map);
      this.trails = L.layerGroup().addTo(this.map);
      this.vehicles = L.layerGroup().addTo(this.map);
      this.clustered = false;
      this.entries = new Map(); // id -> {marker, trail, vehicle}
      // Until the user moves the map (or the URL fixes the view), the view follows the fleet:
      // it fits every vehicle seen, again whenever a new one appears outside it.
      this.following = !view;
      this.hasView = Boolean(view);
      if (view) this.map.setView([view.lat, view.lon], view.zoom);
      // Moved by the user (not by the page fitting the fleet): only then may the page narrow its
      // stream to what is in view.
      this.userMoved = false;
      for (const type of ["pointerdown", "wheel", "keydown"]) {
        container.addEventListener(type, () => { this.following = false; this.userMoved = true; }, { passive: true });
      }
    }

    // Calls `callback({zoom, bbox})` after each move the user made, with the visible area padded
    // by a fifth each way as [west, south, east, north] (GeoJSON order), within -180..180.
    onViewChange(callback) {
      this.map.on("moveend", () => {
        if (!this.userMoved) return;
        const bounds = this.map.getBounds().pad(0.2);
        let [west, east] = [bounds.getWest(), bounds.getEast()];
        if (east - west >= 360) [west, east] = [-180, 180];
        const wrap = (lon) => ((((lon + 180) % 360) + 360) % 360) - 180;
        if (west < -180 || east > 180) [west, east] = [wrap(west), wrap(east)]; // across the antimeridian
        const clampLat = (lat) => Math.max(-90, Math.min(90, lat));
        const bbox = [west, clampLat(bounds.getSouth()), east, clampLat(bounds.getNorth())].map((v) => +v.toFixed(6));
        callback({ zoom: this.map.getZoom(), bbox });
      });
    }

    remove(vehicle) {
      const entry = this.entries.get(vehicle.id);
      if (!entry) return;
      this.vehicles.removeLayer(entry.marker);
      this.trails.removeLayer(entry.trail);
      this.entries.delete(vehicle.id);
    }

    draw(devices, changed) {
      let outside = false;
      for (const vehicle of changed) {
        let entry = this.entries.get(vehicle.id);
        if (!entry) {
          entry = this.create(vehicle);
          outside ||= !this.hasView || !this.map.getBounds().contains([vehicle.lat, vehicle.lon]);
        } else {
          entry.marker.setLatLng([vehicle.lat, vehicle.lon]);
        }
        entry.trail.setLatLngs(vehicle.trail.map((t) => [t.lat, t.lon]));
        this.restyle(vehicle);
      }
      if (!this.clustered && this.entries.size > CLUSTER_AT) this.cluster();
      if (this.following && outside && !this.fitTimer) {
        // A short wait gathers the vehicles that report together (the snapshot of a new stream)
        // into one view. Until the map has a view, Leaflet holds back the layers and the tiles.
        this.fitTimer = setTimeout(() => {
          this.fitTimer = null;
          if (!this.following || devices.size === 0) return;
          this.map.fitBounds(L.latLngBounds([...devices.values()].map((d) => [d.lat, d.lon])), FIT);
          this.hasView = true;
        }, FIT_WAIT_MS);
      }
    }

    create(vehicle) {
      const marker = L.marker([vehicle.lat, vehicle.lon], {
        icon: new VehicleIcon({ vehicle }), title: vehicle.id, keyboard: false,
      });
      const trail = L.polyline([], { className: "trail", color: "#1c5d99", weight: 3, opacity: 0.55, interactive: false });
      this.trails.addLayer(trail);
      this.vehicles.addLayer(marker);
      const entry = { marker, trail, vehicle };
      this.entries.set(vehicle.id, entry);
      return entry;
    }

    restyle(vehicle) {
      const element = this.entries.get(vehicle.id)?.marker.getElement();
      if (element) style(element, vehicle);
    }

    // Too many markers to read one by one: from now on they are grouped by area.
    cluster() {
      const markers = [...this.entries.values()].map((entry) => entry.marker);
      this.map.removeLayer(this.vehicles);
      this.vehicles = L.markerClusterGroup({ chunkedLoading: true, showCoverageOnHover: false });
      this.vehicles.addLayers(markers);
      this.map.addLayer(this.vehicles);
      this.map.getContainer().classList.add("clustered");
      this.clustered = true;
    }

    clear() {
      this.map.removeLayer(this.vehicles);
      this.trails.clearLayers();
      this.vehicles = L.layerGroup().addTo(this.map);
      this.map.getContainer().classList.remove("clustered");
      this.clustered = false;
      this.entries.clear();
    }

    focus(vehicle, on) {
      this.entries.get(vehicle.id)?.marker.getElement()?.classList.toggle("focus", on);
    }

    // Bring a vehicle into view (out of its cluster, if it is in one).
    reveal(vehicle) {
      const entry = this.entries.get(vehicle.id);
      if (!entry) return;
      if (this.clustered) {
        this.vehicles.zoomToShowLayer(entry.marker);
      } else {
        this.map.panTo(entry.marker.getLatLng());
      }
    }
  };
})();
