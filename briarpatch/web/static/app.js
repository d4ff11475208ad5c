"use strict";
// The page: choose or drop photos, paste the patch (core.js) in chunks so large photos do not
// freeze the page, preview, download one by one or all at once. No request leaves the page: its
// Content-Security-Policy forbids any connection, and photos are read from and written to memory.
(function (BP) {
  const $ = (id) => document.getElementById(id);
  const state = { patch: null, results: [], done: 0, total: 0 };
  const patching = () => state.done < state.total;
  window.BP_STATE = state; // read by the tests

  const nextTick = () => new Promise((resolve) => { const ch = new MessageChannel(); ch.port1.onmessage = resolve; ch.port2.postMessage(0); });

  // --------------------------------------------------------------------- the patch
  function describe(patch) {
    const m = patch.metadata || {}, pl = patch.placement;
    const shape = m.shape || (pl.stretch ? "frame" : "patch");
    const where = pl.stretch ? "stretched to each photo, as on the images it was trained on"
      : `${Math.round(pl.size * 100)} % of the shorter side, at the ${pl.anchor.replace("_", " ")}`;
    const data = m.data ? (m.data.member ? `synthetic benchmark (${m.data.member})` : m.data.dataset) : "unknown data";
    // A model that looks at photos at another size is another model to the patch (docs/robustness.md).
    const side = m.encoder_input_size || m.image_size;
    const made = side ? ` It is made for a model that looks at photos at ${side} × ${side} pixels; one that looks ` +
      `at another size may not be fooled.` : "";
    return `${shape}, ${where}; trained for the ${m.encoder || "?"} encoder on ${data} to hide ` +
      `“${m.sensitive || "?"}”.${made}`;
  }

  // What its evaluation report measured (briarpatch info's figures), both probes: the threat model.
  function measuredText(patch) {
    const m = patch.measured, groups = (patch.metadata || {}).groups;
    if (!m) return "";
    const pct = (v) => `${(100 * v).toFixed(1)} %`;
    const k = groups && groups.length ? groups.length : 2;
    // With two groups a probe below chance reads them swapped: it tells them apart as well as its mirror.
    const apart = (v) => (k === 2 ? Math.max(v, 1 - v) : v);
    return `Measured on the photos it was tested on: a model trained on ordinary photos tells the groups apart ` +
      `${pct(apart(m.probe))} of the time on patched ones (${pct(1 / k)} is guessing); a model retrained on ` +
      `patched photos, ${pct(apart(m.adaptive))}. A downstream model's accuracy: ${pct(m.clean_accuracy)} → ` +
      `${pct(m.accuracy)}.`;
  }

  function showPatch(patch) {
    state.patch = patch;
    $("patch-info").textContent = describe(patch);
    $("measured").textContent = measuredText(patch);
    $("measured").hidden = !patch.measured;
    const notice = [BP.syntheticNotice(patch), BP.fewStepsNotice(patch)].filter(Boolean).join(" ");
    $("notice").textContent = notice;
    $("notice").hidden = !notice;
    const c = $("patch-preview"), W = patch.width, H = patch.height, plane = W * H;
    c.width = W; c.height = H;
    const ctx = c.getContext("2d"), im = ctx.createImageData(W, H);
    for (let k = 0; k < plane; k++) {
      for (let ch = 0; ch < 3; ch++) im.data[4 * k + ch] = Math.round(patch.pixels[ch * plane + k] * 255);
      im.data[4 * k + 3] = Math.round(patch.mask[k] * 255);
    }
    ctx.putImageData(im, 0, 0);
    const [mw, mh] = BP.minImageSize(patch);
    $("min-size").textContent = `Photos smaller than ${mw}×${mh} px are refused: the patch would be under one pixel wide there.`;
  }

  // Whether the file is now the page's patch (else the reason is shown, and the patch kept).
  async function loadPatchFile(file) {
    // One patch per batch: a patch changed halfway would give the zip photos of two patches.
    if (patching()) {
      $("patch-error").textContent = `${file.name}: wait until the photos being patched are done, then load it.`;
      return false;
    }
    try {
      if (file.size > BP.MAX_PATCH_BYTES) throw new Error(`${file.size} bytes is too large for a patch file`);
      const buf = await file.arrayBuffer();
      if (BP.sniff(new Uint8Array(buf))) {
        $("patch-error").textContent = `${file.name} is a photo, not a patch: add photos with Choose photos, or ` +
          "drop them below. A patch is the patch.safetensors that briarpatch train writes.";
        return false;
      }
      const patch = file.name.toLowerCase().endsWith(".json")
        ? BP.patchFromJSON(JSON.parse(new TextDecoder().decode(buf))) : BP.patchFromSafetensors(buf);
      showPatch(patch);
      $("patch-error").textContent = "";
      if (state.total) { // the list's photos have the other patch: they leave with it
        clearList();
        $("status").textContent = "Another patch: the list of photos patched with the last one was cleared.";
      }
      return true;
    } catch (e) {
      $("patch-error").textContent = `${file.name}: not a usable patch (${e.message}). Use the patch.safetensors ` +
        "that briarpatch train writes, or the patch.json of an exported page.";
      return false;
    }
  }
  // Dropped among photos, only these are patches: a photo's .json sidecar (Google Takeout) is not.
  const PATCH_FILE = /(\.safetensors|^patch\.json)$/i;

  // --------------------------------------------------------------------- decoding
  async function decode(file) {
    const bytes = new Uint8Array(await file.arrayBuffer());
    const kind = BP.sniff(bytes);
    if (!kind) {
      const brand = String.fromCharCode(...bytes.subarray(4, 12));
      if (/^ftyp(heic|heix|hevc|hevx|mif1|msf1)$/.test(brand)) {
        throw new Error("an HEIC/HEIF photo (what iPhones save by default): convert it to JPEG first " +
          "(or set the camera to Settings > Camera > Formats > Most Compatible), or patch it with " +
          "briarpatch apply, which reads HEIC");
      }
      throw new Error("not a JPEG, PNG, WebP or AVIF image");
    }
    let head;
    try { head = BP.headerSize(bytes, kind); } catch (e) { throw new Error(`the ${kind.toUpperCase()} file is damaged or truncated`); }
    const frames = BP.frameCount(bytes, kind);
    if (frames > 1) throw new Error(`${frames} frames (an animation): only still images are patched; save the frame you want as an image of its own`);
    if (head.width * head.height > BP.MAX_PIXELS) {
      throw new Error(`${head.width}×${head.height} is more than ${BP.MAX_PIXELS / 1e6} megapixels; refused before decoding`);
    }
    if (kind === "avif" && BP.avifHasAlpha(bytes)) {
      // Browsers and briarpatch apply (Pillow) read an AVIF's alpha plane differently (by up to 20
      // levels): refused rather than patched unlike apply would.
      throw new Error("an AVIF with transparency, which this page cannot read as briarpatch apply does: convert " +
        "it to PNG first, or use briarpatch apply");
    }
    const damaged = () => new Error(`the ${kind.toUpperCase()} file is damaged, truncated or of a kind this page cannot read`);
    if (kind === "png") {
      try { return { img: await BP.decodePNG(bytes), kind }; } catch (e) { throw damaged(); }
    }
    // JPEG, WebP and AVIF: the browser's decoder, upright as EXIF (AVIF: irot/imir) says, no colour conversion.
    let bitmap;
    try {
      bitmap = await createImageBitmap(new Blob([bytes]), { imageOrientation: "from-image", premultiplyAlpha: "none", colorSpaceConversion: "none" });
    } catch (e) { throw damaged(); }
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
    bitmap.close();
    const gray = kind === "jpeg" && head.components === 1;
    const alpha = kind === "webp" && hasWebPAlpha(bytes);
    if (gray) { // keep a grayscale photo grayscale, as apply does
      const data = new Uint8Array(rgba.length / 4);
      for (let i = 0; i < data.length; i++) data[i] = rgba[4 * i];
      return { img: { width: canvas.width, height: canvas.height, channels: 1, colours: 1, alpha: false, max: 255, mode: "L", data }, kind };
    }
    const lossless = kind === "webp" && BP.webpLossless(bytes);
    const img = { width: canvas.width, height: canvas.height, channels: 4, colours: 3, alpha, max: 255,
      mode: alpha ? "RGBA" : "RGB", data: rgba };
    return { img, kind, lossless };
  }

  function hasWebPAlpha(bytes) {
    const chunk = String.fromCharCode(...bytes.subarray(12, 16));
    if (chunk === "VP8X") return (bytes[20] & 0x10) !== 0;
    if (chunk === "VP8L") return ((bytes[24] >> 4) & 1) === 1;
    return false;
  }

  // --------------------------------------------------------------------- encoding
  function toRGBA(img, flatten) {
    const n = img.width * img.height, out = new Uint8ClampedArray(4 * n), d = img.data, C = img.channels;
    for (let i = 0; i < n; i++) {
      const at = i * C;
      const v = (c) => (img.max === 65535 ? d[at + c] >> 8 : d[at + c]);
      const r = v(0), g = img.colours === 3 ? v(1) : r, b = img.colours === 3 ? v(2) : r;
      const a = img.alpha ? v(C - 1) : 255;
      if (flatten && a < 255) { // JPEG has no alpha: onto white, as apply does
        out[4 * i] = Math.round((r * a + 255 * (255 - a)) / 255);
        out[4 * i + 1] = Math.round((g * a + 255 * (255 - a)) / 255);
        out[4 * i + 2] = Math.round((b * a + 255 * (255 - a)) / 255);
        out[4 * i + 3] = 255;
      } else { out[4 * i] = r; out[4 * i + 1] = g; out[4 * i + 2] = b; out[4 * i + 3] = flatten ? 255 : a; }
    }
    return out;
  }

  async function encode(img, format, quality) {
    if (format === "png") {
      if (img.channels === 4 && !img.alpha) { // opaque RGB from the browser's decoder: drop the unused alpha
        const n = img.width * img.height, rgb = new Uint8Array(3 * n);
        for (let i = 0; i < n; i++) { rgb[3 * i] = img.data[4 * i]; rgb[3 * i + 1] = img.data[4 * i + 1]; rgb[3 * i + 2] = img.data[4 * i + 2]; }
        return BP.encodePNG({ width: img.width, height: img.height, channels: 3, mode: "RGB", data: rgb });
      }
      return BP.encodePNG(img);
    }
    if (format === "jpeg") { // our encoder, at full colour resolution (the canvas's halves it), as apply writes
      const steps = BP.encodeJPEG({ width: img.width, height: img.height, data: toRGBA(img, true) }, quality, img.colours === 1);
      let step = steps.next();
      for (; !step.done; step = steps.next()) await nextTick();
      return new Blob([step.value], { type: "image/jpeg" });
    }
    // WebP: the browser's encoder (lossy WebP always halves the colour planes).
    const canvas = new OffscreenCanvas(img.width, img.height);
    canvas.getContext("2d").putImageData(new ImageData(toRGBA(img, false), img.width, img.height), 0, 0);
    return canvas.convertToBlob({ type: "image/webp", quality: quality / 100 });
  }

  // --------------------------------------------------------------------- one photo
  const EXT = { png: ".png", jpeg: ".jpg", webp: ".webp" };
  function outName(name, format) {
    const stem = name.replace(/\.[^.]*$/, "");
    return stem + EXT[format];
  }

  async function processFile(file, item) {
    const t0 = performance.now();
    const { img, kind, lossless } = await decode(file);
    const [mw, mh] = BP.minImageSize(state.patch);
    if (img.width < mw || img.height < mh) {
      throw new Error(`${img.width}×${img.height} is too small for this patch: its finest part would be under one ` +
        `pixel wide; the smallest photo it covers is ${mw}×${mh}`);
    }
    const steps = BP.paste(img, state.patch, 128);
    for (let step = steps.next(); !step.done; step = steps.next()) {
      item.querySelector("progress").value = step.value;
      await nextTick(); // let the page breathe between chunks of rows
    }
    const choice = $("format").value;
    // The page writes no AVIF and no lossless WebP (browsers' canvases cannot): such a photo is
    // kept lossless as PNG (apply writes it as lossless WebP: the same pixels).
    const format = choice === "keep" ? (kind === "avif" || lossless ? "png" : kind) : choice;
    const blob = await encode(img, format, Number($("quality").value));
    // In the zip, a folder's photos keep their place in it, as apply mirrors the tree.
    const path = outName(file.webkitRelativePath || file.relativePath || file.name, format);
    return {
      name: outName(file.name, format), path, blob, ms: performance.now() - t0, width: img.width, height: img.height,
    };
  }

  function addItem(file) {
    const li = document.createElement("li");
    li.className = "item";
    li.innerHTML = '<div class="name"></div><progress max="1" value="0"></progress><div class="message"></div>' +
      '<div class="pair"><figure><img alt="before"><figcaption>before</figcaption></figure>' +
      '<figure><img alt="after"><figcaption>after</figcaption></figure></div><a class="download" hidden>Download</a>';
    li.querySelector(".name").textContent = file.name;
    $("results").appendChild(li);
    return li;
  }

  async function handleFiles(files) {
    if (!state.patch) { // the page's own patch could not be read: say so, rather than do nothing
      $("status").textContent = "No patch to paste: load one with “Use another patch…” first.";
      return;
    }
    const list = Array.from(files);
    state.total += list.length;
    updateProgress();
    for (const file of list) {
      const item = addItem(file);
      try {
        const res = await processFile(file, item);
        const url = URL.createObjectURL(res.blob);
        item.querySelector('img[alt="after"]').src = url;
        item.querySelector('img[alt="before"]').src = URL.createObjectURL(file);
        const a = item.querySelector("a.download");
        a.href = url; a.download = res.name; a.hidden = false;
        a.textContent = `Download ${res.name}`;
        item.dataset.status = "ok";
        item.dataset.ms = String(Math.round(res.ms));
        item.querySelector(".message").textContent = `${res.width}×${res.height}, done in ${(res.ms / 1000).toFixed(1)} s`;
        state.results.push(res);
      } catch (e) {
        item.dataset.status = "failed";
        item.classList.add("failed");
        item.querySelector(".pair").hidden = true;
        item.querySelector(".message").textContent = `Could not patch this file: ${e.message}.`;
      }
      item.querySelector("progress").hidden = true;
      state.done += 1;
      updateProgress();
    }
  }

  // A folder's photos, as briarpatch apply takes a folder: its image files by name, hidden files
  // and folders (a Mac's ._IMG_1.jpg, a viewer's .thumbnails) skipped.
  const PHOTO = /\.(jpe?g|jpe|jfif|png|webp|avif|heic|heif)$/i; // HEIC: to be told it must be converted
  const hidden = (path) => path.split("/").some((part) => part.startsWith("."));
  const photosOf = (files) => Array.from(files).filter((f) => PHOTO.test(f.name) && !hidden(f.webkitRelativePath || f.name));

  // What was dropped: the files, or, for folders among them, the photos inside (walked as above).
  async function dropped(entries, files) {
    if (!entries.some((entry) => entry.isDirectory)) return Array.from(files);
    const out = [];
    async function walk(entry) {
      if (entry.name.startsWith(".")) return;
      if (entry.isFile) {
        const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
        file.relativePath = entry.fullPath.replace(/^\//, ""); // album/2024/b.png, as a chosen folder's
        if (PHOTO.test(file.name)) out.push(file);
        return;
      }
      const reader = entry.createReader();
      for (;;) { // readEntries answers in batches until an empty one
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child);
      }
    }
    for (const entry of entries) await walk(entry);
    return out;
  }
  // A patch file dropped with (or without) photos is the patch they get: loaded first; the photos
  // wait if it cannot be used, rather than get the page's other patch.
  async function droppedWithPatch(entries, files) {
    const patches = Array.from(files).filter((f) => PATCH_FILE.test(f.name));
    if (patches.length && !(await loadPatchFile(patches[patches.length - 1]))) return [];
    return dropped(entries.filter((entry) => !PATCH_FILE.test(entry.name)),
      Array.from(files).filter((f) => !PATCH_FILE.test(f.name)));
  }
  BP.droppedPhotos = droppedWithPatch; // read by the tests (nothing can be dropped from a test driver)

  // Start over: the list, its photos and their memory go (what was downloaded stays downloaded).
  function clearList() {
    for (const el of $("results").querySelectorAll("img[src^='blob:'], a[href^='blob:']")) {
      URL.revokeObjectURL(el.src || el.href);
    }
    $("results").replaceChildren();
    Object.assign(state, { results: [], done: 0, total: 0 });
    updateProgress();
  }

  function updateProgress() {
    $("progress").max = Math.max(1, state.total);
    $("progress").value = state.done;
    const ok = state.results.length, failed = state.done - ok;
    $("status").textContent = state.total === 0 ? "No photos yet."
      : state.done < state.total ? `Patching ${state.done + 1} of ${state.total}…`
        : `Done: ${ok} patched${failed ? `, ${failed} could not be read` : ""}.`;
    $("status").dataset.done = String(state.done === state.total && state.total > 0);
    $("download-all").disabled = ok === 0;
    $("clear").disabled = state.total === 0 || patching();
  }

  async function downloadAll() {
    const seen = new Map(), files = [];
    for (const r of state.results) {
      let name = r.path;
      const k = seen.get(name) || 0;
      seen.set(name, k + 1);
      if (k) name = name.replace(/(\.[^.]*)$/, ` (${k + 1})$1`);
      files.push({ name, blob: r.blob });
    }
    // Split into zips a plain zip can hold (4 GB, 65535 files): patched.zip, patched-2.zip, ...
    const groups = [[]];
    let bytes = 0;
    for (const f of files) {
      const cost = BP.zipEntryBytes(f.name, f.blob.size), last = groups[groups.length - 1];
      if (last.length && (bytes + cost > BP.ZIP_MAX_BYTES || last.length >= BP.ZIP_MAX_FILES)) {
        groups.push([]);
        bytes = 0;
      }
      groups[groups.length - 1].push(f);
      bytes += cost;
    }
    for (const [k, group] of groups.entries()) {
      const a = document.createElement("a");
      a.href = URL.createObjectURL(await BP.zip(group));
      a.download = k ? `patched-${k + 1}.zip` : "patched.zip";
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 60000); // the zip's memory, once the download has it
    }
  }

  // --------------------------------------------------------------------- wiring
  function init() {
    try {
      showPatch(BP.patchFromJSON(window.BRIARPATCH_PATCH));
    } catch (e) {
      $("patch-error").textContent = `The page's patch could not be read (${e.message}); load a patch file below.`;
    }
    $("files").addEventListener("change", (e) => { handleFiles(e.target.files); e.target.value = ""; });
    $("patch-file").addEventListener("change", (e) => { if (e.target.files[0]) loadPatchFile(e.target.files[0]); e.target.value = ""; });
    const drop = $("drop");
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    $("folder").addEventListener("change", (e) => { handleFiles(photosOf(e.target.files)); e.target.value = ""; });
    drop.addEventListener("drop", async (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      // The entries are read now: the drop's items are gone once this handler returns.
      const entries = Array.from(e.dataTransfer.items || []).map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
      handleFiles(await droppedWithPatch(entries, e.dataTransfer.files));
    });
    $("quality").addEventListener("input", () => { $("quality-value").textContent = $("quality").value; });
    $("download-all").addEventListener("click", downloadAll);
    $("clear").addEventListener("click", clearList);
    updateProgress();
  }
  document.addEventListener("DOMContentLoaded", init);
})(globalThis.BP);
