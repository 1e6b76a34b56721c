// facekd browser client UI: enrol people from photos or the camera, identify faces, show the
// model's sha256 (checked against its manifest) and the latency of every stage.
//
// Faces are identified 1:N at an FPIR (share of strangers named as someone; 1 % by default, or
// ?fpir=0.001 in the URL) with the threshold the manifest's operating points give for the gallery's
// current number of templates, so it tightens as people enrol; ?far=1e-5 matches at a fixed 1:1 FAR
// instead. A manifest without operating points (old export) falls back to its best-accuracy
// threshold, with a visible warning.
import {
  DEFAULT_IDENTIFICATION_FPIR, Gallery, MatchPolicy, checkIdentificationFixture, decodeImage, embed, loadDetector,
  loadModel, photoEmbedding,
} from "/core.js";

const $ = (id) => document.getElementById(id);
let model, detector, gallery, policy;

/** The policy the URL asks for: ?far=F (1:1 verification) or ?fpir=P (1:N identification, default 1 %). */
function policyFor(manifest) {
  const params = new URLSearchParams(location.search);
  if (params.has("far")) return MatchPolicy.verification(manifest, Number(params.get("far")));
  return MatchPolicy.identification(manifest, params.has("fpir") ? Number(params.get("fpir")) : DEFAULT_IDENTIFICATION_FPIR);
}

/** The policy and the threshold it gives the gallery as it is now, in the status line. */
function showPolicy() {
  $("policy").textContent = policy.describe(gallery.templateCount);
}

function showLatency(times, matchMs) {
  const cells = $("latency").rows[1].cells;
  [times.detect, times.align, times.embed, matchMs].forEach((ms, i) => { cells[i].textContent = ms === undefined ? "–" : ms.toFixed(1); });
}

function showGallery() {
  $("gallery").replaceChildren(...[...gallery.people].map(([name, templates]) => {
    const item = document.createElement("li");
    item.textContent = `${name} (${templates.length} template${templates.length > 1 ? "s" : ""})`;
    return item;
  }));
}

async function fromPhoto(image) {
  const result = await photoEmbedding(model, detector, image);
  if (result.aligned) $("aligned").getContext("2d").putImageData(result.aligned, 0, 0);
  return result;
}

async function enrol(name, image) {
  const result = await fromPhoto(image);
  showLatency(result.times);
  if (!result.face) return { enrolled: false, reason: "no face found" };
  policy.threshold(gallery.templateCount + 1); // CalibrationRangeError: "enrol at most M templates or raise the FPIR"
  gallery.enrol(name, result.embedding);
  showGallery();
  showPolicy();
  return { enrolled: true, name: name.trim() };
}

async function identify(image) {
  const result = await fromPhoto(image);
  if (!result.face) { showLatency(result.times); return { matched: false, reason: "no face found" }; }
  const start = performance.now();
  const match = gallery.match(result.embedding, policy); // threshold for the gallery's current size
  showLatency(result.times, performance.now() - start);
  return { ...match, times: result.times };
}

function cameraFrame() {
  const video = $("camera");
  const canvas = new OffscreenCanvas(video.videoWidth, video.videoHeight);
  const context = canvas.getContext("2d");
  context.drawImage(video, 0, 0);
  return context.getImageData(0, 0, canvas.width, canvas.height);
}

async function startCamera() {
  const video = $("camera");
  if (!video.srcObject) {
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true });
    video.hidden = false;
  }
  // Draw only a frame the video has presented: at "loadeddata" the stream was still paused and
  // drawImage gave a black frame (Chromium), so play it and wait for the next frame shown.
  await video.play();
  if (video.requestVideoFrameCallback) await new Promise((resolve) => video.requestVideoFrameCallback(resolve));
}

/** Run a UI action and show its outcome, or its error (no camera, permission denied, no name). */
async function act(element, action) {
  try {
    report(element, await action());
  } catch (error) {
    report(element, { reason: error.message || String(error) });
  }
}

function report(element, outcome) {
  element.textContent = outcome.reason ? outcome.reason
    : outcome.enrolled ? `enrolled ${outcome.name}`
    : outcome.matched ? `${outcome.name} (cosine ${outcome.cosine.toFixed(3)})`
    : `unknown (best ${outcome.name ?? "–"}, cosine ${outcome.cosine.toFixed(3)} < ${outcome.threshold.toFixed(3)})`;
}

async function start() {
  try {
    model = await loadModel("/model");
    detector = await loadDetector("/detector.onnx");
    policy = policyFor(model.manifest); // console.warn for a manifest without operating points
  } catch (error) {
    $("status").className = "error";
    $("status").textContent = `cannot use this model: ${error.message}`;
    throw error;
  }
  gallery = new Gallery(model.sha256);
  const m = model.manifest;
  $("status").innerHTML = `${m.format}-${m.precision}, ${m.embedding_size}-d, best-accuracy threshold ${m.threshold.toFixed(4)}<br>`
    + `matching: <span id="policy"></span><br>`
    + (policy.warning ? `<span id="policy-warning" class="warning">⚠ ${policy.warning}</span><br>` : "")
    + `sha256 <span class="mono">${model.sha256}</span> ✓ matches the manifest`;
  showPolicy();
  $("enrol-file").onchange = (e) => act($("enrol-result"), async () => enrol($("name").value, await decodeImage(e.target.files[0])));
  $("identify-file").onchange = (e) => act($("identify-result"), async () => identify(await decodeImage(e.target.files[0])));
  $("enrol-camera").onclick = () => act($("enrol-result"), async () => { await startCamera(); return enrol($("name").value, cameraFrame()); });
  $("identify-camera").onclick = () => act($("identify-result"), async () => { await startCamera(); return identify(cameraFrame()); });
}

// For scripted checks (tests/test_web.py drives these in headless Chromium).
window.facekd = {
  ready: start().then(() => true, (error) => ({ error: error.message })),
  manifest: () => model.manifest,
  policy: () => ({
    mode: policy.mode, rate: policy.rate, templates: gallery.templateCount, threshold: policy.threshold(gallery.templateCount),
    warning: policy.warning, description: policy.describe(gallery.templateCount),
  }),
  checkIdentificationFixture, // pure: the Java golden identification test on a golden/identification.json object
  sha256: () => model.sha256,
  embedAligned: async (url) => Array.from(await embed(model, await decodeImage(url))),
  enrolUrl: async (name, url) => enrol(name, await decodeImage(url)),
  identifyUrl: async (url) => identify(await decodeImage(url)),
  embedPhotoUrl: async (url) => {
    const result = await photoEmbedding(model, detector, await decodeImage(url));
    return result.face ? { landmarks: result.face.landmarks, embedding: Array.from(result.embedding) } : null;
  },
};
