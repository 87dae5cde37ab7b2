// The ES module entry of siscom-stream.js: the same code, loaded once, exported.
//   import { SiscomStream } from "/static/siscom-stream.mjs";
import "./siscom-stream.js";

export const SiscomStream = globalThis.SiscomStream;
export const backoffDelay = SiscomStream.backoffDelay;
export default SiscomStream;
