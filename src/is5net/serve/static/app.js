// The page of `is5net serve`: open an image, draw boxes, see the mask. Plain JavaScript, no build step, no
// third-party code. The image is uploaded once (POST /api/images: the server computes its embedding and
// keeps it); each change of the boxes asks POST /api/images/{id}/segment for the soft masks, one per box.
// Clicks on the image refine a box's mask (SAM's point prompts: green foreground, red background); they are
// sent beside their box to the same cached image, so a click costs SAM's decoder and the refiner, no upload
// and no new image embedding.
// The view is drawn at the screen's size, but boxes are kept in pixels of the full-size image and the
// server segments the full-size upload; downloads are the server's PNGs, the very files `is5net predict`
// writes for the same boxes and threshold.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const canvas = $("view");
  const ctx = canvas.getContext("2d");
  const MIN_BOX_PX = 4; // a drag shorter than this (screen px) is a click, not a box
  const HANDLE_PX = 9; // how near (screen px) a corner or an edge must be to grab it
  const POINT_PX = 6; // a click's radius on screen (px); a click this near an existing one removes it

  const state = {
    file: null, stem: "image", imageId: null, bitmap: null, width: 0, height: 0,
    boxes: [], points: [], selected: -1, masks: [], view: "overlay", binarize: false, threshold: 0.5, region: "",
    negative: false, // the toggle: plain clicks are background clicks
    token: sessionStorage.getItem("is5net-token") || null, generation: 0, pending: 0,
  };
  // What the pointer is doing: null, or {mode: "draw"|"move"|"resize", ...}.
  let drag = null;
  // The masks at screen size (one byte per pixel, union of the boxes), rebuilt when masks or size change.
  let screenMask = null;

  // --------------------------------------------------------------------------------------- token
  const hashToken = new URLSearchParams(location.hash.slice(1)).get("token");
  if (hashToken) {
    state.token = hashToken;
    sessionStorage.setItem("is5net-token", hashToken);
    history.replaceState(null, "", location.pathname + location.search); // keep it out of the address bar
  }
  function authHeaders(extra = {}) {
    return state.token ? { ...extra, Authorization: `Bearer ${state.token}` } : extra;
  }

  // --------------------------------------------------------------------------------------- status
  function setStatus(text, busy = false) {
    $("status").textContent = text;
    $("progress").hidden = !busy;
    if (busy) $("progress").removeAttribute("value");
  }
  function setProgress(fraction) {
    $("progress").hidden = false;
    $("progress").value = fraction;
  }
  function showError(message) {
    $("error-text").textContent = message;
    $("error").hidden = false;
    setStatus("");
  }
  function clearError() { $("error").hidden = true; }
  $("error-close").addEventListener("click", clearError);

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  async function errorOf(response) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) message = body.error;
    } catch (_) { /* not JSON: keep the status line */ }
    if (response.status === 401) $("token-form").hidden = false;
    if (response.status === 429) {
      const retry = response.headers.get("Retry-After");
      if (retry) message += ` (retry after ${retry} s)`;
    }
    return new ApiError(response.status, message);
  }

  // ---------------------------------------------------------------------------------------- server
  async function loadHealth() {
    try {
      const r = await fetch("/api/health", { headers: authHeaders() });
      if (!r.ok) throw await errorOf(r);
      const h = await r.json();
      $("models").textContent = `stage 1: ${h.stage1.detail} · refiner: ${h.refiner.detail} · ${h.device}`;
      if (h.refiner.region) $("region").options[0].textContent = `default (${h.refiner.region})`;
      else $("region").disabled = true; // no refiner: nothing to choose
      const notes = [];
      if (h.refiner.note) notes.push(h.refiner.note);
      if (h.stage1.name === "sam" && /random tiny/.test(h.stage1.detail)) notes.push(
        "stage 1 is a random test SAM: its masks mean nothing (give --sam-checkpoint or --stage1 grabcut)");
      $("note").textContent = notes.join(" · ");
      $("note").hidden = notes.length === 0;
    } catch (e) {
      $("models").textContent = "";
      showError(`the server did not answer /api/health: ${e.message}`);
    }
  }

  // XMLHttpRequest, not fetch: only it reports upload progress.
  function uploadImage(file) {
    return new Promise((resolve, reject) => {
      const form = new FormData();
      form.append("image", file, file.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/images");
      if (state.token) xhr.setRequestHeader("Authorization", `Bearer ${state.token}`);
      xhr.responseType = "json";
      xhr.upload.onprogress = (ev) => {
        if (ev.lengthComputable) {
          setProgress(ev.loaded / ev.total);
          $("status").textContent = `Uploading ${file.name}: ${Math.round(100 * ev.loaded / ev.total)}%`;
        }
      };
      xhr.upload.onload = () => setStatus(`Computing the image embedding of ${file.name}…`, true);
      xhr.onload = () => {
        const body = xhr.response || {};
        if (xhr.status === 200) return resolve(body);
        if (xhr.status === 401) $("token-form").hidden = false;
        reject(new ApiError(xhr.status, body.error || `${xhr.status} ${xhr.statusText}`));
      };
      xhr.onerror = () => reject(new ApiError(0, "the upload failed (is the server still running?)"));
      xhr.send(form);
    });
  }

  async function ensureUploaded() {
    if (state.imageId) return;
    const info = await uploadImage(state.file);
    state.imageId = info.id;
    if (info.width !== state.width || info.height !== state.height) {
      // The server's frame (EXIF applied) is the one boxes are in; the bitmap is stretched to it.
      state.width = info.width; state.height = info.height;
    }
  }

  // POST /api/images/{id}/segment; an evicted image (404) is uploaded again, once, without asking.
  async function segmentRequest(body) {
    for (let attempt = 0; attempt < 2; attempt++) {
      await ensureUploaded();
      const r = await fetch(`/api/images/${state.imageId}/segment`, {
        method: "POST", headers: authHeaders({ "Content-Type": "application/json" }), body: JSON.stringify(body),
      });
      if (r.status === 404 && attempt === 0) { state.imageId = null; continue; }
      if (!r.ok) throw await errorOf(r);
      return r;
    }
    throw new ApiError(404, "the server lost the image twice; reload the page");
  }

  function pngToBitmap(base64) {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    return createImageBitmap(new Blob([bytes], { type: "image/png" }));
  }

  // Ask for the soft masks of the current boxes; answers to older requests are dropped.
  async function segment() {
    const generation = ++state.generation;
    if (!state.file) return;
    if (state.boxes.length === 0) {
      state.masks = []; screenMask = null; render(); updateButtons();
      setStatus("Drag on the image to draw a box.");
      return;
    }
    clearError();
    state.pending++;
    setStatus(`Segmenting ${state.boxes.length} box${state.boxes.length > 1 ? "es" : ""}…`, true);
    try {
      const r = await segmentRequest(requestBody({ format: "json" }));
      const body = await r.json();
      const bitmaps = await Promise.all(body.masks.map((m) => pngToBitmap(m.mask)));
      if (generation !== state.generation) return;
      state.masks = body.masks.map((m, i) => ({ box: m.box, score: m.score, bitmap: bitmaps[i] }));
      screenMask = null;
      render();
      const t = body.timings_ms || {};
      setStatus(`${body.masks.length} mask${body.masks.length > 1 ? "s" : ""} in ${Math.round(t.total || 0)} ms ` +
        `(queue ${Math.round(t.queue || 0)}, segment ${Math.round(t.segment || 0)} ms)`);
      canvas.dataset.masks = String(state.masks.length); // for scripts and tests: masks on screen
    } catch (e) {
      if (generation === state.generation) showError(e.message);
    } finally {
      state.pending--;
      if (state.pending === 0 && $("error").hidden && $("status").textContent.startsWith("Segmenting")) setStatus("");
      updateButtons();
    }
  }
  // The JSON body of a segment request: the boxes, each box's clicks (only when some box has any), options.
  function requestBody(options) {
    const body = { boxes: state.boxes.map(boxArray), region: state.region || undefined, ...options };
    if (state.points.some((pts) => pts.length)) {
      body.points = state.points.map((pts) => pts.map((q) => [q.x, q.y]));
      body.point_labels = state.points.map((pts) => pts.map((q) => q.label));
    }
    return body;
  }
  let segmentTimer = null;
  function segmentSoon() {
    clearTimeout(segmentTimer);
    segmentTimer = setTimeout(segment, 60);
  }

  async function download(kind) {
    if (!state.file || state.boxes.length === 0) return;
    clearError();
    setStatus(`Preparing the ${kind} PNG…`, true);
    try {
      const r = await segmentRequest(requestBody({
        format: kind === "mask" ? "png" : "cutout", threshold: state.binarize ? state.threshold : null,
      }));
      const blob = await r.blob();
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = `${state.stem}_${kind}.png`;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
      setStatus(`Downloaded ${a.download}.`);
    } catch (e) {
      showError(e.message);
    }
  }

  // ----------------------------------------------------------------------------------------- image
  async function openFile(file) {
    if (!file) return;
    clearError();
    if (file.type && !file.type.startsWith("image/")) {
      showError(`${file.name} is not an image (${file.type})`);
      return;
    }
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch (_) {
      bitmap = null; // a format the browser cannot show (TIFF): the server may still read it
    }
    Object.assign(state, {
      file, stem: file.name.replace(/\.[^.]+$/, "") || "image", imageId: null, bitmap,
      width: bitmap ? bitmap.width : 0, height: bitmap ? bitmap.height : 0, boxes: [], points: [], selected: -1,
      masks: [],
    });
    screenMask = null;
    $("drop-hint").hidden = true;
    renderBoxList(); updateButtons(); render();
    try {
      setStatus(`Uploading ${file.name}…`, true);
      await ensureUploaded();
      setStatus(`${file.name}: ${state.width}×${state.height}. Drag on the image to draw a box.`);
      render();
    } catch (e) {
      showError(e.message);
    }
  }

  // --------------------------------------------------------------------------------- geometry
  function layout() {
    const rect = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const cw = Math.max(1, Math.round(rect.width * dpr)), ch = Math.max(1, Math.round(rect.height * dpr));
    if (canvas.width !== cw || canvas.height !== ch) { canvas.width = cw; canvas.height = ch; screenMask = null; }
    if (!state.width) return null;
    const pad = 12 * dpr;
    const scale = Math.min((cw - 2 * pad) / state.width, (ch - 2 * pad) / state.height);
    const w = Math.max(1, Math.round(state.width * scale)), h = Math.max(1, Math.round(state.height * scale));
    return { dpr, scale, w, h, x: Math.round((cw - w) / 2), y: Math.round((ch - h) / 2) };
  }
  // Pointer event -> pixels of the full-size image (may fall outside it).
  function toImage(ev) {
    const L = layout();
    const rect = canvas.getBoundingClientRect();
    const px = (ev.clientX - rect.left) * L.dpr, py = (ev.clientY - rect.top) * L.dpr;
    return { x: (px - L.x) / L.scale, y: (py - L.y) / L.scale, L };
  }
  const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);
  function normalise(b) {
    const x0 = clamp(Math.round(Math.min(b.x0, b.x1)), 0, state.width);
    const x1 = clamp(Math.round(Math.max(b.x0, b.x1)), 0, state.width);
    const y0 = clamp(Math.round(Math.min(b.y0, b.y1)), 0, state.height);
    const y1 = clamp(Math.round(Math.max(b.y0, b.y1)), 0, state.height);
    return { x0, y0, x1, y1 };
  }
  const boxArray = (b) => [b.x0, b.y0, b.x1, b.y1];

  // Which part of which box is under the pointer: {index, part} with part "move" or edge letters ("nw", "e"…).
  function hitTest(p) {
    const tol = HANDLE_PX * p.L.dpr / p.L.scale;
    const order = state.selected >= 0 ? [state.selected, ...state.boxes.keys()] : [...state.boxes.keys()].reverse();
    for (const i of order) {
      const b = state.boxes[i];
      const inX = p.x > b.x0 - tol && p.x < b.x1 + tol, inY = p.y > b.y0 - tol && p.y < b.y1 + tol;
      if (!inX || !inY) continue;
      let part = "";
      if (Math.abs(p.y - b.y0) < tol) part += "n"; else if (Math.abs(p.y - b.y1) < tol) part += "s";
      if (Math.abs(p.x - b.x0) < tol) part += "w"; else if (Math.abs(p.x - b.x1) < tol) part += "e";
      if (part) return { index: i, part };
      if (p.x > b.x0 && p.x < b.x1 && p.y > b.y0 && p.y < b.y1) return { index: i, part: "move" };
    }
    return null;
  }
  // The click under the pointer: {box, index} (the last drawn first), or null.
  function pointHit(p) {
    const tol = (POINT_PX + 3) * p.L.dpr / p.L.scale;
    for (let i = state.points.length - 1; i >= 0; i--) {
      for (let j = state.points[i].length - 1; j >= 0; j--) {
        const q = state.points[i][j];
        if (Math.hypot(q.x - p.x, q.y - p.y) <= tol) return { box: i, index: j };
      }
    }
    return null;
  }
  const CURSORS = { n: "ns-resize", s: "ns-resize", e: "ew-resize", w: "ew-resize", ne: "nesw-resize",
    sw: "nesw-resize", nw: "nwse-resize", se: "nwse-resize", move: "move" };

  // --------------------------------------------------------------------------------- pointer input
  canvas.addEventListener("pointerdown", (ev) => {
    if (!state.width || ev.button > 0) return;
    canvas.focus();
    const p = toImage(ev);
    const hit = hitTest(p), onPoint = pointHit(p);
    // A click that does not move is a click prompt: Shift, Alt or the toggle make it a background click.
    const negative = ev.shiftKey || ev.altKey || state.negative, before = state.selected;
    canvas.setPointerCapture(ev.pointerId);
    if (onPoint) {
      drag = { mode: "point", start: p, point: onPoint, moved: false };
    } else if (hit) {
      state.selected = hit.index;
      drag = { mode: hit.part === "move" ? "move" : "resize", part: hit.part, start: p,
        orig: { ...state.boxes[hit.index] }, moved: false, negative };
    } else if (p.x >= 0 && p.y >= 0 && p.x <= state.width && p.y <= state.height) {
      drag = { mode: "draw", start: p, box: { x0: p.x, y0: p.y, x1: p.x, y1: p.y }, moved: false, negative, before };
      state.selected = -1;
    }
    renderBoxList(); render();
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!state.width) return;
    const p = toImage(ev);
    if (!drag) {
      const hit = hitTest(p);
      const plain = state.negative || ev.shiftKey || ev.altKey ? "cell" : "crosshair"; // cell: a background click
      canvas.style.cursor = pointHit(p) ? "pointer" : hit && hit.part !== "move" ? CURSORS[hit.part] : plain;
      return;
    }
    if (drag.mode === "point") return; // a click is removed by a click; dragging it does nothing
    const dx = p.x - drag.start.x, dy = p.y - drag.start.y;
    if (Math.hypot(dx, dy) * p.L.scale / p.L.dpr >= MIN_BOX_PX) drag.moved = true;
    if (drag.mode === "draw") {
      drag.box.x1 = clamp(p.x, 0, state.width); drag.box.y1 = clamp(p.y, 0, state.height);
    } else if (drag.mode === "move") {
      const o = drag.orig, w = o.x1 - o.x0, h = o.y1 - o.y0;
      const x0 = clamp(o.x0 + dx, 0, state.width - w), y0 = clamp(o.y0 + dy, 0, state.height - h);
      state.boxes[state.selected] = { x0, y0, x1: x0 + w, y1: y0 + h };
    } else {
      const b = { ...drag.orig };
      if (drag.part.includes("n")) b.y0 = clamp(drag.orig.y0 + dy, 0, state.height);
      if (drag.part.includes("s")) b.y1 = clamp(drag.orig.y1 + dy, 0, state.height);
      if (drag.part.includes("w")) b.x0 = clamp(drag.orig.x0 + dx, 0, state.width);
      if (drag.part.includes("e")) b.x1 = clamp(drag.orig.x1 + dx, 0, state.width);
      state.boxes[state.selected] = b;
    }
    render();
  });
  function endDrag(cancelled = false) {
    if (!drag) return;
    const d = drag;
    drag = null;
    if (!d.moved) {
      if (!cancelled) click(d);
    } else if (d.mode === "draw") {
      const b = normalise(d.box);
      if (b.x1 > b.x0 && b.y1 > b.y0) {
        state.boxes.push(b);
        state.points.push([]);
        state.selected = state.boxes.length - 1;
        segmentSoon();
      }
    } else if (d.mode !== "point") {
      const b = normalise(state.boxes[state.selected]);
      if (b.x1 > b.x0 && b.y1 > b.y0) state.boxes[state.selected] = b; else state.boxes[state.selected] = d.orig;
      segmentSoon();
    }
    renderBoxList(); updateButtons(); render();
  }
  // A click that did not move removes the click under it, or adds one to the box it is in (else to the box
  // selected before, else to the only box): a click outside every box still belongs to a box, as in SAM, where
  // the box and its clicks are one prompt. On a box's edge or corner it only selects the box.
  function click(d) {
    if (d.mode === "point") { removePoint(d.point.box, d.point.index); return; }
    if (d.mode === "resize") return;
    let target = d.mode === "draw" ? d.before : state.selected;
    if (target < 0 && state.boxes.length === 1) target = 0;
    if (target < 0) {
      setStatus(state.boxes.length ? "Select a box (click inside it), then click to refine its mask."
        : "Draw a box first: clicks refine a box's mask.");
      return;
    }
    const x = clamp(Math.round(d.start.x), 0, state.width), y = clamp(Math.round(d.start.y), 0, state.height);
    state.points[target].push({ x, y, label: d.negative ? 0 : 1 });
    state.selected = target;
    segmentSoon();
  }
  function removePoint(box, index) {
    if (!state.points[box] || !state.points[box][index]) return;
    state.points[box].splice(index, 1);
    renderBoxList(); updateButtons(); render(); segmentSoon();
  }
  canvas.addEventListener("pointerup", () => endDrag());
  canvas.addEventListener("pointercancel", () => endDrag(true));

  // ------------------------------------------------------------------------------------- rendering
  let checker = null;
  function checkerboard() {
    if (checker) return checker;
    const c = document.createElement("canvas");
    c.width = c.height = 16;
    const g = c.getContext("2d");
    g.fillStyle = "#ffffff"; g.fillRect(0, 0, 16, 16);
    g.fillStyle = "#cfd3da"; g.fillRect(0, 0, 8, 8); g.fillRect(8, 8, 8, 8);
    checker = ctx.createPattern(c, "repeat");
    return checker;
  }
  // The union of the soft masks at screen size (values 0..255), drawn by the browser's image scaling.
  function buildScreenMask(L) {
    const c = new OffscreenCanvas(L.w, L.h);
    const g = c.getContext("2d", { willReadFrequently: true });
    const union = new Uint8ClampedArray(L.w * L.h);
    for (const m of state.masks) {
      g.clearRect(0, 0, L.w, L.h);
      g.drawImage(m.bitmap, 0, 0, L.w, L.h);
      const px = g.getImageData(0, 0, L.w, L.h).data;
      for (let i = 0, j = 0; i < union.length; i++, j += 4) if (px[j] > union[i]) union[i] = px[j];
    }
    return { w: L.w, h: L.h, data: union };
  }
  function maskValue(v) {
    if (!state.binarize) return v;
    return v > state.threshold * 255 ? 255 : 0; // a preview: the downloaded PNG is the server's exact mask
  }
  let imageLayer = null; // the photo at screen size, for the cutout view
  function render() {
    const L = layout();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!L) return;
    if (state.masks.length && (!screenMask || screenMask.w !== L.w || screenMask.h !== L.h)) {
      screenMask = buildScreenMask(L);
    }
    const haveMask = state.masks.length > 0 && screenMask;
    if (state.view === "cutout" || state.view === "mask") {
      ctx.fillStyle = state.view === "cutout" ? checkerboard() : "#000";
      ctx.fillRect(L.x, L.y, L.w, L.h);
    }
    if (state.view === "overlay" || (state.view === "cutout" && !haveMask)) {
      if (state.bitmap) ctx.drawImage(state.bitmap, L.x, L.y, L.w, L.h);
      else { ctx.fillStyle = "#888"; ctx.fillRect(L.x, L.y, L.w, L.h); }
    }
    if (haveMask) {
      const out = new ImageData(L.w, L.h);
      const d = out.data, m = screenMask.data;
      if (state.view === "overlay") {
        for (let i = 0, j = 0; i < m.length; i++, j += 4) {
          d[j] = 31; d[j + 1] = 111; d[j + 2] = 235; d[j + 3] = maskValue(m[i]) * 0.55;
        }
      } else if (state.view === "mask") {
        for (let i = 0, j = 0; i < m.length; i++, j += 4) {
          const v = maskValue(m[i]); d[j] = d[j + 1] = d[j + 2] = v; d[j + 3] = 255;
        }
      } else {
        if (!imageLayer || imageLayer.w !== L.w || imageLayer.h !== L.h || imageLayer.bitmap !== state.bitmap) {
          const c = new OffscreenCanvas(L.w, L.h);
          const g = c.getContext("2d", { willReadFrequently: true });
          if (state.bitmap) g.drawImage(state.bitmap, 0, 0, L.w, L.h);
          imageLayer = { w: L.w, h: L.h, bitmap: state.bitmap, data: g.getImageData(0, 0, L.w, L.h).data };
        }
        d.set(imageLayer.data);
        for (let i = 0, j = 3; i < m.length; i++, j += 4) d[j] = maskValue(m[i]);
      }
      const layer = new OffscreenCanvas(L.w, L.h);
      layer.getContext("2d").putImageData(out, 0, 0);
      ctx.drawImage(layer, L.x, L.y);
    }
    drawBoxes(L);
    drawPoints(L);
  }
  function drawBoxes(L) {
    const all = state.boxes.map((b, i) => ({ b, i }));
    if (drag && drag.mode === "draw") all.push({ b: drag.box, i: -2 });
    for (const { b, i } of all) {
      const x0 = L.x + Math.min(b.x0, b.x1) * L.scale, y0 = L.y + Math.min(b.y0, b.y1) * L.scale;
      const w = Math.abs(b.x1 - b.x0) * L.scale, h = Math.abs(b.y1 - b.y0) * L.scale;
      const selected = i === state.selected || i === -2;
      ctx.lineWidth = 2 * L.dpr;
      ctx.setLineDash(selected ? [] : [6 * L.dpr, 4 * L.dpr]);
      ctx.strokeStyle = "rgba(0,0,0,.6)"; ctx.strokeRect(x0 + L.dpr, y0 + L.dpr, w, h);
      ctx.strokeStyle = selected ? "#ffb400" : "#ffffff"; ctx.strokeRect(x0, y0, w, h);
      if (selected && i >= 0) {
        const s = 6 * L.dpr;
        ctx.fillStyle = "#ffb400";
        for (const [hx, hy] of [[x0, y0], [x0 + w, y0], [x0, y0 + h], [x0 + w, y0 + h]]) {
          ctx.fillRect(hx - s / 2, hy - s / 2, s, s);
        }
      }
    }
    ctx.setLineDash([]);
  }

  // Clicks: green foreground, red background, ringed in white so they show on any photo.
  function drawPoints(L) {
    const r = POINT_PX * L.dpr;
    for (const pts of state.points) {
      for (const q of pts) {
        const x = L.x + q.x * L.scale, y = L.y + q.y * L.scale;
        ctx.beginPath();
        ctx.arc(x, y, r, 0, 2 * Math.PI);
        ctx.fillStyle = q.label ? "#1faa3b" : "#e0262b";
        ctx.fill();
        ctx.lineWidth = 2 * L.dpr;
        ctx.strokeStyle = "#ffffff";
        ctx.stroke();
      }
    }
    canvas.dataset.points = String(state.points.reduce((n, pts) => n + pts.length, 0)); // for scripts and tests
  }

  function renderBoxList() {
    const list = $("boxes");
    list.replaceChildren(...state.boxes.map((b, i) => {
      const li = document.createElement("li");
      li.textContent = `${b.x0},${b.y0},${b.x1},${b.y1}`;
      li.dataset.box = boxArray(normalise(b)).join(",");
      if (i === state.selected) li.className = "selected";
      li.addEventListener("click", () => { state.selected = i; renderBoxList(); render(); });
      const del = document.createElement("button");
      del.type = "button"; del.textContent = "×"; del.title = "remove this box"; del.setAttribute("aria-label", "remove");
      del.addEventListener("click", (ev) => { ev.stopPropagation(); removeBox(i); });
      li.appendChild(del);
      return li;
    }));
    renderPointList();
  }
  function renderPointList() {
    const items = [];
    state.points.forEach((pts, i) => pts.forEach((q, j) => {
      const li = document.createElement("li");
      li.className = q.label ? "positive" : "negative";
      li.textContent = `${q.label ? "+" : "−"} ${q.x},${q.y}${state.boxes.length > 1 ? ` (box ${i + 1})` : ""}`;
      li.dataset.point = `${q.x},${q.y},${q.label}`;
      const del = document.createElement("button");
      del.type = "button"; del.textContent = "×"; del.title = "remove this click"; del.setAttribute("aria-label", "remove");
      del.addEventListener("click", () => removePoint(i, j));
      li.appendChild(del);
      items.push(li);
    }));
    $("points").replaceChildren(...items);
  }
  function removeBox(i) {
    if (i < 0 || i >= state.boxes.length) return;
    state.boxes.splice(i, 1);
    state.points.splice(i, 1);
    state.selected = Math.min(state.selected, state.boxes.length - 1);
    renderBoxList(); updateButtons(); render(); segmentSoon();
  }
  function updateButtons() {
    const ready = !!state.file && state.boxes.length > 0;
    $("download-mask").disabled = !ready || state.masks.length === 0;
    $("download-cutout").disabled = !ready || state.masks.length === 0;
    $("clear").disabled = state.boxes.length === 0;
    $("clear-points").disabled = !state.points.some((pts) => pts.length);
  }

  // ------------------------------------------------------------------------------------- controls
  function setThreshold(value, binarize = true) {
    state.threshold = clamp(Math.round(value * 100) / 100, 0, 1);
    state.binarize = binarize;
    $("threshold").value = String(Math.round(state.threshold * 100));
    $("binarize").checked = binarize;
    $("threshold-value").textContent = binarize ? state.threshold.toFixed(2) : "soft";
    render();
  }
  $("threshold").addEventListener("input", () => setThreshold(Number($("threshold").value) / 100, true));
  $("binarize").addEventListener("change", () => setThreshold(state.threshold, $("binarize").checked));
  for (const r of document.querySelectorAll("input[name=view]")) {
    r.addEventListener("change", () => { state.view = r.value; render(); });
  }
  function setView(view) {
    state.view = view;
    document.querySelector(`input[name=view][value=${view}]`).checked = true;
    render();
  }
  $("region").addEventListener("change", () => { state.region = $("region").value; segmentSoon(); });
  $("open").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", () => openFile($("file").files[0]));
  $("download-mask").addEventListener("click", () => download("mask"));
  $("download-cutout").addEventListener("click", () => download("cutout"));
  $("clear").addEventListener("click", () => {
    state.boxes = []; state.points = []; state.selected = -1; renderBoxList(); updateButtons(); segmentSoon();
  });
  $("clear-points").addEventListener("click", () => {
    state.points = state.points.map(() => []); renderBoxList(); updateButtons(); render(); segmentSoon();
  });
  function setNegative(on) {
    state.negative = on;
    $("negative").checked = on;
  }
  $("negative").addEventListener("change", () => setNegative($("negative").checked));
  $("help-button").addEventListener("click", () => $("help").showModal());
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("token").value.trim() || null;
    if (state.token) sessionStorage.setItem("is5net-token", state.token);
    $("token-form").hidden = true;
    clearError(); loadHealth();
    if (state.file) { state.imageId = null; segmentSoon(); }
  });

  // Drag and drop, anywhere on the page.
  const stage = $("stage");
  document.addEventListener("dragover", (ev) => { ev.preventDefault(); stage.classList.add("dragging"); });
  document.addEventListener("dragleave", (ev) => { if (!ev.relatedTarget) stage.classList.remove("dragging"); });
  document.addEventListener("drop", (ev) => {
    ev.preventDefault();
    stage.classList.remove("dragging");
    const file = ev.dataTransfer && ev.dataTransfer.files[0];
    if (file) openFile(file);
  });

  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement && ev.target.type !== "range" && ev.target.type !== "radio"
        && ev.target.type !== "checkbox") return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const sel = state.selected >= 0 ? state.boxes[state.selected] : null;
    const key = ev.key;
    let handled = true;
    if (key === "o" || key === "O") $("file").click();
    else if (key === "1") setView("overlay");
    else if (key === "2") setView("mask");
    else if (key === "3") setView("cutout");
    else if (key === "t" || key === "T") setThreshold(state.threshold, !state.binarize);
    else if (key === "[" || key === "]") setThreshold(state.threshold + (key === "]" ? 0.05 : -0.05), true);
    else if (key === "d") download("mask");
    else if (key === "D") download("cutout");
    else if (key === "?") $("help").showModal();
    else if (key === "n" || key === "N") setNegative(!state.negative);
    else if (key === "Escape") { state.selected = -1; renderBoxList(); render(); }
    else if ((key === "Delete" || key === "Backspace") && sel) removeBox(state.selected);
    else if (key === "Tab" && state.boxes.length && ev.target === canvas) {
      state.selected = (state.selected + (ev.shiftKey ? state.boxes.length - 1 : 1)) % state.boxes.length;
      renderBoxList(); render();
    } else if (key.startsWith("Arrow") && sel && ev.target !== $("threshold")) {
      const step = ev.shiftKey ? 10 : 1;
      const dx = key === "ArrowLeft" ? -step : key === "ArrowRight" ? step : 0;
      const dy = key === "ArrowUp" ? -step : key === "ArrowDown" ? step : 0;
      const w = sel.x1 - sel.x0, h = sel.y1 - sel.y0;
      const x0 = clamp(sel.x0 + dx, 0, state.width - w), y0 = clamp(sel.y0 + dy, 0, state.height - h);
      state.boxes[state.selected] = { x0, y0, x1: x0 + w, y1: y0 + h };
      renderBoxList(); render(); segmentSoon();
    } else handled = false;
    if (handled && !(ev.target === $("threshold") && key.startsWith("Arrow"))) ev.preventDefault();
  });

  new ResizeObserver(() => render()).observe(stage);
  loadHealth();
  render();
})();
