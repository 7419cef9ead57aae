// imgapi web page: choose an image, upscale or stylize it through the public HTTP API, compare, download.
// Plain ES module, no build step, no dependencies. It only talks to the routes of docs/api.md.

// Used until GET /health says otherwise (it reports the server's real limits in "limits").
const DEFAULT_LIMITS = Object.freeze({
  max_upload_bytes: 4 * 1024 * 1024,
  max_upscale_pixels: 512 * 512,
  max_stylize_pixels: 4096 * 4096,
});
const API_STORAGE_KEY = "imgapi.apiBase";
const ACCEPTED_TYPES = ["image/png", "image/jpeg", "image/webp", "image/bmp", "image/x-ms-bmp", "image/tiff", "image/gif"];
const ACCEPTED_EXT = /\.(png|jpe?g|webp|bmp|tiff?|gif)$/i;
const TIFF = /(\.tiff?$)|(^image\/tiff$)/i;
const MOD_KEY = /Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent) ? "⌘" : "Ctrl";
// "Make a smaller copy" of a painting: the server reduces a painting to 512 px anyway, so 1024 x 1024 loses nothing.
const PAINTING_COPY_PIXELS = 1024 * 1024;
// Room for the multipart envelope and the option fields, beside the two files, in a request's size estimate.
const FORM_ENVELOPE_BYTES = 8192;
// The SR models of POST /upscale, as the page names them; the checked radio of index.html is the default until
// GET /health reports the server's (default_sr_model).
const MODEL_NAMES = Object.freeze({ srgan: "SRGAN", srresnet: "SRResNet", real: "Real photo" });
// The models that take the field denoise ("auto" or 0..1).
const DENOISE_MODELS = ["real"];

const $ = (id) => document.getElementById(id);
const el = {
  apiState: $("api-state"), apiStateText: $("api-state-text"),
  dropzone: $("dropzone"), fileInput: $("file-input"), dropEmpty: $("drop-empty"), dropFilled: $("drop-filled"),
  limitsHint: $("limits-hint"),
  sourceThumb: $("source-thumb"), sourceName: $("source-name"), sourceMeta: $("source-meta"),
  sourceNotice: $("source-notice"), sourceNoticeText: $("source-notice-text"), sourceFix: $("source-fix"),
  viewport: $("viewport"), zoom: $("zoom"), limitNotice: $("limit-notice"), limitText: $("limit-text"), shrink: $("shrink-button"),
  taskUpscale: $("task-upscale"), taskStylize: $("task-stylize"),
  upscaleOptions: $("upscale-options"), stylizeOptions: $("stylize-options"), upscaleHint: $("upscale-size-hint"),
  denoiseField: $("denoise-field"), denoiseAuto: $("denoise-auto"), denoise: $("denoise"), denoiseOut: $("denoise-out"),
  maxSide: $("max-side"), gallery: $("style-gallery"), strength: $("strength"), strengthOut: $("strength-out"), preserve: $("preserve-color"),
  ownCard: $("own-card"), styleOwn: $("style-own"), paintingInput: $("painting-input"), paintingThumb: $("painting-thumb"),
  paintingName: $("painting-name"), paintingNotice: $("painting-notice"), paintingNoticeText: $("painting-notice-text"),
  paintingFix: $("painting-fix"),
  run: $("run-button"), cancel: $("cancel-button"), runHint: $("run-hint"),
  stage: $("stage"), stageEmpty: $("stage-empty"), frame: $("frame"), before: $("before-img"), after: $("after-img"),
  tagBefore: $("tag-before"), tagAfter: $("tag-after"), handle: $("handle"), compare: $("compare"),
  busy: $("busy"), busyText: $("busy-text"), busyTime: $("busy-time"), busyCancel: $("busy-cancel"),
  error: $("error"), errorTitle: $("error-title"), errorMessage: $("error-message"), errorClose: $("error-close"),
  errorRetry: $("error-retry"),
  metaSize: $("meta-size"), metaTime: $("meta-time"), metaModel: $("meta-model"), download: $("download"),
  status: $("status"),
  settings: $("settings"), apiForm: $("api-form"), apiInput: $("api-input"), apiReset: $("api-reset"),
  apiBaseLabel: $("api-base-label"),
};

const state = {
  apiBase: "",          // absolute, ends with "/"
  apiBaseCustom: false, // true when not the page's own origin
  limits: { ...DEFAULT_LIMITS },
  source: null,         // {file, name, base, type, bytes, width, height, url}
  styles: [],
  modelChosen: false,   // the user picked a model: the server's default no longer replaces it
  controller: null,     // AbortController of the request in flight
  timer: 0,
  result: null,         // {objectUrl, width, height, ...}
  comparePct: 50,
  zoom: "fit",          // "fit" or result pixels per CSS pixel (1, 2)
  oversized: null,      // a decodable file refused for its bytes, which "Make a smaller copy" can fix
  painting: null,       // "Your own painting": {file, name, base, type, bytes, width, height, url}
  paintingOversized: null, // a decodable painting refused for its size, which "Make a smaller copy" can fix
  paintingFix: null,    // what the tile notice's "Make a smaller copy" does: {from, byteLimit}
  paintingNote: null,   // what the painting tile's notice says about the last file offered: {text, kind, fix}
  paintingRefused: "",  // the server's reason when it refused state.painting (a 4xx naming style_image)
};

// ---------------------------------------------------------------- formatting

const nf = new Intl.NumberFormat("en-US");
const fmtInt = (n) => nf.format(Math.round(n));

/** Bytes as "532 KB" / "4.5 MB" (decimal units, as the exact byte count is given next to limits). */
function fmtBytes(n) {
  if (n < 1000) return `${n}\u00a0bytes`;
  if (n < 1_000_000) return `${(n / 1000).toFixed(n < 10_000 ? 1 : 0)}\u00a0KB`;
  return `${(n / 1_000_000).toFixed(n < 10_000_000 ? 1 : 0)}\u00a0MB`;
}

function fmtSeconds(ms) {
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

/** A pixel limit as "262,144 pixels (512 × 512)". */
function fmtPixels(n) {
  const side = Math.floor(Math.sqrt(n));
  return `${fmtInt(n)} pixels (${fmtInt(side)} × ${fmtInt(side)})`;
}

/** A pixel limit as "500 × 500 px" (its square equivalent), or "0.25 megapixels" when not a square. */
function fmtPixelsShort(n) {
  const side = Math.floor(Math.sqrt(n));
  return side * side === n ? `${fmtInt(side)} × ${fmtInt(side)} px` : `${(n / 1e6).toFixed(2)} megapixels`;
}

function fileKind(file) {
  const ext = (file.name.match(/\.([a-z0-9]+)$/i) || [])[1];
  if (/^image\//.test(file.type)) return file.type.replace(/^image\/(x-ms-)?/, "").toUpperCase();
  if (file.type) return file.type;
  return ext ? ext.toUpperCase() : "unknown type";
}

/** A file-name-safe part: letters, digits, dot, dash, underscore; anything else becomes "_". */
function safePart(s) {
  const cleaned = String(s).normalize("NFC").replace(/[^\p{L}\p{N}._-]+/gu, "_").replace(/_+/g, "_")
    .replace(/^[._]+|[._]+$/g, "");
  return cleaned.slice(0, 80);
}

function baseName(fileName) {
  return safePart(fileName.replace(/\.[^.\/\\]*$/, "")) || "image";
}

/** ``{url, size}`` of a chosen file (``size`` null where the browser cannot decode it); null, after telling
 * ``say``, for an empty file. */
async function openImage(file, name, say) {
  if (file.size === 0) {
    say(`“${name}” is empty (0 bytes).`);
    return null;
  }
  const url = URL.createObjectURL(file);
  try {
    return { url, size: await decodeSize(url) };
  } catch {
    return { url, size: null };
  }
}

/** The record of a newly chosen image (the photo or the painting), in place of ``old``: any request running is
 * cancelled and the old preview URL released; ``size`` is null for a file the browser cannot show. */
function replaceImage(old, file, name, size, url) {
  cancelRequest();
  if (old?.url) URL.revokeObjectURL(old.url);
  return {
    file, name, base: baseName(name), type: fileKind(file), bytes: file.size,
    width: size?.width || 0, height: size?.height || 0, url: size ? url : "",
  };
}

// ---------------------------------------------------------------- API base URL

/** Same-origin default: the folder this page is served from, so a stage path (/prod/) keeps working. */
function pageBase() {
  return new URL(".", location.href).href;
}

function normaliseBase(raw) {
  let u;
  try { u = new URL(raw, location.href); } catch { return null; }
  if (u.protocol !== "https:" && u.protocol !== "http:") return null;
  u.search = ""; u.hash = "";
  if (!u.pathname.endsWith("/")) u.pathname += "/";
  return u.href;
}

function storageGet() { try { return localStorage.getItem(API_STORAGE_KEY); } catch { return null; } }
function storageSet(v) { try { v ? localStorage.setItem(API_STORAGE_KEY, v) : localStorage.removeItem(API_STORAGE_KEY); } catch { /* private mode */ } }

/** Order: ?api= (saved for next time) > saved value > <meta name="api-base"> > same origin. */
function resolveApiBase() {
  const params = new URLSearchParams(location.search);
  if (params.has("api")) {
    const raw = params.get("api").trim();
    if (raw === "" || raw === "default" || raw === "same-origin") {
      storageSet(null);
    } else {
      const base = normaliseBase(raw);
      if (base) storageSet(base);
      else setApiState("warn", `Ignored ?api=${raw}: not an http(s) URL`);
    }
  }
  const saved = storageGet() && normaliseBase(storageGet());
  const meta = document.querySelector('meta[name="api-base"]')?.content?.trim();
  const base = saved || (meta && normaliseBase(meta)) || pageBase();
  setApiBase(base);
}

function setApiBase(base) {
  state.apiBase = base;
  state.apiBaseCustom = base !== pageBase();
  el.apiBaseLabel.textContent = state.apiBaseCustom ? base : "same origin";
  el.apiInput.value = state.apiBaseCustom ? base : "";
}

const apiUrl = (path) => new URL(path, state.apiBase).href;

function setApiState(kind, text) {
  el.apiState.dataset.state = kind;
  el.apiStateText.textContent = text;
}

// ---------------------------------------------------------------- health, limits and styles

let healthRetry = 0;

async function loadHealth() {
  clearTimeout(healthRetry);
  let res;
  try {
    res = await fetch(apiUrl("health"), { headers: { Accept: "application/json" } });
  } catch (err) {
    setApiState("down", `API unreachable (${state.apiBaseCustom ? state.apiBase : "this server"})`);
    el.apiState.title = String(err.message || err);
    healthRetry = setTimeout(loadHealth, 15_000);
    renderLimitsHint();
    validate();
    return;
  }
  try {
    const body = await res.json().catch(() => null);
    if (!res.ok || !body) {
      throw new Error(body?.error?.message || gatewayBusyMessage(res.status, body) ||
        `HTTP ${res.status} ${res.statusText}`.trim());
    }
    const limits = body.limits || {};
    state.limits = { ...DEFAULT_LIMITS };
    for (const key of Object.keys(DEFAULT_LIMITS)) {
      if (Number.isFinite(limits[key]) && limits[key] > 0) state.limits[key] = limits[key];
    }
    // Without a result bucket, a result over the response cap (AWS Lambda: 6 MB) is refused; say so first.
    // Offer only the working sizes the server allows (max_side up to max_side_limit).
    if (Number.isFinite(limits.max_side_limit)) {
      for (const option of el.maxSide.options) option.disabled = Number(option.value) > limits.max_side_limit;
      if (el.maxSide.selectedOptions[0]?.disabled) {
        const allowed = Array.from(el.maxSide.options).filter((o) => !o.disabled);
        if (allowed.length) el.maxSide.value = allowed[allowed.length - 1].value;
      }
    }
    state.limits.max_response_bytes = !limits.result_bucket && Number.isFinite(limits.max_response_bytes)
      ? limits.max_response_bytes : 0;
    // A deployment that caps its responses is behind API Gateway and Lambda, which cap a request's payload
    // the same way (6 MB, base64 included): a photo and a painting sent together must fit it.
    state.limits.max_request_bytes = Number.isFinite(limits.max_response_bytes) && limits.max_response_bytes > 0
      ? limits.max_response_bytes : 0;
    const models = body.models && typeof body.models === "object" ? Object.values(body.models) : [];
    const ready = body.status === "ok";
    // A custom API is named, so that a link with ?api= cannot quietly send images elsewhere.
    const where = state.apiBaseCustom ? ` · ${new URL(state.apiBase).host}` : "";
    setApiState(ready ? "ok" : "warn", (ready ? "API ready" : `API status: ${body.status}`) + where);
    el.apiState.title = models.length ? `${models.length} models known to the server` : "";
    offerModels(body);
    if (!state.styles.length && el.gallery.querySelector(".is-error")) loadStyles(); // it has recovered
  } catch (err) {
    // Serving, but not ready (e.g. weights not there yet): say what the server says, and look again soon.
    setApiState("warn", `API not ready: ${err.message || err}`);
    el.apiState.title = String(err.message || err);
    healthRetry = setTimeout(loadHealth, 10_000);
  }
  renderLimitsHint();
  validate();
}

/** The model choices after GET /health: those its manifest lacks are disabled (the API would answer 503
 * model_missing), and the server's default is checked unless the user has picked one. */
function offerModels(body) {
  const known = body.models && typeof body.models === "object" ? Object.keys(body.models) : [];
  const radios = Array.from(document.querySelectorAll('input[name="model"]'));
  for (const radio of radios) {
    radio.disabled = known.length > 0 && !known.includes(radio.value);
    radio.closest(".choice").title = radio.disabled ? "Not deployed on this server" : "";
  }
  const fallback = radios.find((r) => r.value === body.default_sr_model && !r.disabled);
  const checked = radios.find((r) => r.checked);
  if ((!state.modelChosen || checked?.disabled) && fallback) fallback.checked = true;
  else if (checked?.disabled) (radios.find((r) => !r.disabled) || checked).checked = true;
}

function renderLimitsHint() {
  const l = state.limits;
  el.limitsHint.textContent = `PNG, JPEG, WebP, BMP, TIFF or GIF · up to ${fmtBytes(l.max_upload_bytes)}` +
    ` · upscale up to ${fmtPixelsShort(l.max_upscale_pixels)}`;
}

async function loadStyles() {
  galleryMessage("Loading styles…");
  try {
    const res = await fetch(apiUrl("styles"), { headers: { Accept: "application/json" } });
    const body = await res.json().catch(() => null);
    if (!res.ok) {
      throw new Error(body?.error?.message || gatewayBusyMessage(res.status, body) ||
        `The API answered ${res.status} ${res.statusText}`.trim());
    }
    state.styles = Array.isArray(body?.styles) ? body.styles : [];
    renderGallery();
  } catch (err) {
    state.styles = [];
    galleryMessage(`Could not load the styles: ${err.message || err}`, true);
  }
  validate();
}

/** Empties the gallery of named styles; the "Your own painting" tile stays (it needs no listed style). */
function clearGallery() {
  for (const node of Array.from(el.gallery.children)) if (node !== el.ownCard) node.remove();
}

function galleryMessage(text, isError = false) {
  clearGallery();
  const p = document.createElement("p");
  p.className = "gallery-msg" + (isError ? " is-error" : "");
  p.id = "gallery-msg";
  p.textContent = text;
  if (isError) {
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "secondary small";
    retry.textContent = "Retry";
    retry.addEventListener("click", loadStyles);
    p.append(" ", retry);
  }
  el.gallery.append(p);
}

function renderGallery() {
  if (!state.styles.length) {
    galleryMessage("This server has no styles installed; your own painting can still be one.");
    return;
  }
  const previous = selectedStyleName();
  const own = ownSelected();
  clearGallery();
  state.styles.forEach((style, i) => {
    const label = document.createElement("label");
    label.className = "style-card";
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "style";
    input.value = style.name;
    input.checked = !own && (previous ? previous === style.name : i === 0);
    const body = document.createElement("span");
    body.className = "style-card-body";
    const img = document.createElement("img");
    img.alt = "";
    img.loading = "lazy";
    img.decoding = "async";
    if (style.thumbnail) img.src = new URL(style.thumbnail, state.apiBase).href;
    img.addEventListener("error", () => img.classList.add("broken"), { once: true });
    const text = document.createElement("span");
    text.className = "style-card-text";
    const title = document.createElement("span");
    title.className = "style-title";
    title.textContent = style.title || style.name;
    text.append(title);
    if (style.artist) {
      const artist = document.createElement("span");
      artist.className = "style-artist";
      artist.textContent = style.artist;
      text.append(artist);
    }
    if (style.licence) {
      const licence = document.createElement("span");
      licence.className = "style-licence";
      licence.textContent = style.licence;
      text.append(licence);
    }
    body.append(img, text);
    label.append(input, body);
    input.addEventListener("change", validate);
    el.gallery.append(label);
  });
}

/** The named style chosen in the gallery; null when none is, or when "Your own painting" is. */
function selectedStyleName() {
  return el.gallery.querySelector('input[name="style"]:checked:not(#style-own)')?.value || null;
}

const ownSelected = () => el.styleOwn.checked;

function selectedStyle() {
  const name = selectedStyleName();
  return state.styles.find((s) => s.name === name) || null;
}

// ---------------------------------------------------------------- choosing the image

function showSourceNotice(text, kind = "error", canFix = false) {
  if (text && kind === "error" && state.source) text += ` “${state.source.name}” is still selected.`;
  el.sourceNoticeText.textContent = text;
  el.sourceNotice.dataset.kind = kind;
  el.sourceNotice.hidden = !text;
  el.sourceFix.hidden = !canFix;
}

function decodeSize(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve({ width: img.naturalWidth, height: img.naturalHeight });
    img.onerror = () => reject(new Error("not decodable"));
    img.src = url;
  });
}

/** Takes a File from the picker, a drop or the clipboard; refuses it here when the API would. */
async function useFile(file, origin) {
  if (!file) return;
  showSourceNotice("");
  if (state.oversized) { URL.revokeObjectURL(state.oversized.url); state.oversized = null; }
  const name = origin === "paste" && (!file.name || /^image\.\w+$/.test(file.name))
    ? `pasted${(file.name.match(/\.\w+$/) || [".png"])[0]}` : (file.name || "image");
  const looksLikeImage = ACCEPTED_TYPES.includes(file.type) || ACCEPTED_EXT.test(name);
  if (!looksLikeImage) {
    showSourceNotice(`“${name}” is not an image the API accepts (${fileKind(file)}). ` +
      "Use PNG, JPEG, WebP, BMP, TIFF or GIF.");
    return;
  }
  const limit = state.limits.max_upload_bytes;
  if (file.size > limit) {
    const message = `“${name}” is ${fmtBytes(file.size)}; the largest upload the API accepts is ` +
      `${fmtBytes(limit)} (${fmtInt(limit)} bytes).`;
    showSourceNotice(`${message} Choose a smaller file.`);
    // If the browser can read it, offer to make a copy that fits (nothing is sent until the user runs a task).
    const url = URL.createObjectURL(file);
    try {
      const size = await decodeSize(url);
      state.oversized = { url, name, base: baseName(name), width: size.width, height: size.height };
      showSourceNotice(`${message} A smaller copy made here can be sent instead.`, "error", true);
    } catch {
      URL.revokeObjectURL(url);
    }
    return;
  }
  const opened = await openImage(file, name, showSourceNotice);
  if (!opened) return;
  const { url, size } = opened;
  // Browsers cannot show TIFF; the API can read it, so it is sent without a preview.
  if (!size && !TIFF.test(file.type) && !TIFF.test(name)) {
    URL.revokeObjectURL(url);
    showSourceNotice(`“${name}” could not be read as an image; it may be damaged or not really a ` +
      `${fileKind(file)}. Use PNG, JPEG, WebP, BMP, TIFF or GIF.`);
    return;
  }
  state.source = replaceImage(state.source, file, name, size, url);
  if (!size) {
    URL.revokeObjectURL(url);
    showSourceNotice("This browser cannot preview TIFF; the API will still read it. Its size is checked by the server.", "info");
  }
  clearResult();
  clearError();
  renderSource();
  validate();
}

function renderSource() {
  const s = state.source;
  el.dropzone.dataset.state = s ? "filled" : "empty";
  el.dropEmpty.hidden = !!s;
  el.dropFilled.hidden = !s;
  if (!s) return;
  el.sourceName.textContent = s.name;
  el.sourceThumb.hidden = !s.url;
  if (s.url) {
    el.sourceThumb.src = s.url;
    el.sourceThumb.alt = `Preview of ${s.name}`;
  }
  el.sourceMeta.textContent = (s.width ? `${fmtInt(s.width)} × ${fmtInt(s.height)} px · ` : "") +
    `${fmtBytes(s.bytes)} · ${s.type}`;
  // The original fills the stage at once, at the size the result will be shown at.
  if (s.url) {
    el.before.src = s.url;
    showFrame(s.width, s.height);
  } else {
    el.before.removeAttribute("src");
    el.frame.hidden = true;
    el.stageEmpty.hidden = false;
    el.stage.dataset.state = "empty";
  }
  el.before.hidden = !s.url;
}

// ---------------------------------------------------------------- your own painting

/** The tile's notice: what was wrong with the painting offered last, or that it and the photo are too large
 * to send together. fix: offer "Make a smaller copy" of fix.from (an object URL, size and base name). */
function renderPaintingNotice(note) {
  el.paintingNoticeText.textContent = note?.text || "";
  el.paintingNotice.dataset.kind = note?.kind || "error";
  el.paintingNotice.hidden = !note?.text;
  el.paintingFix.hidden = !note?.fix;
  state.paintingFix = note?.fix || null;
}

function setPaintingNote(text, kind = "error", fix = null) {
  if (text && kind === "error" && state.painting) text += ` “${state.painting.name}” is still the painting.`;
  state.paintingNote = text ? { text, kind, fix } : null;
  validate();
}

/** Takes a painting from the tile's picker, a drop on the tile or a paste into it. The server decodes it with
 * the photo's limits; what can be checked here is checked here, the rest (a file this browser cannot show)
 * goes to the server, whose answer is shown like any other. */
async function usePainting(file, origin) {
  if (!file) return;
  if (state.paintingOversized) { URL.revokeObjectURL(state.paintingOversized.url); state.paintingOversized = null; }
  const name = origin === "paste" && (!file.name || /^image\.\w+$/.test(file.name))
    ? `painting${(file.name.match(/\.\w+$/) || [".png"])[0]}` : (file.name || "painting");
  if (!(ACCEPTED_TYPES.includes(file.type) || ACCEPTED_EXT.test(name))) {
    setPaintingNote(`“${name}” is not an image the API accepts as a painting (${fileKind(file)}). ` +
      "Use PNG, JPEG, WebP, BMP, TIFF or GIF.");
    return;
  }
  // A painting the browser cannot show is sent without a preview: the server is the judge.
  const opened = await openImage(file, name, setPaintingNote);
  if (!opened) return;
  const { url, size } = opened;
  const byteLimit = state.limits.max_upload_bytes;
  const pixelLimit = state.limits.max_stylize_pixels;
  if (file.size > byteLimit || (size && size.width * size.height > pixelLimit)) {
    const why = file.size > byteLimit
      ? `is ${fmtBytes(file.size)}; the largest painting the API accepts is ${fmtBytes(byteLimit)} (${fmtInt(byteLimit)} bytes)`
      : `is ${fmtInt(size.width)} × ${fmtInt(size.height)} px; a painting may have at most ${fmtPixels(pixelLimit)}`;
    if (!size) {
      URL.revokeObjectURL(url);
      setPaintingNote(`“${name}” ${why}. Choose a smaller file.`);
      return;
    }
    // Nothing is lost by a smaller copy: the server reduces a painting to 512 px before using it.
    state.paintingOversized = { url, name, base: baseName(name), width: size.width, height: size.height };
    setPaintingNote(`“${name}” ${why}. A smaller copy made here can be used instead.`, "error",
      { from: state.paintingOversized, byteLimit });
    return;
  }
  state.painting = replaceImage(state.painting, file, name, size, url);
  if (!size) URL.revokeObjectURL(url);
  state.paintingRefused = "";
  el.styleOwn.checked = true;
  renderPainting();
  const note = size ? "" : TIFF.test(file.type) || TIFF.test(name)
    ? `This browser cannot preview TIFF; the API reads “${name}” when you stylize.`
    : `This browser could not show “${name}”; it may not be an image. The API checks it when you stylize.`;
  setPaintingNote(note, "info");
}

function renderPainting() {
  const p = state.painting;
  el.ownCard.dataset.state = state.paintingRefused ? "error" : p ? "filled" : "empty";
  el.paintingThumb.hidden = !p?.url;
  if (p?.url) el.paintingThumb.src = p.url;
  else el.paintingThumb.removeAttribute("src");
  if (!p) return;
  el.paintingName.textContent = state.paintingRefused ? `${p.name}: refused by the API` : p.name;
  el.paintingName.title = p.width ? `${p.name} · ${fmtInt(p.width)} × ${fmtInt(p.height)} px · ${fmtBytes(p.bytes)}`
    : `${p.name} · ${fmtBytes(p.bytes)}`;
  el.paintingInput.setAttribute("aria-invalid", String(!!state.paintingRefused));
}

async function usePaintingCopy(fix) {
  const { file, w, h } = await smallerCopy(fix.from, {
    pixelLimit: Math.min(state.limits.max_stylize_pixels, PAINTING_COPY_PIXELS), byteLimit: fix.byteLimit,
  });
  await usePainting(file, "shrink");
  el.status.textContent = `Using a ${fmtInt(w)} × ${fmtInt(h)} px copy of the painting (${fmtBytes(file.size)}).`;
}

/** Bytes of the request that sends photo and painting together, once API Gateway has base64-encoded it. */
const requestBytes = (s, p) => Math.ceil((s.bytes + p.bytes + FORM_ENVELOPE_BYTES) / 3) * 4;

/**
 * Sizes the frame to the image's aspect ratio: fitted into the stage (whose size never changes), or at a zoom
 * in result pixels per CSS pixel, keeping the point at the centre of the view where it was.
 */
function fitFrame() {
  const { w, h } = el.frame.dataset.aspect ? JSON.parse(el.frame.dataset.aspect) : { w: 0, h: 0 };
  if (!w || !h) return;
  const vp = el.viewport;
  const cx = vp.scrollWidth > vp.clientWidth ? (vp.scrollLeft + vp.clientWidth / 2) / vp.scrollWidth : 0.5;
  const cy = vp.scrollHeight > vp.clientHeight ? (vp.scrollTop + vp.clientHeight / 2) / vp.scrollHeight : 0.5;
  const fit = Math.min(el.stage.clientWidth / w, el.stage.clientHeight / h);
  const zoomed = state.zoom !== "fit" && state.result;
  const scale = zoomed ? Number(state.zoom) * state.result.width / w : fit;
  el.frame.style.width = `${Math.max(1, Math.floor(w * scale))}px`;
  el.frame.style.height = `${Math.max(1, Math.floor(h * scale))}px`;
  vp.scrollLeft = cx * vp.scrollWidth - vp.clientWidth / 2;
  vp.scrollTop = cy * vp.scrollHeight - vp.clientHeight / 2;
}

function setZoom(zoom) {
  state.zoom = zoom;
  for (const b of el.zoom.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.zoom === zoom));
  fitFrame();
}

function showFrame(w, h) {
  el.frame.dataset.aspect = JSON.stringify({ w, h });
  el.frame.hidden = false;
  el.stageEmpty.hidden = true;
  el.stage.dataset.state = "image";
  fitFrame();
}

// ---------------------------------------------------------------- task options and pre-checks

const task = () => (el.taskStylize.checked ? "stylize" : "upscale");
const model = () => document.querySelector('input[name="model"]:checked')?.value || "real";
const modelName = (m) => MODEL_NAMES[m] || m;
/** The denoise field: "auto" (measured by the server) or the slider's level, 0..1. */
const denoise = () => (el.denoiseAuto.checked ? "auto" : Number(el.denoise.value).toFixed(2));
const scale = () => Number(document.querySelector('input[name="scale"]:checked')?.value || 4);

const maxSide = () => Number(el.maxSide.value) || 1024;

function stylizeSize(w, h) {
  const f = Math.min(1, maxSide() / Math.max(w, h));
  return [Math.round(w * f), Math.round(h * f)];
}

function resultSize(t, s) {
  return t === "upscale" ? [s.width * scale(), s.height * scale()] : stylizeSize(s.width, s.height);
}

/** The server's PNG size bound (images.png_size_bound, RGB), base64-encoded, against the response cap. */
function resultTooLarge(t, s) {
  const cap = state.limits.max_response_bytes;
  if (!cap) return false;
  const [w, h] = resultSize(t, s);
  const raw = h * (w * 3 + 1);
  const bound = raw + Math.floor(raw / 1000) * 5 + 1024;
  return Math.floor(bound * 4 / 3) + 1024 > cap;
}

/** Checks what can be checked before sending; enables the button only when the request can succeed. */
function validate() {
  const t = task();
  el.upscaleOptions.hidden = t !== "upscale";
  el.stylizeOptions.hidden = t !== "stylize";
  el.strengthOut.textContent = `${Math.round(Number(el.strength.value) * 100)}%`;
  el.denoiseField.hidden = !DENOISE_MODELS.includes(model());
  el.denoise.disabled = el.denoiseAuto.checked;
  el.denoiseOut.textContent = el.denoiseAuto.checked ? "Auto" : denoise();
  const busy = !!state.controller;
  el.run.textContent = busy ? (t === "upscale" ? "Upscaling…" : "Stylizing…")
    : t === "upscale" ? `Upscale ${scale()}×` : "Stylize";

  const s = state.source;
  const own = t === "stylize" && ownSelected();
  el.limitNotice.hidden = true;
  // Behind API Gateway the whole request counts: the photo, the painting and the form, base64-encoded.
  const cap = state.limits.max_request_bytes;
  let together = null;
  if (own && s && state.painting && cap && requestBytes(s, state.painting) > cap) {
    const p = state.painting;
    const byteLimit = Math.min(state.limits.max_upload_bytes,
      Math.floor(cap * 3 / 4) - s.bytes - FORM_ENVELOPE_BYTES);
    together = {
      text: `The photo (${fmtBytes(s.bytes)}) and the painting (${fmtBytes(p.bytes)}) are too large to send together: ` +
        `this API takes at most ${fmtBytes(cap)} (${fmtInt(cap)} bytes) a request, base64-encoded.` +
        (p.url && byteLimit > 1024 ? " A smaller copy of the painting made here fits." : " Choose a smaller painting."),
      kind: "error",
      fix: p.url && byteLimit > 1024 ? { from: p, byteLimit } : null,
    };
  }
  if (t === "stylize") renderPaintingNotice(state.paintingNote || together);
  el.upscaleHint.textContent = s?.width
    ? `${fmtInt(s.width)} × ${fmtInt(s.height)} → ${fmtInt(s.width * scale())} × ${fmtInt(s.height * scale())} px`
    : "";
  let problem = "";
  let hint = "";
  if (!s) {
    problem = "Choose an image to start.";
  } else {
    const limit = t === "upscale" ? state.limits.max_upscale_pixels : state.limits.max_stylize_pixels;
    const pixels = s.width * s.height;
    if (pixels > limit) {
      el.limitText.textContent = `This image is ${fmtInt(s.width)} × ${fmtInt(s.height)} = ${fmtInt(pixels)} pixels; ` +
        `${t === "upscale" ? "upscaling" : "stylizing"} accepts at most ${fmtPixels(limit)}.` +
        (t === "upscale" && pixels <= state.limits.max_stylize_pixels ? " Stylize takes it as it is." : "");
      el.limitNotice.hidden = false;
      el.shrink.hidden = !s.url;
      problem = "Too many pixels for this task: shrink the image or pick another.";
    } else if (s.width && resultTooLarge(t, s)) {
      const [w, h] = resultSize(t, s);
      el.limitText.textContent = `A ${fmtInt(w)} × ${fmtInt(h)} px result may be larger than the ` +
        `${fmtBytes(state.limits.max_response_bytes)} the API can send back (${fmtInt(state.limits.max_response_bytes)} bytes)` +
        (t === "upscale" ? "; choose a smaller scale or image." : "; choose a smaller image.");
      el.limitNotice.hidden = false;
      el.shrink.hidden = true;
      problem = "The result would be too large to send back.";
    } else if (own && !state.painting) {
      problem = "Choose a file for “Your own painting”, or pick a named style.";
    } else if (own && state.paintingRefused) {
      problem = "The API could not use this painting: choose another, or pick a named style.";
    } else if (own && together) {
      problem = "The photo and the painting are too large to send together.";
    } else if (t === "stylize" && !own && !selectedStyleName()) {
      problem = state.styles.length ? "Pick a style." : "No style available yet.";
    } else if (s.width) {
      const [w, h] = resultSize(t, s);
      hint = `Result: ${fmtInt(w)} × ${fmtInt(h)} px` + (matchMedia("(pointer: fine)").matches ? ` · ${MOD_KEY}+Enter runs it` : "");
    }
  }
  el.run.disabled = busy || !!problem;
  if (!busy) el.runHint.textContent = problem || hint;
}

/**
 * Makes a copy of an image (given by object URL and size) that fits the current task's pixel limit and the upload
 * limit (or the limits given): PNG when that fits (keeps transparency), else JPEG, shrinking further until the bytes fit.
 * Keeps the original's base name, so the download is still named after it.
 */
async function smallerCopy({ url, width, height, base }, {
  pixelLimit = task() === "upscale" ? state.limits.max_upscale_pixels : state.limits.max_stylize_pixels,
  byteLimit = state.limits.max_upload_bytes,
} = {}) {
  const img = new Image();
  img.src = url;
  await img.decode();
  let f = Math.min(1, Math.sqrt(pixelLimit / (width * height)));
  for (let attempt = 0; attempt < 8; attempt += 1, f *= 0.8) {
    let w = Math.max(1, Math.floor(width * f));
    let h = Math.max(1, Math.floor(height * f));
    while (w * h > pixelLimit && w > 1) { w -= 1; h = Math.max(1, Math.floor(height * w / width)); }
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(img, 0, 0, w, h);
    const png = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
    if (png && png.size <= byteLimit) return { file: new File([png], `${base}.png`, { type: "image/png" }), w, h };
    const jpeg = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
    if (jpeg && jpeg.size <= byteLimit) return { file: new File([jpeg], `${base}.jpg`, { type: "image/jpeg" }), w, h };
  }
  throw new Error("the image could not be made small enough");
}

async function useSmallerCopy(from) {
  const { file, w, h } = await smallerCopy(from);
  await useFile(file, "shrink");
  el.status.textContent = `Using a ${fmtInt(w)} × ${fmtInt(h)} px copy (${fmtBytes(file.size)}) that fits the limits.`;
}

// ---------------------------------------------------------------- running a request

class ApiError extends Error {
  constructor(message, { status = 0, code = "", retry = false } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.retry = retry;
  }
}

async function readJson(res) {
  const text = await res.text();
  try { return { json: JSON.parse(text), text }; } catch { return { json: null, text }; }
}

// API Gateway answers some requests itself, in its own shape ({"message": "..."}), never the API's
// {"error": {...}}: 429 "Too Many Requests" when the stage's throttle (serverless.yml throttleRate,
// throttleBurst) refuses a request, and a bare 500 "Internal Server Error" when Lambda throttles the function
// because the account's concurrency is used up. Both mean "busy, retry", not an unexplained failure.
function gatewayBusyMessage(status, json) {
  if (json?.error) return "";
  if (status === 429) return "The service is busy right now (too many requests at once). Retry in a few seconds.";
  if (status === 500 || status === 503) {
    return "The service is busy right now: every instance of the API is in use, or one is still starting " +
      `(the API answered ${status} without details). Retry in a few seconds.`;
  }
  return "";
}

function errorFromResponse(res, json, text) {
  const e = json?.error;
  const busy = gatewayBusyMessage(res.status, json);
  let message = busy || (typeof e === "object" && e?.message) || (typeof e === "string" && e) || json?.message || "";
  if (!message) {
    const snippet = text && !/^\s*</.test(text) ? `: ${text.trim().slice(0, 200)}` : "";
    message = `The API answered ${res.status} ${res.statusText || ""}`.trim() + snippet + ".";
    if (res.status === 413) message += ` The upload limit is ${fmtBytes(state.limits.max_upload_bytes)}.`;
    if (res.status === 504) message += " The request took too long; try a smaller image.";
  }
  return new ApiError(message, {
    status: res.status,
    code: (typeof e === "object" && e?.code) || (busy ? "busy" : ""),
    retry: !!busy || res.status === 503 || res.status === 502 || res.status === 504 || res.status === 429,
  });
}

function base64ToBlob(b64, type = "image/png") {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i += 1) bytes[i] = bin.charCodeAt(i);
  return new Blob([bytes], { type });
}

function buildForm(t, s) {
  const form = new FormData();
  form.append("image", s.file, s.name);
  if (t === "upscale") {
    form.append("model", model());
    form.append("scale", String(scale()));
    if (DENOISE_MODELS.includes(model())) form.append("denoise", denoise());
  } else {
    if (ownSelected()) form.append("style_image", state.painting.file, state.painting.name);
    else form.append("style", selectedStyleName());
    form.append("strength", Number(el.strength.value).toFixed(2));
    form.append("preserve_color", el.preserve.checked ? "true" : "false");
    form.append("max_side", String(maxSide()));
  }
  return form;
}

function describeRun(t) {
  if (t === "upscale") {
    const level = DENOISE_MODELS.includes(model()) ? `, denoise ${el.denoiseAuto.checked ? "auto" : denoise()}` : "";
    return `Upscaling ${scale()}× with ${modelName(model())}${level}…`;
  }
  if (ownSelected()) return `Stylizing in the style of “${state.painting.name}”…`;
  return `Stylizing as “${selectedStyle()?.title || selectedStyleName()}”…`;
}

async function run() {
  const s = state.source;
  validate();
  if (!s || el.run.disabled) return;
  const t = task();
  const request = {
    task: t, model: model(), scale: scale(), style: selectedStyle(), styleName: selectedStyleName(),
    painting: t === "stylize" && ownSelected() ? state.painting : null,
    strength: Number(el.strength.value), preserve: el.preserve.checked, source: s,
  };
  const form = buildForm(t, s);
  clearError();
  el.status.textContent = "";
  const controller = new AbortController();
  state.controller = controller;
  const started = performance.now();
  startBusy(describeRun(t), started);
  try {
    let res;
    try {
      res = await fetch(apiUrl(t), {
        method: "POST", body: form, signal: controller.signal, headers: { Accept: "application/json" },
      });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(`Could not reach the API at ${state.apiBase}. Check the connection, or the API address ` +
        "at the bottom of the page.", { retry: true });
    }
    const { json, text } = await readJson(res);
    if (!res.ok) throw errorFromResponse(res, json, text);
    if (!json || (!json.image && !json.url)) {
      throw new ApiError("The API answered without an image. Try again, or report this if it persists.", { retry: true });
    }
    let blob = null;
    let remoteUrl = "";
    if (json.image) {
      blob = base64ToBlob(json.image);
    } else {
      remoteUrl = json.url;
      try {
        const r = await fetch(remoteUrl, { signal: controller.signal });
        if (r.ok) blob = await r.blob();
      } catch (err) {
        if (err.name === "AbortError") throw err;
        // Not fetchable from script (CORS or CSP): show and link the URL itself.
      }
    }
    const elapsed = performance.now() - started;
    if (state.controller !== controller) return; // superseded by a newer image or request
    await showResult({ ...request, json, blob, remoteUrl, elapsed });
  } catch (err) {
    if (err.name === "AbortError") return; // cancelRequest() has said so already
    if (state.controller !== controller) return;
    // The API names the field in what it says about a painting ("style_image: ..."): the tile shows it too.
    if (request.painting && request.painting === state.painting && err.status >= 400 && err.status < 500 &&
        err.status !== 429 && /\bstyle_image\b/.test(err.message || "")) {
      state.paintingRefused = err.message;
      state.paintingNote = null; // what was said before sending is answered now, in the error box
      renderPainting();
    }
    const title = `${t === "upscale" ? "Upscale" : "Stylize"} failed` +
      (err.status ? ` (${err.status}${err.code ? ` ${err.code}` : ""})` : "");
    showError(title, err.message || String(err), err.retry);
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      stopBusy();
    }
  }
}

function cancelRequest() {
  if (state.controller) {
    state.controller.abort();
    state.controller = null;
    stopBusy();
    el.status.textContent = "Cancelled.";
  }
}

function startBusy(text, started) {
  el.busyText.textContent = text;
  el.busy.hidden = false;
  el.stage.setAttribute("aria-busy", "true");
  el.cancel.hidden = false;
  el.run.disabled = true;
  validate();
  const tick = () => {
    const t = fmtSeconds(performance.now() - started);
    el.busyTime.textContent = t;
    el.runHint.textContent = `${text} ${t}`;
  };
  tick();
  clearInterval(state.timer);
  state.timer = setInterval(tick, 100);
  // On a phone the result area is below the controls: bring it into view so the progress is seen.
  const rect = el.stage.getBoundingClientRect();
  if (rect.top > window.innerHeight || rect.bottom < 0) el.stage.scrollIntoView({
    behavior: matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth", block: "center",
  });
  el.busyCancel.focus({ preventScroll: true });
}

function stopBusy() {
  clearInterval(state.timer);
  el.busy.hidden = true;
  el.stage.removeAttribute("aria-busy");
  el.cancel.hidden = true;
  const hadFocus = document.activeElement === el.busyCancel || document.activeElement === el.cancel;
  validate();
  if (hadFocus && !el.run.disabled) el.run.focus({ preventScroll: true });
}

// ---------------------------------------------------------------- result, comparison, download

function loadImage(img, src) {
  return new Promise((resolve, reject) => {
    img.onload = () => resolve();
    img.onerror = () => reject(new ApiError("The result could not be displayed: the browser could not decode it."));
    img.src = src;
  });
}

function resultFileName(r) {
  return r.task === "upscale"
    ? `${r.source.base}_x${r.scale}_${safePart(r.model)}.png`
    : r.painting ? `${r.source.base}_${r.painting.base}.png`
      : `${r.source.base}_${safePart(r.styleName) || "styled"}.png`;
}

async function showResult(r) {
  clearResult();
  const objectUrl = r.blob ? URL.createObjectURL(r.blob) : "";
  const src = objectUrl || r.remoteUrl;
  el.after.hidden = false;
  await loadImage(el.after, src);
  const width = el.after.naturalWidth || r.json.width;
  const height = el.after.naturalHeight || r.json.height;
  state.result = { ...r, objectUrl, width, height };

  const hasBefore = !!r.source.url;
  if (!hasBefore) showFrame(width, height);
  else fitFrame();
  el.tagBefore.hidden = !hasBefore;
  el.tagAfter.hidden = !hasBefore;
  el.handle.hidden = !hasBefore;
  el.compare.hidden = !hasBefore;
  el.zoom.classList.remove("invisible");
  setZoom("fit");
  el.frame.classList.toggle("comparing", hasBefore);
  setCompare(hasBefore ? 50 : 0);
  el.frame.dataset.result = "ready";

  const bytes = r.blob ? ` · ${fmtBytes(r.blob.size)}` : "";
  el.metaSize.replaceChildren(`${fmtInt(width)} × ${fmtInt(height)} px`, small(
    (r.source.width ? `from ${fmtInt(r.source.width)} × ${fmtInt(r.source.height)}` : "PNG") + bytes));
  const server = Number.isFinite(r.json.elapsed_ms) ? `server ${fmtSeconds(r.json.elapsed_ms)}` : "";
  el.metaTime.replaceChildren(fmtSeconds(r.elapsed), small(server || "round trip"));
  if (r.task === "upscale") {
    // real: the damage level it ran at, and whether the server measured it (with the JPEG quality it read)
    const level = Number.isFinite(r.json.denoise)
      ? `denoise ${r.json.denoise.toFixed(2)} ${r.json.denoise_source === "request" ? "(set)" : "(auto)"}` +
        (Number.isFinite(r.json.jpeg_quality) ? ` · JPEG q${r.json.jpeg_quality}` : "") + " · "
      : "";
    el.metaModel.replaceChildren(`${r.json.model || r.model} · ${r.scale}×`,
      small(level + (r.json.sha256 ? `weights ${r.json.sha256}` : "super-resolution")));
  } else {
    const title = r.painting ? r.painting.name : r.style?.title || r.styleName;
    el.metaModel.replaceChildren(title, small((r.painting ? "your painting · " : "") + `strength ${Math.round(r.strength * 100)}%` +
      (r.preserve ? " · colours kept" : "")));
    el.metaModel.title = r.json.model || "";
  }

  const name = resultFileName(r);
  el.download.href = src;
  el.download.download = name;
  if (!objectUrl) { el.download.target = "_blank"; el.download.rel = "noopener"; }
  el.download.removeAttribute("aria-disabled");
  el.download.removeAttribute("tabindex");
  el.download.title = `Save as ${name}`;
  el.status.textContent = (hasBefore ? "Done. Drag across the image (or use the arrow keys) to compare. " : "Done. ") +
    (r.remoteUrl ? `This result link expires${r.json.expires_in ? ` in ${Math.round(r.json.expires_in / 60)} min` : ""}.` : "");
}

function small(text) {
  const s = document.createElement("small");
  s.textContent = text;
  return s;
}

function clearResult() {
  if (state.result?.objectUrl) URL.revokeObjectURL(state.result.objectUrl);
  state.result = null;
  el.after.hidden = true;
  el.after.removeAttribute("src");
  for (const node of [el.tagBefore, el.tagAfter, el.handle, el.compare]) node.hidden = true;
  el.zoom.classList.add("invisible"); // keeps its room, so the heading row never changes height
  state.zoom = "fit";
  fitFrame();
  el.frame.classList.remove("comparing");
  delete el.frame.dataset.result;
  for (const dd of [el.metaSize, el.metaTime, el.metaModel]) { dd.textContent = "—"; dd.removeAttribute("title"); }
  el.download.removeAttribute("href");
  el.download.removeAttribute("target");
  el.download.removeAttribute("title");
  el.download.setAttribute("aria-disabled", "true");
  el.download.setAttribute("tabindex", "-1");
  el.status.textContent = "";
}

/** pct: 0..100, the share of the width (from the left) that shows the original. */
function setCompare(pct) {
  state.comparePct = Math.min(100, Math.max(0, pct));
  el.compare.value = String(state.comparePct);
  el.after.style.clipPath = `inset(0 0 0 ${state.comparePct}%)`;
  el.handle.style.left = `${state.comparePct}%`;
}

function pctFromPointer(ev) {
  const rect = el.frame.getBoundingClientRect();
  return ((ev.clientX - rect.left) / rect.width) * 100;
}

// ---------------------------------------------------------------- errors

function showError(title, message, retry = false) {
  el.errorTitle.textContent = title;
  el.errorMessage.textContent = message;
  el.errorRetry.hidden = !retry;
  el.error.hidden = false;
}

function clearError() {
  el.error.hidden = true;
  el.errorMessage.textContent = "";
}

// ---------------------------------------------------------------- wiring

function wire() {
  el.fileInput.addEventListener("change", () => {
    const file = el.fileInput.files?.[0];
    el.fileInput.value = ""; // choosing the same file again still fires "change"
    useFile(file, "picker");
  });
  $("stage-choose").addEventListener("click", () => el.fileInput.click());
  el.dropEmpty.addEventListener("click", (ev) => {
    if (ev.target.closest("label")) return;
    el.fileInput.click();
  });

  // "Your own painting": the tile's picker; a click on the empty tile (or Enter on it) opens it too.
  el.paintingInput.addEventListener("change", () => {
    const file = el.paintingInput.files?.[0];
    el.paintingInput.value = "";
    usePainting(file, "picker");
  });
  el.styleOwn.addEventListener("click", (ev) => {
    if (ev.detail > 0 && !state.painting) el.paintingInput.click(); // a pointer's click, not the arrow keys'
  });
  el.styleOwn.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.ctrlKey && !ev.metaKey) { ev.preventDefault(); el.paintingInput.click(); }
  });
  el.styleOwn.addEventListener("change", validate);
  el.paintingFix.addEventListener("click", () => state.paintingFix && usePaintingCopy(state.paintingFix)
    .catch((err) => setPaintingNote(`Could not shrink it: ${err.message}.`)));

  // Drop anywhere on the page: on the painting tile it is the painting, anywhere else the photo.
  let depth = 0;
  const hasFiles = (ev) => Array.from(ev.dataTransfer?.types || []).includes("Files");
  const onTile = (target) => target instanceof Element && !!target.closest("#own-card") && !el.stylizeOptions.hidden;
  window.addEventListener("dragenter", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    depth += 1;
    document.body.classList.add("dragging");
    document.body.classList.toggle("dragging-painting", onTile(ev.target));
  });
  window.addEventListener("dragover", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = "copy";
    document.body.classList.toggle("dragging-painting", onTile(ev.target));
  });
  window.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) document.body.classList.remove("dragging", "dragging-painting");
  });
  window.addEventListener("drop", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    depth = 0;
    document.body.classList.remove("dragging", "dragging-painting");
    const file = ev.dataTransfer.files?.[0];
    if (file && onTile(ev.target)) usePainting(file, "drop");
    else if (file) useFile(file, "drop");
  });

  // Paste: into the painting tile when it has the focus (its radio or its picker), else the photo.
  document.addEventListener("paste", (ev) => {
    if (ev.target instanceof HTMLInputElement && ev.target.type !== "file" && ev.target.type !== "radio") return;
    const items = Array.from(ev.clipboardData?.items || []);
    const file = ev.clipboardData?.files?.[0] || items.find((i) => i.kind === "file")?.getAsFile();
    if (!file) return;
    ev.preventDefault();
    if (onTile(ev.target)) usePainting(file, "paste");
    else useFile(file, "paste");
  });

  for (const input of document.querySelectorAll('input[name="task"], input[name="model"], input[name="scale"]')) {
    input.addEventListener("change", validate);
  }
  for (const input of document.querySelectorAll('input[name="model"]')) {
    input.addEventListener("change", () => { state.modelChosen = true; });
  }
  el.denoiseAuto.addEventListener("change", validate);
  el.denoise.addEventListener("input", validate);
  el.strength.addEventListener("input", validate);
  el.maxSide.addEventListener("change", validate);
  el.shrink.addEventListener("click", () => useSmallerCopy(state.source)
    .catch((err) => showSourceNotice(`Could not shrink it: ${err.message}.`)));
  el.sourceFix.addEventListener("click", () => state.oversized && useSmallerCopy(state.oversized)
    .catch((err) => showSourceNotice(`Could not shrink it: ${err.message}.`)));

  el.run.addEventListener("click", run);
  el.cancel.addEventListener("click", cancelRequest);
  el.busyCancel.addEventListener("click", cancelRequest);
  el.errorClose.addEventListener("click", clearError);
  el.errorRetry.addEventListener("click", run);
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); run(); }
    if (ev.key === "Escape" && state.controller) cancelRequest();
  });

  // Comparison: drag anywhere on the image; the (invisible) range input keeps it keyboard-operable.
  el.compare.addEventListener("input", () => setCompare(Number(el.compare.value)));
  el.frame.addEventListener("pointerdown", (ev) => {
    if (!el.frame.classList.contains("comparing") || ev.button !== 0) return;
    el.frame.setPointerCapture(ev.pointerId);
    setCompare(pctFromPointer(ev));
    el.compare.focus({ preventScroll: true });
    ev.preventDefault();
  });
  el.frame.addEventListener("pointermove", (ev) => {
    if (el.frame.hasPointerCapture(ev.pointerId)) setCompare(pctFromPointer(ev));
  });

  new ResizeObserver(() => fitFrame()).observe(el.stage);
  for (const b of el.zoom.querySelectorAll("button")) b.addEventListener("click", () => setZoom(b.dataset.zoom));

  el.download.addEventListener("click", (ev) => {
    if (!state.result) ev.preventDefault();
  });

  el.apiForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const raw = el.apiInput.value.trim();
    const base = raw ? normaliseBase(raw) : pageBase();
    if (!base) {
      setApiState("warn", "That API address is not an http(s) URL");
      return;
    }
    storageSet(base === pageBase() ? null : base);
    reconnect(base);
  });
  el.apiReset.addEventListener("click", () => { storageSet(null); reconnect(pageBase()); });
}

function reconnect(base) {
  setApiBase(base);
  setApiState("", "Connecting…");
  loadHealth();
  loadStyles();
}

$("paste-key").textContent = MOD_KEY;
$("paste-key-own").textContent = MOD_KEY;
wire();
resolveApiBase();
renderLimitsHint();
validate();
loadHealth();
loadStyles();
