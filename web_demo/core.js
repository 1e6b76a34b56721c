// facekd browser core: model loading with sha256 check, YuNet detection, 5-point alignment,
// preprocessing from the manifest, embedding, and matching at thresholds chosen by policy from the
// manifest's operating points. No UI here (see app.js); the same steps as facekd/training/align.py and
// facekd/core/preprocess.py, so embeddings match Python's.
import * as ort from "/ort/ort.wasm.min.mjs";

ort.env.wasm.wasmPaths = "/ort/"; // must be an absolute URL path
ort.env.wasm.numThreads = 1; // no cross-origin isolation needed; latency is single-thread

// Image-left eye, image-right eye, nose tip, mouth corners in a 112×112 crop (facekd/training/align.py).
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
  OperatingPoints.fromManifest(manifest); // bad operating points refuse the model (ModelError)
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

// ---- thresholds by policy from the manifest's operating points ----------------------------------
// The rule is the same in Python, the Java core (org.facekd.core.OperatingPoints / MatchPolicy) and
// here. Verification at FAR f (0 < f < 1): the candidates are the points with far <= f·(1 + 1e-9);
// the one with the largest far gives the threshold, none is an error. Identification at FPIR p
// against a gallery of N templates (N < 1 counts as 1): the same choice at the per-comparison FAR
// p / N (union bound: P(any of N impostor comparisons accepted) <= N·FAR); and where the export
// calibrated open-set galleries ("identification"), no lower than the threshold of the smallest
// calibrated gallery size >= N (the largest beyond them) at its largest FPIR <= p·(1 + 1e-9).
// Accept: cosine >= threshold.

export const DEFAULT_VERIFICATION_FAR = 1e-4;
export const DEFAULT_IDENTIFICATION_FPIR = 0.01;
export const FAR_SLACK = 1e-9;
export const NO_OPERATING_POINTS_WARNING = "manifest has no operating points (exported before they existed): "
  + "using its best-accuracy threshold, which accepts far more strangers; re-export with facekd export";

/** A FAR (or a gallery's per-comparison FAR) below the smallest one the export calibrated. */
export class CalibrationRangeError extends Error {
  constructor(message, { requestedFar, smallestFar, maxTemplates = -1 }) {
    super(message);
    this.name = "CalibrationRangeError";
    Object.assign(this, { requestedFar, smallestFar, maxTemplates });
  }
}

/** A number as Python's "%.<precision>g" writes it ("%g": 6 significant digits, exponent below 1e-4 and from 1e6). */
export function formatG(value, precision = 6) {
  if (Number.isNaN(value)) return "nan";
  if (!Number.isFinite(value)) return value > 0 ? "inf" : "-inf";
  if (value === 0) return Object.is(value, -0) ? "-0" : "0";
  const strip = (text) => (text.includes(".") ? text.replace(/0+$/, "").replace(/\.$/, "") : text);
  const [mantissa, exponentText] = value.toExponential(precision - 1).split("e");
  const exponent = Number(exponentText);
  if (exponent < -4 || exponent >= precision) {
    return `${strip(mantissa)}e${exponent < 0 ? "-" : "+"}${String(Math.abs(exponent)).padStart(2, "0")}`;
  }
  return strip(value.toFixed(precision - 1 - exponent));
}

function checkRate(name, rate) {
  if (typeof rate !== "number" || !(rate > 0 && rate < 1)) throw new RangeError(`${name} must lie in (0, 1), got ${rate}`);
  return rate;
}

function optCount(json, key, where) {
  const value = json[key];
  if (value === undefined || value === null) return -1;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
    throw new ModelError(`${where}: '${key}' must be a non-negative integer, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** The manifest's "operating_points": thresholds calibrated at false accept rates (far descending). */
export class OperatingPoints {
  constructor(points, meta = {}, galleries = []) {
    this.points = Object.freeze(points.map((p) => Object.freeze({ ...p })));
    this.galleries = Object.freeze(galleries.map((g) => Object.freeze({ ...g })));
    this.source = meta.source ?? "";
    this.identities = meta.identities ?? -1;
    this.faces = meta.faces ?? -1;
    this.genuinePairs = meta.genuinePairs ?? -1;
    this.impostorPairs = meta.impostorPairs ?? -1;
    this.minImpostors = meta.minImpostors ?? -1;
    Object.freeze(this);
  }

  /** Validated operating points: points non-empty, far in (0, 1), threshold in [-1, 1], far descending, threshold ascending. */
  static fromJson(json) {
    const where = "operating_points";
    if (json === null || typeof json !== "object" || Array.isArray(json)) throw new ModelError(`${where} must be a JSON object`);
    if (!Array.isArray(json.points)) throw new ModelError(`${where}: 'points' must be an array`);
    if (json.points.length === 0) throw new ModelError(`${where}: 'points' is empty: re-export with facekd export`);
    const points = [];
    json.points.forEach((item, i) => {
      const at = `${where}.points[${i}]`;
      if (item === null || typeof item !== "object" || Array.isArray(item)) throw new ModelError(`${at} must be an object`);
      for (const key of ["far", "threshold"]) {
        if (!(key in item) || item[key] === null) throw new ModelError(`${at}: '${key}' is missing`);
        if (typeof item[key] !== "number") throw new ModelError(`${at}: '${key}' must be a number, got ${JSON.stringify(item[key])}`);
      }
      const { far, threshold } = item;
      if (!(far > 0 && far < 1)) throw new ModelError(`${at}: far ${far} is not in (0, 1)`);
      if (!(threshold >= -1 && threshold <= 1)) throw new ModelError(`${at}: threshold ${threshold} is not a cosine in [-1, 1]`);
      const impostorsAbove = optCount(item, "impostors_above", at);
      let tar = NaN;
      if (item.tar !== undefined && item.tar !== null) {
        if (typeof item.tar !== "number" || !(item.tar >= 0 && item.tar <= 1)) throw new ModelError(`${at}: tar ${item.tar} is not in [0, 1]`);
        tar = item.tar;
      }
      const previous = points[i - 1];
      if (previous && !(far < previous.far)) {
        throw new ModelError(`${at}: far ${far} does not fall below the previous point's ${previous.far}: points must be sorted by far descending`);
      }
      if (previous && threshold < previous.threshold) {
        throw new ModelError(`${at}: threshold ${threshold} is below the previous point's ${previous.threshold} at a smaller far: a stricter FAR needs a higher threshold`);
      }
      points.push({ far, threshold, impostorsAbove, tar });
    });
    if (json.source !== undefined && json.source !== null && typeof json.source !== "string") {
      throw new ModelError(`${where}: 'source' must be a string`);
    }
    return new OperatingPoints(points, {
      source: json.source ?? "",
      identities: optCount(json, "identities", where),
      faces: optCount(json, "faces", where),
      genuinePairs: optCount(json, "genuine_pairs", where),
      impostorPairs: optCount(json, "impostor_pairs", where),
      minImpostors: optCount(json, "min_impostors", where),
    }, OperatingPoints.#galleries(json, where));
  }

  static #galleries(json, where) {
    if (json.identification === undefined || json.identification === null) return [];
    if (!Array.isArray(json.identification)) throw new ModelError(`${where}: 'identification' must be an array`);
    return json.identification.map((item, i) => {
      const at = `${where}.identification[${i}]`;
      if (item === null || typeof item !== "object" || Array.isArray(item)) throw new ModelError(`${at} must be an object`);
      const gallerySize = optCount(item, "gallery_size", at);
      const { fpir, threshold } = item;
      if (gallerySize < 1) throw new ModelError(`${at}: 'gallery_size' must be a positive integer`);
      if (typeof fpir !== "number" || !(fpir > 0 && fpir < 1)) throw new ModelError(`${at}: fpir ${fpir} is not in (0, 1)`);
      if (typeof threshold !== "number" || !(threshold >= -1 && threshold <= 1)) {
        throw new ModelError(`${at}: threshold ${threshold} is not a cosine in [-1, 1]`);
      }
      return { gallerySize, fpir, threshold };
    });
  }

  /** The manifest's operating points, or null for an export made before they existed (absent or null). */
  static fromManifest(manifest) {
    const json = manifest?.operating_points;
    return json === undefined || json === null ? null : OperatingPoints.fromJson(json);
  }

  get smallestFar() { return this.points[this.points.length - 1].far; }
  get largestFar() { return this.points[0].far; }

  select(far) { // far descending: the first candidate has the largest far
    const limit = far * (1 + FAR_SLACK);
    return this.points.find((p) => p.far <= limit) ?? null;
  }

  /** Threshold for 1:1 verification at a false accept rate. */
  verificationThreshold(far) {
    checkRate("FAR", far);
    const point = this.select(far);
    if (!point) {
      throw new CalibrationRangeError(`FAR ${formatG(far)} is below the calibrated range: the smallest supported FAR is ${formatG(this.smallestFar)}`,
        { requestedFar: far, smallestFar: this.smallestFar });
    }
    return point.threshold;
  }

  /** Threshold for 1:N identification at an FPIR against `comparisons` templates (< 1 counts as 1). */
  identificationThreshold(fpir, comparisons) {
    checkRate("FPIR", fpir);
    const n = Math.max(1, Math.trunc(Number(comparisons)) || 0);
    const far = fpir / n;
    const point = this.select(far);
    if (!point) {
      const most = this.maxTemplates(fpir);
      throw new CalibrationRangeError(`a gallery of ${n} templates at FPIR ${formatG(fpir)} needs a per-comparison FAR of ${formatG(far, 2)}, `
        + `below the calibrated range (smallest ${formatG(this.smallestFar, 2)}): enrol at most ${most} templates or raise the FPIR`,
        { requestedFar: far, smallestFar: this.smallestFar, maxTemplates: most });
    }
    const gallery = this.#galleryPoint(fpir, n);
    return gallery ? Math.max(point.threshold, gallery.threshold) : point.threshold;
  }

  #galleryPoint(fpir, n) {
    const candidates = this.galleries.filter((g) => g.fpir <= fpir * (1 + FAR_SLACK));
    if (candidates.length === 0) return null;
    const sizes = [...new Set(candidates.map((g) => g.gallerySize))].sort((a, b) => a - b);
    const size = sizes.find((m) => m >= n) ?? sizes[sizes.length - 1];
    return candidates.filter((g) => g.gallerySize === size).reduce((best, g) => (g.fpir > best.fpir ? g : best));
  }

  /** The most templates a gallery may hold at `fpir`: floor(fpir / smallestFar · (1 + 1e-9)), the selection's slack. */
  maxTemplates(fpir) {
    checkRate("FPIR", fpir);
    return Math.floor(fpir / this.smallestFar * (1 + FAR_SLACK));
  }

  summary() {
    const n = this.points.length;
    let text = `${n} point${n === 1 ? "" : "s"}, FAR ${formatG(this.largestFar)}${n > 1 ? ` .. ${formatG(this.smallestFar)}` : ""}`;
    if (this.impostorPairs >= 0) text += `, ${this.impostorPairs} impostor pairs${this.identities >= 0 ? ` of ${this.identities} identities` : ""}`;
    return text;
  }
}

/**
 * How the threshold is chosen: "verification" at a FAR, "identification" at an FPIR for the
 * gallery's current template count, or "fixed". Built from a manifest (an old one without
 * operating points falls back to its best-accuracy threshold: `warning` says so, and it is
 * logged with console.warn) or from OperatingPoints.
 */
export class MatchPolicy {
  constructor(mode, rate, points, fallbackThreshold, warning) {
    Object.assign(this, { mode, rate, points, fallbackThreshold, warning });
    Object.freeze(this);
  }

  static #of(mode, rate, source) {
    checkRate(mode === "verification" ? "FAR" : "FPIR", rate);
    let policy;
    if (source instanceof OperatingPoints) {
      policy = new MatchPolicy(mode, rate, source, NaN, null);
    } else {
      const points = OperatingPoints.fromManifest(source);
      if (points) {
        policy = new MatchPolicy(mode, rate, points, NaN, null);
      } else {
        if (typeof source?.threshold !== "number") throw new ModelError("manifest has no threshold: export from a checkpoint validated on pairs");
        console.warn(NO_OPERATING_POINTS_WARNING);
        policy = new MatchPolicy(mode, rate, null, source.threshold, NO_OPERATING_POINTS_WARNING);
      }
    }
    policy.threshold(1); // refuse an uncalibrated rate now rather than at the first face
    return policy;
  }

  /** 1:1 verification at `far` (default 1e-4) from a manifest or OperatingPoints. */
  static verification(manifestOrPoints, far = DEFAULT_VERIFICATION_FAR) { return MatchPolicy.#of("verification", far, manifestOrPoints); }

  /** 1:N identification at `fpir` (default 1 %) from a manifest or OperatingPoints. */
  static identification(manifestOrPoints, fpir = DEFAULT_IDENTIFICATION_FPIR) { return MatchPolicy.#of("identification", fpir, manifestOrPoints); }

  /** A fixed cosine threshold in [-1, 1], whatever the gallery. */
  static fixed(threshold) {
    if (typeof threshold !== "number" || !(threshold >= -1 && threshold <= 1)) throw new RangeError(`cosine threshold must be in [-1, 1], got ${threshold}`);
    return new MatchPolicy("fixed", NaN, null, threshold, null);
  }

  get usesOperatingPoints() { return this.points !== null; }

  /** The threshold for a probe compared with `templates` templates (only identification depends on it). */
  threshold(templates = 1) {
    if (!this.points) return this.fallbackThreshold;
    return this.mode === "identification" ? this.points.identificationThreshold(this.rate, templates) : this.points.verificationThreshold(this.rate);
  }

  /** The most templates the gallery may hold (identification from operating points), else Infinity. */
  maxTemplates() {
    return this.mode === "identification" && this.points ? this.points.maxTemplates(this.rate) : Infinity;
  }

  toString() {
    if (this.mode === "fixed") return `fixed threshold ${formatG(this.fallbackThreshold)}`;
    return this.mode === "verification" ? `1:1 verification at FAR ${formatG(this.rate)}` : `1:N identification at FPIR ${formatG(this.rate)}`;
  }

  /** e.g. "1:N identification at FPIR 0.01, 12 templates: threshold 0.3712" (same wording as Java's describe). */
  describe(templates = 1) {
    let threshold;
    try {
      threshold = this.threshold(templates).toFixed(4);
    } catch (error) {
      if (!(error instanceof CalibrationRangeError)) throw error;
      threshold = `none (${error.message})`;
    }
    const fallback = this.points ? "" : " (manifest's best-accuracy threshold)";
    if (this.mode === "fixed") return `fixed threshold ${threshold}`;
    if (this.mode === "verification") return `1:1 verification at FAR ${formatG(this.rate)}: threshold ${threshold}${fallback}`;
    const n = Math.max(1, Math.trunc(Number(templates)) || 0);
    return `1:N identification at FPIR ${formatG(this.rate)}, ${n} template${n === 1 ? "" : "s"}: threshold ${threshold}${fallback}`;
  }
}

/** Gallery of named templates; the best cosine at or above the threshold names a face. */
export class Gallery {
  constructor(modelSha256) { this.modelSha256 = modelSha256; this.people = new Map(); }
  enrol(name, embedding) {
    const trimmed = (name || "").trim();
    if (!trimmed) throw new Error("a person needs a non-empty name");
    if (!this.people.has(trimmed)) this.people.set(trimmed, []);
    this.people.get(trimmed).push(embedding);
  }
  /** Templates of everyone: the comparisons one probe makes (what 1:N thresholds depend on). */
  get templateCount() {
    let count = 0;
    for (const templates of this.people.values()) count += templates.length;
    return count;
  }
  /**
   * Best match of a normalised embedding. `thresholdOrPolicy`: a cosine threshold (fixed), or a
   * MatchPolicy whose threshold is computed for the gallery's current template count (throws a
   * CalibrationRangeError when the gallery has outgrown the calibrated range).
   */
  match(embedding, thresholdOrPolicy) {
    const count = this.templateCount; // the comparisons this probe makes
    const threshold = thresholdOrPolicy instanceof MatchPolicy ? thresholdOrPolicy.threshold(count) : thresholdOrPolicy;
    let best = { name: null, cosine: -1 };
    for (const [name, templates] of this.people) {
      for (const template of templates) {
        const score = cosine(embedding, template);
        if (score > best.cosine) best = { name, cosine: score };
      }
    }
    return { ...best, matched: best.name !== null && best.cosine >= threshold, threshold, templates: count };
  }
  /** match() with a policy (1:N identification at FPIR 1 % unless the policy says otherwise). */
  identify(embedding, policy) {
    if (!(policy instanceof MatchPolicy)) throw new TypeError("identify needs a MatchPolicy");
    return this.match(embedding, policy);
  }
}

/** Smallest k with P(X <= k) >= q for X ~ Binomial(n, p). */
function binomialQuantile(n, p, q) {
  let term = Math.pow(1 - p, n);
  let cumulative = term;
  let k = 0;
  while (cumulative < q && k < n) {
    term *= ((n - k) / (k + 1)) * (p / (1 - p));
    cumulative += term;
    k++;
  }
  return k;
}

/**
 * The Java golden test GoldenIdentificationTest on a golden/identification.json object, without
 * DOM: enrol the gallery (one template each), choose the identification threshold at the
 * fixture's FPIR by the rule, match every stranger and mated probe. Embeddings are cast to
 * float32 and L2-normalised as Java does, so scores equal Java's. `problems` lists what differs
 * from `fixture.expected` (empty when all agree).
 */
export function checkIdentificationFixture(fixture) {
  if (fixture?.schema_version !== 1) throw new ModelError(`identification.json schema_version ${fixture?.schema_version}, this check reads 1`);
  const points = OperatingPoints.fromJson(fixture.operating_points);
  const fpir = fixture.fpir;
  const policy = MatchPolicy.identification(points, fpir);
  const asTemplate = (face) => normalise(Float32Array.from(face.embedding));
  const gallery = new Gallery("golden");
  for (const face of fixture.gallery) gallery.enrol(face.name, asTemplate(face));
  const problems = [];
  if (gallery.people.size !== fixture.gallery.length) problems.push("gallery names are not distinct (one template each)");
  const templates = gallery.templateCount;
  const threshold = points.identificationThreshold(fpir, templates);
  let strangersMatched = 0;
  for (const face of fixture.strangers) {
    if (gallery.people.has(face.name)) problems.push(`${face.name} is a stranger but enrolled`);
    if (gallery.match(asTemplate(face), policy).matched) strangersMatched++;
  }
  let matedFound = 0;
  for (const face of fixture.mated) {
    const match = gallery.match(asTemplate(face), policy);
    if (match.matched && match.name === face.name) matedFound++;
  }
  const strangers = fixture.strangers.length;
  const mated = fixture.mated.length;
  const expected = fixture.expected ?? {};
  if (!(Math.abs(threshold - expected.threshold) <= 1e-12)) problems.push(`threshold ${threshold}, expected ${expected.threshold}`);
  // scores within the export's tolerance of the threshold may fall either way in float32 arithmetic
  const borderline = (kind) => expected[`${kind}_borderline`] ?? 0;
  if (!(Math.abs(strangersMatched - expected.strangers_matched) <= borderline("strangers"))) {
    problems.push(`${strangersMatched} strangers matched, expected ${expected.strangers_matched}`);
  }
  // "at most the FPIR" on a finite set of strangers: not significantly above it (one-sided binomial, 5 %), as in Java
  if (!(strangersMatched <= binomialQuantile(strangers, fpir, 0.95))) {
    problems.push(`${strangersMatched} of ${strangers} strangers matched: significantly more than FPIR ${fpir}`);
  }
  if (!(Math.abs(matedFound - expected.mated_found) <= borderline("mated"))) {
    problems.push(`${matedFound} mated probes found, expected ${expected.mated_found}`);
  }
  if (!(matedFound > 0)) problems.push("no mated probe found");
  return { threshold, strangersMatched, matedFound, strangers, mated, templates, fpir, problems };
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
