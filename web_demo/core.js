// facekd browser core: model loading with sha256 check, YuNet detection, 5-point alignment,
// preprocessing from the manifest, embedding and matching. No UI here (see app.js); the same
// steps as training/align.py and training/preprocess.py, so embeddings match Python's.
import * as ort from "/ort/ort.wasm.min.mjs";

ort.env.wasm.wasmPaths = "/ort/"; // must be an absolute URL path
ort.env.wasm.numThreads = 1; // no cross-origin isolation needed; latency is single-thread

// Image-left eye, image-right eye, nose tip, mouth corners in a 112×112 crop (training/align.py).
export const ARCFACE_TEMPLATE_112 = [
  [38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041],
];
const DETECTOR_SIDE = 640; // YuNet 2023mar takes a fixed 640×640 BGR input, values 0..255
const STRIDES = [8, 16, 32];

export class ModelError extends Error {}

export async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Fetch manifest + model; refuse a model whose sha256 differs from its manifest's. */
export async function loadModel(base) {
  const response = await fetch(`${base}/manifest.json`);
  if (!response.ok) throw new ModelError(`no manifest at ${base}/manifest.json (HTTP ${response.status})`);
  const manifest = await response.json();
  for (const key of ["file", "sha256", "preprocess", "input", "embedding_size", "threshold"]) {
    if (!(key in manifest)) throw new ModelError(`manifest lacks "${key}"`);
  }
  if (manifest.input.layout !== "NCHW") throw new ModelError(`the web client runs NCHW ONNX models, not ${manifest.input.layout}`);
  const bytes = await (await fetch(`${base}/${manifest.file}`)).arrayBuffer();
  const sha256 = await sha256Hex(bytes);
  if (sha256 !== manifest.sha256) {
    throw new ModelError(`model ${manifest.file} has sha256 ${sha256}, its manifest says ${manifest.sha256}: refusing to run it`);
  }
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
  return { manifest, sha256, session, inputName: session.inputNames[0], outputName: session.outputNames[0] };
}

export async function loadDetector(url) {
  const bytes = await (await fetch(url)).arrayBuffer();
  return ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
}

/** RGBA pixels of an image URL or Blob at its own size. */
export async function decodeImage(source) {
  const blob = source instanceof Blob ? source : await (await fetch(source)).blob();
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  return context.getImageData(0, 0, bitmap.width, bitmap.height);
}

/** PreprocessSpec.apply of an aligned size×size RGBA image: float32 NCHW [1, 3, S, S]. */
export function preprocess(image, spec) {
  const size = spec.size;
  if (image.width !== size || image.height !== size) throw new ModelError(`expected a ${size}×${size} face, got ${image.width}×${image.height}`);
  const plane = size * size;
  const out = new Float32Array(3 * plane);
  const order = spec.channel_order === "BGR" ? [2, 1, 0] : [0, 1, 2];
  for (let c = 0; c < 3; c++) {
    const source = order[c];
    const mean = Math.fround(spec.mean[c]);
    const std = Math.fround(spec.std[c]);
    for (let i = 0; i < plane; i++) out[c * plane + i] = (image.data[4 * i + source] - mean) / std;
  }
  return new ort.Tensor("float32", out, [1, 3, size, size]);
}

export function normalise(vector) {
  let norm = 0;
  for (const v of vector) norm += v * v;
  norm = Math.sqrt(norm) || 1;
  return Float32Array.from(vector, (v) => v / norm);
}

export function cosine(a, b) {
  let dot = 0;
  for (let i = 0; i < a.length; i++) dot += a[i] * b[i];
  return dot;
}

export async function embed(model, aligned) {
  const outputs = await model.session.run({ [model.inputName]: preprocess(aligned, model.manifest.preprocess) });
  return normalise(outputs[model.outputName].data);
}

/** YuNet on a photo: the largest face's box, score and 5 landmarks (photo pixels), or null. */
export async function detectLargest(detector, image, scoreThreshold = 0.6, nmsIou = 0.3) {
  const scale = Math.min(DETECTOR_SIDE / image.width, DETECTOR_SIDE / image.height, 1);
  const width = Math.round(image.width * scale);
  const height = Math.round(image.height * scale);
  const source = new OffscreenCanvas(image.width, image.height);
  source.getContext("2d").putImageData(image, 0, 0);
  const canvas = new OffscreenCanvas(DETECTOR_SIDE, DETECTOR_SIDE);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.fillStyle = "black";
  context.fillRect(0, 0, DETECTOR_SIDE, DETECTOR_SIDE);
  context.drawImage(source, 0, 0, width, height);
  const pixels = context.getImageData(0, 0, DETECTOR_SIDE, DETECTOR_SIDE).data;
  const plane = DETECTOR_SIDE * DETECTOR_SIDE;
  const input = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) { // BGR, 0..255
    input[i] = pixels[4 * i + 2];
    input[plane + i] = pixels[4 * i + 1];
    input[2 * plane + i] = pixels[4 * i];
  }
  const out = await detector.run({ [detector.inputNames[0]]: new ort.Tensor("float32", input, [1, 3, DETECTOR_SIDE, DETECTOR_SIDE]) });
  const faces = [];
  for (const stride of STRIDES) {
    const cols = DETECTOR_SIDE / stride;
    const cls = out[`cls_${stride}`].data, obj = out[`obj_${stride}`].data;
    const box = out[`bbox_${stride}`].data, kps = out[`kps_${stride}`].data;
    for (let i = 0; i < cls.length; i++) {
      const score = Math.sqrt(Math.min(Math.max(cls[i], 0), 1) * Math.min(Math.max(obj[i], 0), 1));
      if (score < scoreThreshold) continue;
      const c = i % cols, r = Math.floor(i / cols);
      const cx = (c + box[4 * i]) * stride, cy = (r + box[4 * i + 1]) * stride;
      const w = Math.exp(box[4 * i + 2]) * stride, h = Math.exp(box[4 * i + 3]) * stride;
      const landmarks = [];
      for (let k = 0; k < 5; k++) landmarks.push([(kps[10 * i + 2 * k] + c) * stride / scale, (kps[10 * i + 2 * k + 1] + r) * stride / scale]);
      faces.push({ score, box: [(cx - w / 2) / scale, (cy - h / 2) / scale, w / scale, h / scale], landmarks });
    }
  }
  faces.sort((a, b) => b.score - a.score);
  const kept = [];
  for (const face of faces) if (kept.every((other) => iou(face.box, other.box) <= nmsIou)) kept.push(face);
  if (!kept.length) return null;
  return kept.reduce((best, face) => (face.box[2] * face.box[3] > best.box[2] * best.box[3] ? face : best));
}

function iou(a, b) {
  const x1 = Math.max(a[0], b[0]), y1 = Math.max(a[1], b[1]);
  const x2 = Math.min(a[0] + a[2], b[0] + b[2]), y2 = Math.min(a[1] + a[3], b[1] + b[3]);
  const inter = Math.max(0, x2 - x1) * Math.max(0, y2 - y1);
  return inter / (a[2] * a[3] + b[2] * b[3] - inter);
}

/** Least-squares similarity (no reflection) mapping src points onto dst: [a, -b, tx; b, a, ty]. */
export function similarityTransform(src, dst) {
  const n = src.length;
  const mean = (points, k) => points.reduce((s, p) => s + p[k], 0) / n;
  const sx = mean(src, 0), sy = mean(src, 1), dx = mean(dst, 0), dy = mean(dst, 1);
  let dotSum = 0, crossSum = 0, variance = 0;
  for (let i = 0; i < n; i++) {
    const x = src[i][0] - sx, y = src[i][1] - sy, u = dst[i][0] - dx, v = dst[i][1] - dy;
    dotSum += x * u + y * v;
    crossSum += x * v - y * u;
    variance += x * x + y * y;
  }
  if (variance === 0) throw new ModelError("landmarks all coincide: no alignment exists");
  const a = dotSum / variance, b = crossSum / variance;
  return [a, -b, dx - (a * sx - b * sy), b, a, dy - (b * sx + a * sy)];
}

function reflect(p, size) { // OpenCV BORDER_REFLECT: fedcba|abcdefgh|hgfedcb
  if (size === 1) return 0;
  while (p < 0 || p >= size) p = p < 0 ? -p - 1 : 2 * size - p - 1;
  return p;
}

/** cv2.warpAffine(photo, M, (size, size), INTER_LINEAR, BORDER_REFLECT) for the template fit. */
export function align(image, landmarks, size = 112) {
  const template = ARCFACE_TEMPLATE_112.map(([x, y]) => [x * size / 112, y * size / 112]);
  const [a, mb, tx, b, , ty] = similarityTransform(landmarks, template);
  const det = a * a + b * b; // inverse of [a -b; b a] is [a b; -b a] / det
  const out = new ImageData(size, size);
  const src = image.data, w = image.width, h = image.height;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const u = x - tx, v = y - ty;
      const sx = (a * u - mb * v) / det, sy = (-b * u + a * v) / det;
      const x0 = Math.floor(sx), y0 = Math.floor(sy), fx = sx - x0, fy = sy - y0;
      const xs = [reflect(x0, w), reflect(x0 + 1, w)], ys = [reflect(y0, h), reflect(y0 + 1, h)];
      for (let c = 0; c < 3; c++) {
        const p = (yy, xx) => src[4 * (ys[yy] * w + xs[xx]) + c];
        const value = (1 - fy) * ((1 - fx) * p(0, 0) + fx * p(0, 1)) + fy * ((1 - fx) * p(1, 0) + fx * p(1, 1));
        out.data[4 * (y * size + x) + c] = Math.round(value);
      }
      out.data[4 * (y * size + x) + 3] = 255;
    }
  }
  return out;
}

/** Gallery of named templates; the best cosine at or above the manifest threshold names a face. */
export class Gallery {
  constructor(modelSha256) { this.modelSha256 = modelSha256; this.people = new Map(); }
  enrol(name, embedding) {
    const trimmed = (name || "").trim();
    if (!trimmed) throw new Error("a person needs a non-empty name");
    if (!this.people.has(trimmed)) this.people.set(trimmed, []);
    this.people.get(trimmed).push(embedding);
  }
  match(embedding, threshold) {
    let best = { name: null, cosine: -1 };
    for (const [name, templates] of this.people) {
      for (const template of templates) {
        const score = cosine(embedding, template);
        if (score > best.cosine) best = { name, cosine: score };
      }
    }
    return { ...best, matched: best.name !== null && best.cosine >= threshold };
  }
}

/** Photo -> detect -> align -> embed, with the milliseconds of each stage. */
export async function photoEmbedding(model, detector, image) {
  const times = {};
  let start = performance.now();
  const face = await detectLargest(detector, image);
  times.detect = performance.now() - start;
  if (!face) return { face: null, times };
  start = performance.now();
  const aligned = align(image, face.landmarks, model.manifest.preprocess.size);
  times.align = performance.now() - start;
  start = performance.now();
  const embedding = await embed(model, aligned);
  times.embed = performance.now() - start;
  return { face, aligned, embedding, times };
}
