// A Node.js client of the raman-edge daemon, written from docs/wire.md alone (wire version 1).
//
//   node client.mjs --input tcp://127.0.0.1:5555 --output tcp://127.0.0.1:5556 \
//        --spectra spectra.json --vectors ../../edge/wire_vectors.json
//
// spectra.json: {"raman_shift_cm1": [...], "spectra": [{"id": str, "intensity": [...]}, ...]}.
// Subscribes (prediction, error, status), waits for the handshake status (§7), sends every real spectrum
// (float32 intensities, float64 axis, sent_ns as a uint64 BigInt, or as an integral float for every fifth
// one), a few malformed spectra of its own, and every conformance vector, then checks each answer against
// the specification. Prints one JSON summary on stdout; exit code 0 when every check passed.
import { readFileSync } from "node:fs";
import { Decoder, Encoder } from "@msgpack/msgpack";
import * as zmq from "zeromq";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const encoder = new Encoder({ useBigInt64: true });
const decoder = new Decoder({ useBigInt64: true }); // *_ns are uint64: BigInt, never a lossy number (§2)
const failures = [];
const check = (ok, what) => { if (!ok) failures.push(what); };

function array(typed, dtype) { // §4.2: raw little-endian bytes (x86/ARM are little-endian) as msgpack bin
  return { dtype, shape: [typed.length], data: new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength) };
}

const data = JSON.parse(readFileSync(args.spectra, "utf8"));
const vectors = JSON.parse(readFileSync(args.vectors, "utf8")).vectors;
const axis = array(Float64Array.from(data.raman_shift_cm1), "<f8");

const sub = new zmq.Subscriber({ receiveTimeout: 200 });
sub.connect(args.output);
for (const t of ["prediction", "error", "status"]) sub.subscribe(t);
const push = new zmq.Push({ linger: 2000 });
push.connect(args.input);

async function next() { // one [topic, payload] or null on timeout
  try {
    const [topic, payload] = await sub.receive();
    const msg = decoder.decode(payload);
    check(topic.toString("ascii") === msg.type, `topic frame ${topic} != payload type ${msg.type}`);
    check(msg.v === 1, `v is ${msg.v}`);
    return [topic.toString("ascii"), msg];
  } catch (e) {
    if (e.code === "EAGAIN") return null;
    throw e;
  }
}

// 1. handshake: the first status says the subscription is live
const deadline0 = Date.now() + 20000;
let live = false;
while (!live && Date.now() < deadline0) { const got = await next(); live = got !== null && got[0] === "status"; }
if (!live) { console.log(JSON.stringify({ error: "no status handshake" })); process.exit(2); }

// 2. real spectra, malformed spectra of our own, every vector
const expected = new Map(); // id -> "prediction" | {reason, instrument_seq}
let seqNo = 0;
for (const s of data.spectra) {
  const sentNs = seqNo % 5 === 4 ? Date.now() * 1e6 : BigInt(Date.now()) * 1000000n; // float: integral, accepted (§2)
  await push.send(encoder.encode({ type: "spectrum", v: 1, id: s.id, intensity: array(Float32Array.from(s.intensity), "<f4"),
    raman_shift_cm1: axis, sent_ns: sentNs, instrument_id: "node-1", instrument_seq: seqNo++ }));
  expected.set(s.id, "prediction");
}
const first = Float32Array.from(data.spectra[0].intensity);
const own = {
  "node-data-as-str": { intensity: { dtype: "<f4", shape: [first.length], data: "not bytes" } },
  "node-version-str": { v: "1" },
  "node-fractional-sent-ns": { sent_ns: 1.5 },
  "node-huge": { intensity: array(first.map((x, i) => (i === 3 ? 3e38 : x)), "<f4") },
};
for (const [id, patch] of Object.entries(own)) {
  await push.send(encoder.encode({ type: "spectrum", v: 1, id, intensity: array(first, "<f4"), raman_shift_cm1: axis,
    instrument_id: "node-1", instrument_seq: seqNo, ...patch }));
  expected.set(id, { reason: "wire", instrument_seq: seqNo++ });
}
let vectorAnswers = 0;
const vectorRejections = [];
for (const v of vectors) {
  const frames = v.frames_hex.map((h) => Buffer.from(h, "hex"));
  await push.send(frames.length === 1 ? frames[0] : frames);
  if (v.rejected && v.message === "spectrum") vectorRejections.push(v);
  // every vector is answered once: events (§5) are refused on the public input (wire error naming the
  // internal input, the only one that accepts them)
  vectorAnswers += 1;
}

// 3. answers
const predictions = new Map();
const errors = [];
const deadline = Date.now() + 60000;
const wanted = data.spectra.length + Object.keys(own).length + vectorAnswers;
let answers = 0;
while (answers < wanted && Date.now() < deadline) {
  const got = await next();
  if (got === null) continue;
  const [topic, m] = got;
  if (topic === "prediction") {
    answers++;
    check(!predictions.has(m.id), `prediction for ${m.id} twice`);
    predictions.set(m.id, m);
    check(Array.isArray(m.labels) && m.labels.length === 3 && m.probabilities.length === 3, `top-k of ${m.id}`);
    check(m.probabilities[0] >= m.probabilities[1] && m.probabilities[1] >= m.probabilities[2], `order of ${m.id}`);
    check(typeof m.received_ns === "bigint" && typeof m.published_ns === "bigint" && m.published_ns >= m.received_ns,
      `*_ns of ${m.id} are uint64 BigInt`);
    check(typeof m.seq === "number" && m.seq >= 1, `seq of ${m.id}`);
    if (expected.get(m.id) === "prediction") { // ours: carried through as sent, nil label present (§6.1)
      check(m.instrument_id === "node-1" && "label" in m && m.label === null, `carried fields of ${m.id}`);
    }
  } else if (topic === "error") {
    if (m.reason !== "lost") answers++;
    errors.push(m);
    for (const k of ["reason", "detail", "id", "instrument_id", "instrument_seq", "received_ns"]) check(k in m, `error lacks ${k}`);
  }
}
check(answers === wanted, `answers: ${answers} of ${wanted}`);
for (const [id, want] of expected) {
  if (want === "prediction") check(predictions.has(id), `no prediction for ${id}`);
  else check(errors.some((e) => e.id === id && e.reason === want.reason && e.instrument_seq === want.instrument_seq),
    `no ${want.reason} error echoing ${id}`);
}
for (const v of vectorRejections) {
  const r = v.rejected;
  check(errors.some((e) => e.reason === r.reason && e.id === r.id && e.instrument_id === r.instrument_id
    && e.instrument_seq === r.instrument_seq && e.detail.includes(r.detail_contains)), `vector ${v.name} not answered as specified`);
}
const nEvents = vectors.filter((v) => v.message === "event").length;
check(errors.filter((e) => e.reason === "wire" && e.detail.includes("internal input")).length === nEvents,
  "event vectors on the public input not refused");
check(!errors.some((e) => e.reason === "lost"), "an event from the public input was accepted");

console.log(JSON.stringify({
  predicted: predictions.size,
  top1: Object.fromEntries([...predictions].map(([id, m]) => [id, m.labels[0]])),
  errors: errors.length,
  vector_rejections_checked: vectorRejections.length,
  events_refused: nEvents,
  failures,
}));
sub.close();
push.close();
process.exit(failures.length ? 1 : 0);
