// Unit tests of siscom-stream.js's connection logic (node --test; run by tests/unit/test_client_library.py).
//
// A scripted WebSocket and hand-driven timers stand in for the network and the clock, so that
// backoff, resume and re-subscription are checked step by step. The real thing, in Chromium
// through nginx against two replicas, is tests/integration/test_client_library.py.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

import { SiscomStream, backoffDelay } from "../../siscom/static/siscom-stream.mjs";

const require = createRequire(import.meta.url);

class FakeSocket {
  static instances = [];
  constructor(url, protocols) {
    this.url = new URL(url);
    this.protocols = protocols;
    this.sent = [];
    this.readyState = 0;
    this.closedWith = null;
    FakeSocket.instances.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code) {
    this.closedWith = code;
    this.readyState = 3;
  }
  // The server's side
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  frame(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop(code = 1006, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

function clock() {
  const timers = [];
  return {
    timers,
    setTimeout: (fn, ms) => timers.push({ fn, ms }) - 1,
    clearTimeout: (id) => {
      if (timers[id]) timers[id].fn = null;
    },
    // Run the newest timer; its delay is returned.
    async fire() {
      const timer = timers[timers.length - 1];
      const fn = timer.fn;
      timer.fn = null; // pending no more
      fn?.();
      await settle();
      return timer.ms;
    },
  };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

async function make(options = {}) {
  FakeSocket.instances = [];
  const time = clock();
  const seen = { messages: [], alerts: [], errors: [], statuses: [] };
  const stream = new SiscomStream({
    url: "ws://gateway.test/api/v1/stream",
    WebSocket: FakeSocket,
    setTimeout: time.setTimeout,
    clearTimeout: time.clearTimeout,
    random: () => 1,
    onMessage: (data, frame) => seen.messages.push([data, frame.id]),
    onAlert: (data) => seen.alerts.push(data),
    onError: (message) => seen.errors.push(message),
    onStatus: (status, detail) => seen.statuses.push([status, detail]),
    ...options,
  });
  await settle();
  return { stream, time, seen, socket: () => FakeSocket.instances[FakeSocket.instances.length - 1] };
}

test("the backoff doubles from the initial delay up to the cap, the jitter taking at most its fraction", () => {
  const options = { initial: 100, max: 1000, factor: 2, jitter: 0.5 };
  const highest = [0, 1, 2, 3, 4, 5].map((n) => backoffDelay(n, options, () => 1));
  assert.deepEqual(highest, [100, 200, 400, 800, 1000, 1000]);
  const lowest = [0, 1, 2, 3, 4, 5].map((n) => backoffDelay(n, options, () => 0));
  assert.deepEqual(lowest, [50, 100, 200, 400, 500, 500]);
  assert.equal(backoffDelay(40, {}, () => 1), 30000); // the default cap
});

test("frames reach the callbacks and the events by kind", async () => {
  const { stream, seen, socket } = await make({ deviceIds: "bus-2, bus-1,bus-1" });
  const events = [];
  stream.addEventListener("alert", (event) => events.push(event.detail.data.ALERT));
  assert.equal(socket().url.searchParams.get("device_ids"), "bus-1,bus-2");
  socket().open();
  socket().frame({ event: "message", id: "c1", data: { DEVICE_ID: "bus-1" } });
  socket().frame({ event: "alert", id: "c2", data: { DEVICE_ID: "bus-1", ALERT: "panic" } });
  socket().frame({ event: "error", data: { message: "too many device ids" } });
  assert.deepEqual(seen.messages, [[{ DEVICE_ID: "bus-1" }, "c1"]]);
  assert.deepEqual(seen.alerts, [{ DEVICE_ID: "bus-1", ALERT: "panic" }]);
  assert.deepEqual(events, ["panic"]);
  assert.deepEqual(seen.errors, ["too many device ids"]);
  assert.equal(stream.status, "open");
});

test("a dropped connection is retried with growing delays and resumes from the last cursor seen", async () => {
  const { stream, time, socket } = await make({ deviceIds: ["bus-1"], backoff: { initial: 100, max: 400 } });
  socket().open();
  socket().frame({ event: "message", id: "cursor-1", data: {} });
  socket().frame({ event: "ping", id: "cursor-2", data: { type: "keep-alive" } });
  assert.equal(socket().url.searchParams.get("cursor"), null);
  const delays = [];
  for (let attempt = 0; attempt < 4; attempt++) {
    socket().drop(1006);
    assert.equal(stream.status, "reconnecting");
    delays.push(await time.fire());
    assert.equal(socket().url.searchParams.get("cursor"), "cursor-2");
    assert.equal(socket().url.searchParams.get("device_ids"), "bus-1");
  }
  assert.deepEqual(delays, [100, 200, 400, 400]);
  assert.equal(FakeSocket.instances.length, 5);
  // A healthy connection starts the backoff afresh; its frames move the cursor on.
  socket().open();
  socket().frame({ event: "resumed", data: { recovered: true } });
  socket().frame({ event: "alert", id: "cursor-3", data: {} });
  socket().drop(1001);
  assert.equal(await time.fire(), 100);
  assert.equal(socket().url.searchParams.get("cursor"), "cursor-3");
});

test("the status tells whether a resume recovered", async () => {
  const { seen, socket } = await make({ cursor: "saved" });
  assert.equal(socket().url.searchParams.get("cursor"), "saved");
  socket().open();
  socket().frame({ event: "resumed", data: { recovered: false, reason: "log replaced" } });
  assert.deepEqual(seen.statuses.at(-1), ["resumed", { recovered: false, reason: "log replaced" }]);
});

test("since asks for a replay on the first connect only; then the cursor takes over", async () => {
  const { time, socket } = await make({ since: "2026-12-01T18:00:00Z" });
  assert.equal(socket().url.searchParams.get("since"), "2026-12-01T18:00:00Z");
  socket().open();
  socket().frame({ event: "message", id: "after-replay", data: {} });
  socket().drop();
  await time.fire();
  assert.equal(socket().url.searchParams.get("since"), null);
  assert.equal(socket().url.searchParams.get("cursor"), "after-replay");
});

test("subscriptions change on the open socket, and the next connect asks for the new set", async () => {
  const { stream, time, socket } = await make({ deviceIds: ["a", "b"] });
  socket().open();
  stream.subscribe(["c", "a"]);
  stream.unsubscribe("b");
  assert.deepEqual(socket().sent, [
    { action: "subscribe", device_ids: ["a", "c"] },
    { action: "unsubscribe", device_ids: ["b"] },
  ]);
  assert.equal(FakeSocket.instances.length, 1); // no reconnect
  socket().frame({ event: "ack", data: { action: "unsubscribe", device_ids: ["a", "c"] } });
  assert.deepEqual(stream.deviceIds, ["a", "c"]);
  socket().drop();
  await time.fire();
  assert.equal(socket().url.searchParams.get("device_ids"), "a,c");
});

test("a subscription change while disconnected is carried by the next connect's URL", async () => {
  const { stream, time, socket } = await make({ deviceIds: ["a"] });
  socket().drop();
  stream.subscribe(["b"]);
  assert.deepEqual(socket().sent, []);
  await time.fire();
  assert.equal(socket().url.searchParams.get("device_ids"), "a,b");
});

test("after unsubscribing from every device, a reconnect waits for a subscribe instead of asking for all", async () => {
  const { stream, time, socket } = await make({ deviceIds: ["a"] });
  socket().open();
  stream.unsubscribe(["a"]);
  socket().frame({ event: "ack", data: { action: "unsubscribe", device_ids: [] } });
  socket().drop();
  await time.fire();
  assert.equal(FakeSocket.instances.length, 1);
  assert.equal(stream.status, "idle");
  stream.subscribe(["z"]);
  await settle();
  assert.equal(FakeSocket.instances.length, 2);
  assert.equal(socket().url.searchParams.get("device_ids"), "z");
});

test("setDevices between two lists changes the subscription in place; to every device it reconnects afresh", async () => {
  const { stream, socket } = await make({ deviceIds: ["a", "b"] });
  socket().open();
  socket().frame({ event: "message", id: "c1", data: {} });
  stream.setDevices("b, c");
  assert.deepEqual(socket().sent, [
    { action: "unsubscribe", device_ids: ["a"] },
    { action: "subscribe", device_ids: ["c"] },
  ]);
  assert.equal(FakeSocket.instances.length, 1);
  const old = socket();
  stream.setDevices("");
  assert.equal(old.closedWith, 1000);
  assert.equal(FakeSocket.instances.length, 2);
  // A new view: no device filter, and no cursor (the snapshot of the new set, not a replay).
  assert.equal(socket().url.searchParams.get("device_ids"), null);
  assert.equal(socket().url.searchParams.get("cursor"), null);
  assert.equal(stream.deviceIds, null);
});

test("a map stream moves its box in place, reports leaves, and takes extra parameters", async () => {
  const left = [];
  const { stream, seen, socket } = await make({
    bbox: [-100.4, 20.6, -100.3, 20.7], params: { max_hz: 1, fields: "LATITUD,LONGITUD" },
    onLeave: (id) => left.push(id),
  });
  const url = socket().url.searchParams;
  assert.deepEqual([url.get("bbox"), url.get("max_hz"), url.get("fields")], ["-100.4,20.6,-100.3,20.7", "1", "LATITUD,LONGITUD"]);
  socket().open();
  stream.setBbox([-100.5, 20.5, -100.2, 20.8]);
  assert.deepEqual(socket().sent, [{ action: "subscribe", bbox: [-100.5, 20.5, -100.2, 20.8] }]);
  socket().frame({ event: "leave", data: { device_id: "bus-9" } });
  assert.deepEqual(left, ["bus-9"]);
  // Dropping the box is a new stream: no box, no cursor, and the page is told to reset.
  socket().frame({ event: "message", id: "c1", data: {} });
  stream.setBbox(null);
  assert.equal(FakeSocket.instances.length, 2);
  assert.equal(socket().url.searchParams.get("bbox"), null);
  assert.equal(socket().url.searchParams.get("cursor"), null);
  assert.ok(seen.statuses.some(([status]) => status === "reset"));
});

test("a box set on a stream opened without one reconnects with it; a reconnect carries the box", async () => {
  const { stream, time, socket } = await make();
  socket().open();
  stream.setBbox([1, 2, 3, 4]);
  assert.equal(FakeSocket.instances.length, 2);
  assert.equal(socket().url.searchParams.get("bbox"), "1,2,3,4");
  socket().open();
  socket().frame({ event: "message", id: "c9", data: {} });
  socket().drop();
  stream.setBbox([5, 6, 7, 8]); // while disconnected
  await time.fire();
  assert.equal(socket().url.searchParams.get("bbox"), "5,6,7,8");
  assert.equal(socket().url.searchParams.get("cursor"), "c9");
});

test("the token from getToken goes in the bearer subprotocol, and a token-expiring notice is answered with a new one", async () => {
  let issued = 0;
  const { seen, socket } = await make({ getToken: async () => `token-${++issued}` });
  assert.deepEqual(socket().protocols, ["bearer", "token-1"]);
  socket().open();
  socket().frame({ event: "token-expiring", data: { expires_in: 30 } });
  await settle();
  assert.deepEqual(socket().sent, [{ action: "refresh", token: "token-2" }]);
  socket().frame({ event: "ack", data: { action: "refresh", expires_at: 1800000000 } });
  assert.deepEqual(seen.statuses.slice(-2).map(([status]) => status), ["token-expiring", "refreshed"]);
});

test("an expired token reconnects with a fresh one; any other refusal (1008) is final", async () => {
  let issued = 0;
  const { stream, time, socket } = await make({ getToken: () => `token-${++issued}` });
  socket().open();
  socket().frame({ event: "error", data: { message: "token expired" } });
  socket().drop(1008, "token expired");
  await time.fire();
  assert.deepEqual(socket().protocols, ["bearer", "token-2"]);
  socket().open();
  socket().frame({ event: "error", data: { message: "device ids not allowed by the token" } });
  socket().drop(1008, "device not allowed");
  assert.equal(stream.status, "failed");
  assert.equal(time.timers.filter((timer) => timer.fn).length, 0);
});

test("a cursor the server refuses is dropped and the client starts over as a new one", async () => {
  const { time, socket } = await make({ cursor: "garbage" });
  socket().open();
  socket().frame({ event: "error", data: { message: "malformed cursor" } });
  socket().drop(1008, "bad request");
  await time.fire();
  assert.equal(socket().url.searchParams.get("cursor"), null);
});

test("close() stops for good: no reconnect, the socket closed with 1000", async () => {
  const { stream, time, socket } = await make();
  socket().open();
  const last = socket();
  stream.close();
  assert.equal(last.closedWith, 1000);
  assert.equal(stream.status, "closed");
  assert.equal(time.timers.filter((timer) => timer.fn).length, 0);
  stream.setDevices("x"); // remembered, not connected
  assert.equal(FakeSocket.instances.length, 1);
  stream.connect();
  assert.equal(socket().url.searchParams.get("device_ids"), "x");
});

test("a callback that throws does not stop the stream", async () => {
  const original = console.error;
  console.error = () => {};
  try {
    const { stream, socket } = await make({ onMessage: () => { throw new Error("app bug"); } });
    socket().open();
    socket().frame({ event: "message", id: "c1", data: {} });
    socket().frame({ event: "message", id: "c2", data: {} });
    assert.equal(stream.cursor, "c2");
  } finally {
    console.error = original;
  }
});

test("the plain script and the ES module are the same code", () => {
  assert.equal(require("../../siscom/static/siscom-stream.js").SiscomStream, SiscomStream);
  assert.equal(globalThis.SiscomStream, SiscomStream);
});
