// Classifies text in the browser with the exported model: the model's own tokenizer
// (tokenizers.js reads tokenizer.json) and ONNX Runtime Web on WebAssembly. Every file is
// local to this folder; nothing is fetched from a CDN.
import * as ort from "./runtime/ort.wasm.min.mjs";
import { Tokenizer } from "./runtime/tokenizers.min.mjs";
import { makeCleaner } from "./clean.mjs";

async function fetchJson(name) {
  const response = await fetch(name);
  if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
  return response.json();
}

function softmax(logits) {
  const top = Math.max(...logits);
  const exps = logits.map((v) => Math.exp(v - top));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / sum);
}

function int64Tensor(values) {
  return new ort.Tensor("int64", BigInt64Array.from(values, BigInt), [1, values.length]);
}

async function load() {
  ort.env.wasm.wasmPaths = new URL("./runtime/", import.meta.url).href;
  // Threads need SharedArrayBuffer, which browsers give only to cross-origin-isolated pages
  // (COOP/COEP headers); a plain static file server gets the single-threaded path.
  const threads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.numThreads = threads;
  const [page, meta, tokenizerJson, tokenizerConfig] = await Promise.all(
    ["page.json", "edgebert.json", "tokenizer.json", "tokenizer_config.json"].map(fetchJson)
  );
  const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
  const session = await ort.InferenceSession.create(page.model, {
    executionProviders: ["wasm"],
    graphOptimizationLevel: "all",
  });
  const clean = makeCleaner(meta.clean || []);
  const maxLength = meta.max_length || 128;
  const settings = {
    model: page.model,
    threads,
    simd: true, // ONNX Runtime Web ships only SIMD builds of its WebAssembly backend
    cross_origin_isolated: self.crossOriginIsolated,
    onnxruntime_web: page.runtime["onnxruntime-web"],
    tokenizers: page.runtime["@huggingface/tokenizers"],
  };
  return { session, tokenizer, clean, maxLength, labels: meta.labels, settings };
}

function tokenIds(model, text) {
  const ids = model.tokenizer.encode(model.clean(text)).ids;
  // Truncate as the Python tokenizer does: keep [CLS] ... and the closing [SEP].
  return ids.length <= model.maxLength
    ? ids
    : ids.slice(0, model.maxLength - 1).concat(ids[ids.length - 1]);
}

async function classifyOne(model, text) {
  const begin = performance.now();
  const ids = tokenIds(model, text);
  const feeds = {};
  const inputs = {
    input_ids: ids,
    attention_mask: ids.map(() => 1),
    token_type_ids: ids.map(() => 0),
  };
  for (const name of model.session.inputNames) feeds[name] = int64Tensor(inputs[name]);
  const start = performance.now();
  const output = await model.session.run(feeds);
  const ms = performance.now() - start;
  const logits = Array.from(output[model.session.outputNames[0]].data);
  const scores = softmax(logits);
  const best = scores.indexOf(Math.max(...scores));
  const total_ms = performance.now() - begin; // cleaning + tokenizing + the model
  return { label: model.labels[best], index: best, score: scores[best], scores, logits, ms, total_ms };
}

const ready = load();

// For scripts and tests: `await edgebert.classify(["text", ...])`, one text per call (batch 1);
// `clean` and `tokenize` show what the model reads, to compare with the Python pipeline.
window.edgebert = {
  ready: ready.then((m) => m.settings),
  async clean(texts) {
    const model = await ready;
    return texts.map((t) => model.clean(t));
  },
  async tokenize(texts) {
    const model = await ready;
    return texts.map((t) => tokenIds(model, t));
  },
  async classify(texts) {
    const model = await ready;
    const results = [];
    for (const text of texts) results.push(await classifyOne(model, text));
    return results;
  },
};

function show(result, model) {
  const rows = model.labels
    .map((name, i) => {
      const pct = (100 * result.scores[i]).toFixed(1);
      return `<div class="row"><span>${name}</span><span class="bar" style="width:${pct}%"></span><span>${pct}%</span></div>`;
    })
    .join("");
  document.getElementById("result").innerHTML =
    `<p><strong id="label">${result.label}</strong> in ${result.ms.toFixed(1)} ms</p>${rows}`;
}

ready.then(
  (model) => {
    const status = document.getElementById("status");
    const s = model.settings;
    status.textContent = `ready: ONNX Runtime Web ${s.onnxruntime_web}, WebAssembly SIMD, ${s.threads} thread(s)`;
    const button = document.getElementById("classify");
    button.disabled = false;
    button.addEventListener("click", async () => {
      const text = document.getElementById("text").value;
      if (!text.trim()) return;
      show((await window.edgebert.classify([text]))[0], model);
    });
  },
  (error) => {
    document.getElementById("status").textContent = `failed to load the model: ${error.message}`;
  }
);
