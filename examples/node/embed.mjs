// Sentence vectors in Node.js from an artifact exported with `bertx export MODEL --sentence-embedding`:
// the artifact's tokenizer.json and model.onnx, onnxruntime's own Node binding, no Python.
//
//   cd examples/node && npm install
//   node embed.mjs ../../models/all-MiniLM-L6-v2 "A man is eating food." "A cat sleeps."
//
// Prints one JSON array of vectors.
import { readFileSync } from "node:fs";
import { Tokenizer } from "@huggingface/tokenizers";
import * as ort from "onnxruntime-node";

const [folder, ...texts] = process.argv.slice(2);
if (!folder || texts.length === 0) {
  console.error("usage: node embed.mjs ARTIFACT TEXT [TEXT ...]");
  process.exit(2);
}
const manifest = JSON.parse(readFileSync(`${folder}/bertx.json`, "utf8"));
if (!manifest.sentence_embedding) {
  console.error(`${folder} has no sentence_embedding output: export it with --sentence-embedding`);
  process.exit(2);
}
const tokenizer = new Tokenizer(JSON.parse(readFileSync(`${folder}/tokenizer.json`, "utf8")), {});
const maxLength = manifest.defaults.max_seq_length;
const padId = manifest.tokenizer.pad_token_id;

// Tokenize, cut to the model's max length (keeping the final [SEP]), pad to the longest.
const rows = texts.map((text) => {
  const ids = tokenizer.encode(text).ids;
  return ids.length <= maxLength ? ids : [...ids.slice(0, maxLength - 1), ids[ids.length - 1]];
});
const width = Math.max(...rows.map((ids) => ids.length));
const tensor = (fill) => {
  const data = new BigInt64Array(rows.length * width);
  rows.forEach((ids, r) => ids.forEach((id, c) => (data[r * width + c] = BigInt(fill(id)))));
  for (let r = 0; r < rows.length; r++) for (let c = rows[r].length; c < width; c++) data[r * width + c] = BigInt(fill(null));
  return new ort.Tensor("int64", data, [rows.length, width]);
};
const available = {
  input_ids: tensor((id) => (id === null ? padId : id)),
  attention_mask: tensor((id) => (id === null ? 0 : 1)),
  token_type_ids: tensor(() => 0),
};
const session = await ort.InferenceSession.create(`${folder}/${manifest.variants.fp32.file}`);
const feeds = Object.fromEntries(session.inputNames.map((name) => [name, available[name]]));
const { sentence_embedding: vectors } = await session.run(feeds, ["sentence_embedding"]);
const dim = vectors.dims[1];
const out = rows.map((_, r) => Array.from(vectors.data.slice(r * dim, (r + 1) * dim)));
console.log(JSON.stringify(out));
