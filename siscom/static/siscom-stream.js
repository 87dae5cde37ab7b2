// siscom-stream.js: a client for the siscom-stream WebSocket endpoint (/api/v1/stream).
//
// It connects, hands each frame to callbacks (and dispatches it as an event), keeps the cursor of
// the last frame it saw, and when the connection drops reconnects with exponential backoff and
// jitter, resuming with that cursor (?cursor=) so that nothing is missed. It changes the
// subscription without reconnecting, and answers the server's token-expiring notice with a fresh
// token from getToken(). No dependencies, no build step.
//
// As a plain script:  <script src="/static/siscom-stream.js"></script>  -> window.SiscomStream
// As an ES module:    import { SiscomStream } from "/static/siscom-stream.mjs";
// (In Node, require() it; it needs a WebSocket class, global or given as an option.)
"use strict";

(function (root, factory) {
  const api = factory(root);
  if (typeof module === "object" && module && module.exports) module.exports = api;
  // Also global: the ES module entry (siscom-stream.mjs) picks it up from there.
  root.SiscomStream = api.SiscomStream;
})(typeof globalThis !== "undefined" ? globalThis : this, function (root) {
  const PATH = "/api/v1/stream";
  const NORMAL = 1000, POLICY = 1008, TOO_BIG = 1009;
  const DEFAULT_BACKOFF = { initial: 500, max: 30000, factor: 2, jitter: 0.5 };

  // Where to connect: a ws(s):// or http(s):// URL, or a path on the page's own host.
  function baseUrl(url, location) {
    const target = url || PATH;
    if (/^wss?:\/\//i.test(target)) return new URL(target);
    if (/^https?:\/\//i.test(target)) {
      const parsed = new URL(target);
      parsed.protocol = parsed.protocol === "https:" ? "wss:" : "ws:";
      return parsed;
    }
    if (!location) throw new Error("SiscomStream: give an absolute url outside a browser");
    const parsed = new URL(target, location.href);
    parsed.protocol = parsed.protocol === "https:" ? "wss:" : "ws:";
    return parsed;
  }

  // A device list as the server reads it: null (every device) or a sorted array without
  // duplicates. As in the query, a string naming no device means every device; an array stays
  // an array (an unsubscribe from every device leaves an empty set, not "all").
  function deviceSet(ids) {
    if (ids === null || ids === undefined) return null;
    const list = typeof ids === "string" ? ids.split(",") : Array.from(ids, String);
    const set = [...new Set(list.map((id) => id.trim()).filter(Boolean))].sort();
    return set.length || typeof ids !== "string" ? set : null;
  }

  /**
   * Delay before reconnect attempt number `attempt` (0 first), in ms: exponential, capped at
   * `max`, with the upper `jitter` fraction of it random so that clients dropped together do not
   * come back together ("equal jitter" for jitter 0.5).
   */
  function backoffDelay(attempt, options, random) {
    const { initial, max, factor, jitter } = Object.assign({}, DEFAULT_BACKOFF, options);
    const ceiling = Math.min(max, initial * Math.pow(factor, attempt));
    return ceiling * (1 - jitter) + ceiling * jitter * random();
  }

  const Base = typeof EventTarget === "function" ? EventTarget : class {};

  class SiscomStream extends Base {
    /**
     * options:
     *   url          ws(s)://, http(s):// or a path (default "/api/v1/stream" on the page's host)
     *   deviceIds    array or comma-separated string; null or absent: every device
     *   cursor       resume from this cursor on the first connect (e.g. one kept across a reload)
     *   since        on the first connect without a cursor: replay from this time (RFC 3339 or ms)
     *   bbox         [min_lon, min_lat, max_lon, max_lat]: only devices in this box (map streams)
     *   params       more query parameters, e.g. {max_hz: 1, fields: "LATITUD,LONGITUD"}
     *   getToken     () => token or a promise of one; asked before every connect and on
     *                token-expiring (null: tokens are off)
     *   onMessage(data, frame), onAlert(data, frame), onError(message, frame),
     *   onStatus(status, detail), onLeave(deviceId, frame), onFrame(frame)   callbacks, all optional
     *   backoff      {initial, max, factor, jitter} in ms (defaults 500, 30000, 2, 0.5)
     *   autoConnect  false to call connect() yourself (default true)
     *   WebSocket, setTimeout, clearTimeout, random   replacements, for tests and other runtimes
     */
    constructor(options = {}) {
      super();
      this.options = options;
      this._WebSocket = options.WebSocket || root.WebSocket;
      this._setTimeout = options.setTimeout || ((fn, ms) => setTimeout(fn, ms));
      this._clearTimeout = options.clearTimeout || ((id) => clearTimeout(id));
      this._random = options.random || Math.random;
      this._base = baseUrl(options.url, root.location);
      /** The device set asked for: null for every device, else a sorted array. */
      const initial = deviceSet(options.deviceIds);
      this.deviceIds = initial && initial.length ? initial : null;
      /** The id of the last frame that carried one: where a reconnect resumes. */
      this.cursor = options.cursor || null;
      /** The box of a map stream, or null. */
      this.bbox = options.bbox ? Array.from(options.bbox, Number) : null;
      this._params = options.params || {};
      this._since = options.since === undefined || options.since === null ? null : String(options.since);
      /** "idle", "connecting", "open", "reconnecting", "closed" (by close()) or "failed". */
      this.status = "idle";
      this.attempt = 0; // reconnect attempts since the last healthy connection
      this._socket = null;
      this._timer = null;
      this._stopped = false;
      this._lastError = null;
      this._sentCursor = null;
      this._generation = 0; // connections opened; a late answer from an old one is ignored
      if (options.autoConnect !== false) this.connect();
    }

    /** Open the connection (again). Safe to call while connecting: it does nothing then. */
    async connect() {
      if (this._socket || this.status === "connecting") return;
      this._stopped = false;
      this._cancelTimer();
      this._openedWithBox = false;
      if (this.deviceIds && !this.deviceIds.length) {
        // Nothing to watch, and no URL can say so (no device_ids means every device): wait for
        // subscribe().
        this._setStatus("idle", { reason: "no devices" });
        return;
      }
      const generation = ++this._generation;
      this._setStatus("connecting", { attempt: this.attempt });
      let token = null;
      if (this.options.getToken) {
        try {
          token = await this.options.getToken();
        } catch (error) {
          if (generation !== this._generation || this._stopped) return;
          this._emit("error", "getToken failed: " + (error && error.message ? error.message : error), null);
          this._scheduleReconnect();
          return;
        }
        if (generation !== this._generation || this._stopped) return;
      }
      const url = this.url();
      this._sentCursor = this.cursor;
      this._openedWithBox = this.bbox !== null;
      const urlBox = this.bbox && this.bbox.join(",");
      this._lastError = null;
      let socket;
      try {
        socket = token ? new this._WebSocket(url, ["bearer", token]) : new this._WebSocket(url);
      } catch (error) {
        this._emit("error", "cannot connect: " + (error && error.message ? error.message : error), null);
        this._scheduleReconnect();
        return;
      }
      this._socket = socket;
      socket.onopen = () => {
        if (this._socket !== socket) return;
        // The box moved while connecting: move it now.
        if (this.bbox && this.bbox.join(",") !== urlBox) this._send({ action: "subscribe", bbox: this.bbox });
        this._setStatus("open", { resuming: this._sentCursor !== null });
      };
      socket.onmessage = (event) => {
        if (this._socket === socket) this._onText(event.data);
      };
      socket.onclose = (event) => {
        if (this._socket === socket) this._onClose(event.code, event.reason);
      };
      socket.onerror = () => {}; // a close event follows, with the code
    }

    /** The URL the next connection opens: device ids, and the cursor (or since) to resume from. */
    url() {
      const url = new URL(this._base.href);
      const params = url.searchParams;
      if (this.deviceIds) params.set("device_ids", this.deviceIds.join(","));
      else params.delete("device_ids");
      params.delete("cursor");
      params.delete("since");
      params.delete("bbox");
      if (this.bbox) params.set("bbox", this.bbox.join(","));
      for (const [name, value] of Object.entries(this._params)) {
        if (value !== null && value !== undefined) params.set(name, String(value));
      }
      if (this.cursor) params.set("cursor", this.cursor);
      else if (this._since !== null) params.set("since", this._since);
      return url.href;
    }

    /** Add devices to the subscription (no reconnect; the server answers with an ack). */
    subscribe(ids) {
      const added = deviceSet(ids) || [];
      if (this.deviceIds !== null) this.deviceIds = deviceSet([...this.deviceIds, ...added]);
      if (!this._command("subscribe", added) && this.status === "idle" && !this._stopped) this.connect();
    }

    /** Remove devices from the subscription (a stream of every device must subscribe first). */
    unsubscribe(ids) {
      const removed = deviceSet(ids) || [];
      if (this.deviceIds !== null) {
        const gone = new Set(removed);
        this.deviceIds = this.deviceIds.filter((id) => !gone.has(id));
      }
      this._command("unsubscribe", removed);
    }

    /**
     * Watch exactly `ids` (null or "" for every device). Between two lists this is an unsubscribe
     * and a subscribe on the open socket; to or from "every device" it reconnects, as a new client
     * (the stream's past is another set's: no cursor, the snapshot of the new set instead).
     */
    setDevices(ids) {
      const wanted = deviceSet(ids);
      const current = this.deviceIds;
      if (wanted !== null && wanted.length && current !== null && current.length) {
        const keep = new Set(wanted);
        const had = new Set(current);
        const removed = current.filter((id) => !keep.has(id));
        if (removed.length) this.unsubscribe(removed);
        const added = wanted.filter((id) => !had.has(id));
        if (added.length) this.subscribe(added);
        return;
      }
      this.deviceIds = wanted && wanted.length ? wanted : null;
      this._fresh();
    }

    /**
     * Move the box of a map stream ([min_lon, min_lat, max_lon, max_lat]; null for none). A stream
     * opened with a box moves it in place (devices that leave get a "leave" frame); one opened
     * without a box reconnects afresh with it, as does dropping the box.
     */
    setBbox(box) {
      const wanted = box ? Array.from(box, Number) : null;
      this.bbox = wanted;
      if (!this._socket) return; // the next connection's URL carries it
      if (wanted && this._openedWithBox) {
        this._send({ action: "subscribe", bbox: wanted }); // not open yet: sent on open
      } else if (!!wanted !== this._openedWithBox) {
        this._fresh();
      }
    }

    // A new stream for a new view: no cursor (the snapshot of the new view, not a replay); the
    // "reset" status tells the application to drop what it shows.
    _fresh() {
      this.cursor = null;
      this._since = null;
      if (this._stopped) return; // closed by close(): the view waits for the next connect()
      this._setStatus("reset", {});
      const socket = this._socket;
      this._socket = null;
      if (socket) {
        socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
        try {
          socket.close(NORMAL);
        } catch (error) {
          // already closing
        }
      }
      this._generation++;
      this.status = "idle";
      this.attempt = 0;
      this.connect();
    }

    /** Close for good (no reconnect). */
    close(code = NORMAL, reason = "") {
      this._stopped = true;
      this._generation++;
      this._cancelTimer();
      const socket = this._socket;
      this._socket = null;
      if (socket) {
        socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
        try {
          socket.close(code, reason);
        } catch (error) {
          // already closing
        }
      }
      this._setStatus("closed", { code, reason });
    }

    // Frames

    _onText(text) {
      let frame;
      try {
        frame = JSON.parse(text);
      } catch (error) {
        this._emit("error", "frame is not JSON", null);
        return;
      }
      if (!frame || typeof frame !== "object") return;
      if (typeof frame.id === "string" && frame.id) {
        this.cursor = frame.id;
        this._since = null; // from here on the cursor says where to resume
      }
      const event = frame.event;
      if (event !== "error") this.attempt = 0; // the server took us: the next drop starts afresh
      this._call("onFrame", frame);
      this._dispatch("frame", frame);
      if (event === "message") {
        this._call("onMessage", frame.data, frame);
        this._dispatch("message", frame);
      } else if (event === "alert") {
        this._call("onAlert", frame.data, frame);
        this._dispatch("alert", frame);
      } else if (event === "leave") {
        this._call("onLeave", frame.data && String(frame.data.device_id), frame);
        this._dispatch("leave", frame);
      } else if (event === "error") {
        this._lastError = frame.data && frame.data.message ? String(frame.data.message) : "error";
        this._emit("error", this._lastError, frame);
      } else if (event === "resumed") {
        this._setStatus("resumed", frame.data || {});
      } else if (event === "token-expiring") {
        this._setStatus("token-expiring", frame.data || {});
        this._refresh();
      } else if (event === "ack") {
        const data = frame.data || {};
        if (data.action === "refresh") this._setStatus("refreshed", data);
        else if ("device_ids" in data) this.deviceIds = deviceSet(data.device_ids);
      }
    }

    async _refresh() {
      if (!this.options.getToken) return;
      const socket = this._socket;
      let token;
      try {
        token = await this.options.getToken();
      } catch (error) {
        this._emit("error", "getToken failed: " + (error && error.message ? error.message : error), null);
        return;
      }
      if (token && socket === this._socket) this._send({ action: "refresh", token });
    }

    _onClose(code, reason) {
      this._socket = null;
      const error = this._lastError;
      if (this._stopped) return;
      if (code === POLICY && this._sentCursor !== null && error !== "token expired" && /cursor/i.test(error || "")) {
        // A cursor the server cannot parse: start over as a new client rather than fail for good.
        this.cursor = null;
      } else if (code === POLICY && error !== "token expired") {
        this._setStatus("failed", { code, reason, error }); // a bad request stays bad: do not retry
        return;
      } else if (code === TOO_BIG) {
        this._setStatus("failed", { code, reason, error });
        return;
      }
      this._scheduleReconnect({ code, reason, error });
    }

    _scheduleReconnect(detail = {}) {
      this._socket = null;
      if (this._stopped) return;
      const delay = backoffDelay(this.attempt, this.options.backoff, this._random);
      this.attempt += 1;
      this._setStatus("reconnecting", Object.assign({ delay, attempt: this.attempt }, detail));
      this._timer = this._setTimeout(() => {
        this._timer = null;
        this.connect();
      }, delay);
    }

    _cancelTimer() {
      if (this._timer !== null) this._clearTimeout(this._timer);
      this._timer = null;
    }

    // Talking back

    _command(action, ids) {
      return ids.length > 0 && this._send({ action, device_ids: ids });
    }

    _send(message) {
      const socket = this._socket;
      if (!socket || socket.readyState !== 1) return false; // the next connect's URL carries the set
      socket.send(JSON.stringify(message));
      return true;
    }

    // Telling the application

    _setStatus(status, detail) {
      if (!["resumed", "token-expiring", "refreshed", "reset"].includes(status)) this.status = status;
      this._call("onStatus", status, detail);
      this._dispatch("status", { status, detail });
    }

    _emit(kind, message, frame) {
      this._call("onError", message, frame);
      this._dispatch(kind, { message, frame });
    }

    _call(name, ...args) {
      const callback = this.options[name];
      if (typeof callback !== "function") return;
      try {
        callback.apply(this, args);
      } catch (error) {
        // An application callback that throws must not break the stream.
        if (typeof console !== "undefined") console.error("SiscomStream " + name + " failed:", error);
      }
    }

    _dispatch(type, detail) {
      if (typeof this.dispatchEvent !== "function") return;
      let event;
      if (typeof CustomEvent === "function") {
        event = new CustomEvent(type, { detail });
      } else {
        event = new Event(type); // runtimes with EventTarget but no CustomEvent (Node 18)
        Object.defineProperty(event, "detail", { value: detail });
      }
      this.dispatchEvent(event);
    }
  }

  SiscomStream.backoffDelay = backoffDelay;
  return { SiscomStream, backoffDelay };
});
