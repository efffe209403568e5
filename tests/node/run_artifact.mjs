// Run an exported artifact's model.onnx in onnxruntime-node (CPU EP, one thread) on JSON feeds.
//
//   node run_artifact.mjs <node_modules dir> <model.onnx> <feeds.json> <out.json>
//
// feeds.json: {"batches": [{"input_ids": {"dims": [B, S], "data": [...]}, ...}, ...]}, every feed int64.
// out.json:   {"versions": onnxruntime-node's env.versions, "input_names": [...], "output_names": [...],
//              "batches": [{"<output>": {"type": "float32" | "int64" | ..., "dims": [...], "data": [...]}}, ...]}
// Numbers are written as JSON numbers (float32 widens to double exactly; int64 must be a safe integer),
// non-finite floats as the strings "NaN", "Infinity", "-Infinity". Errors go to stderr with exit code 1.

import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";

const [nodeModules, modelPath, feedsPath, outPath] = process.argv.slice(2);
if (!outPath) {
  console.error("usage: node run_artifact.mjs <node_modules dir> <model.onnx> <feeds.json> <out.json>");
  process.exit(2);
}

// Resolve onnxruntime-node from the given node_modules, not from this script's directory.
const require = createRequire(join(resolve(nodeModules), "_resolve_from_here.js"));
const ort = require("onnxruntime-node");

function toTensor(name, feed) {
  const count = feed.dims.reduce((a, b) => a * b, 1);
  if (feed.data.length !== count) {
    throw new Error(`feed ${name}: ${feed.data.length} values for dims [${feed.dims}]`);
  }
  // BigInt() of a non-integer throws, so a bad value cannot be silently truncated.
  return new ort.Tensor("int64", BigInt64Array.from(feed.data, (v) => BigInt(v)), feed.dims);
}

function toNumber(value, name) {
  if (typeof value === "bigint") {
    if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new Error(`output ${name}: int64 value ${value} is not exactly representable as a JSON number`);
    }
    return Number(value);
  }
  if (typeof value === "boolean") return value ? 1 : 0;
  if (Number.isFinite(value)) return value;
  return Number.isNaN(value) ? "NaN" : value > 0 ? "Infinity" : "-Infinity";
}

function fromTensor(name, tensor) {
  if (tensor.type === "string") throw new Error(`output ${name}: string tensors are not supported`);
  return { type: tensor.type, dims: Array.from(tensor.dims), data: Array.from(tensor.data, (v) => toNumber(v, name)) };
}

const feeds = JSON.parse(readFileSync(feedsPath, "utf8"));
const session = await ort.InferenceSession.create(modelPath, {
  executionProviders: ["cpu"],
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  graphOptimizationLevel: "all",
});
const batches = [];
for (const batch of feeds.batches) {
  const inputs = {};
  for (const name of session.inputNames) {
    if (!(name in batch)) throw new Error(`the model needs input ${name}, the feeds have ${Object.keys(batch)}`);
    inputs[name] = toTensor(name, batch[name]);
  }
  const results = await session.run(inputs);
  const out = {};
  for (const [name, tensor] of Object.entries(results)) out[name] = fromTensor(name, tensor);
  batches.push(out);
}
await session.release();
writeFileSync(
  outPath,
  JSON.stringify({
    versions: ort.env.versions,
    input_names: session.inputNames,
    output_names: session.outputNames,
    batches,
  }),
);
