"use strict";
// The library's paste, on decoded pixel arrays: briarpatch/placement.py (sample_boxes, paste) and
// briarpatch/apply.py (_split, _join) line for line, so the page writes the pixels `briarpatch
// apply` writes (within one 8-bit level: the library rounds in float32, this in float64).
(function (BP) {
  BP.ANCHORS = {
    top_left: [0, 0], top: [0.5, 0], top_right: [1, 0], left: [0, 0.5], center: [0.5, 0.5],
    right: [1, 0.5], bottom_left: [0, 1], bottom: [0.5, 1], bottom_right: [1, 1],
  };
  BP.MAX_PIXELS = 100000000; // as briarpatch apply --max-pixels
  BP.MAX_PATCH_BYTES = 64 * 1024 * 1024; // as load_patch(): a patch is kB to a few MB, nothing huge is read

  // Python's round() and torch.round(): halves go to the even neighbour.
  BP.roundHalfEven = function (x) {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  };

  // sample_boxes() for a fixed placement: the patch's box on a height x width image.
  BP.box = function (placement, ph, pw, height, width) {
    if (placement.stretch) return { cx: (width - 1) / 2, cy: (height - 1) / 2, w: width, h: height };
    const longer = placement.size * Math.min(height, width);
    const m = Math.max(ph, pw);
    const bh = (longer * ph) / m, bw = (longer * pw) / m;
    const margin = (placement.margin || 0) * Math.min(height, width);
    const w = Math.max(1, BP.roundHalfEven(bw)), h = Math.max(1, BP.roundHalfEven(bh));
    let x0, y0;
    if (placement.x !== null && placement.x !== undefined && placement.unit === "pixel") {
      x0 = placement.x; y0 = placement.y;
    } else {
      const [fx, fy] = placement.x !== null && placement.x !== undefined
        ? [placement.x, placement.y] : BP.ANCHORS[placement.anchor];
      x0 = margin + BP.roundHalfEven(fx * Math.max(0, width - w - 2 * margin));
      y0 = margin + BP.roundHalfEven(fy * Math.max(0, height - h - 2 * margin));
    }
    return { cx: BP.roundHalfEven(x0) + (w - 1) / 2, cy: BP.roundHalfEven(y0) + (h - 1) / 2, w: w, h: h };
  };

  // centre_square_box(): the centre square of a non-square image, on whole pixels; null if square.
  BP.centreSquareBox = function (height, width) {
    if (height === width) return null;
    const side = Math.min(height, width);
    const x0 = Math.floor((width - side) / 2), y0 = Math.floor((height - side) / 2);
    return { cx: x0 + (side - 1) / 2, cy: y0 + (side - 1) / 2, w: side, h: side };
  };

  // The smallest image the patch still covers visibly: its finest part (a frame's band, a grid's
  // line) at least one pixel wide (briarpatch.apply.min_image_size).
  BP.minImageSize = function (patch) {
    const f = patch.finest;
    if (patch.placement.stretch) return [Math.ceil(patch.width / f), Math.ceil(patch.height / f)];
    const side = Math.ceil(Math.max(patch.width, patch.height) / (f * patch.placement.size));
    return [side, side];
  };

  // Source coordinate and bilinear taps along one axis, grid_sample(align_corners=False) style.
  function taps(n, centre, boxSize, patchSize, border) {
    const i0 = new Int32Array(n), frac = new Float64Array(n);
    const scale = patchSize / boxSize;
    for (let i = 0; i < n; i++) {
      let s = (i - centre) * scale + patchSize / 2 - 0.5;
      if (border) s = Math.min(Math.max(s, 0), patchSize - 1);
      const f = Math.floor(s);
      i0[i] = f; frac[i] = s - f;
    }
    return { i0: i0, frac: frac };
  }

  // Paste `patch` onto `img` in place: {width, height, channels, colours, alpha, max, data} with
  // interleaved samples, `channels` per pixel of which the first `colours` (1: gray, 3: RGB) are
  // colour and, when `alpha`, the last is alpha (Uint8ClampedArray / Uint8Array at max 255,
  // Uint16Array at max 65535). A generator: it yields the share of rows done, so a caller can
  // keep the page responsive between chunks.
  BP.paste = function* (img, patch, rowsPerChunk) {
    const W = img.width, H = img.height, colours = img.colours;
    const pw = patch.width, ph = patch.height, plane = pw * ph;
    const mask = patch.mask, pix = patch.pixels;
    // Premultiplied source planes: the patch's colour (luma for gray images) times its mask.
    const src = [];
    if (colours === 1) {
      const luma = new Float64Array(plane);
      for (let k = 0; k < plane; k++) {
        luma[k] = (pix[k] * 0.299 + pix[plane + k] * 0.587 + pix[2 * plane + k] * 0.114) * mask[k];
      }
      src.push(luma);
    } else {
      for (let c = 0; c < 3; c++) {
        const p = new Float64Array(plane);
        for (let k = 0; k < plane; k++) p[k] = pix[c * plane + k] * mask[k];
        src.push(p);
      }
    }
    // paste_array: the placement's box, then (centre_square, a non-square image) the unstretched
    // copy on the centre square over it.
    const passes = [{ box: BP.box(patch.placement, ph, pw, H, W), border: !!patch.placement.stretch }];
    const square = patch.placement.centre_square ? BP.centreSquareBox(H, W) : null;
    if (square) passes.push({ box: square, border: false });
    for (let p = 0; p < passes.length; p++) {
      const steps = pasteBox(img, src, mask, pw, ph, passes[p].box, passes[p].border, rowsPerChunk);
      for (let r = steps.next(); !r.done; r = steps.next()) yield (p + r.value) / passes.length;
    }
    return 1;
  };

  function* pasteBox(img, src, mask, pw, ph, box, border, rowsPerChunk) {
    const W = img.width, H = img.height, C = img.channels, max = img.max;
    const colours = img.colours;
    // Only the region under the patch is touched (paste_array's window: the box, and beyond a box
    // not stretched to the image the half patch pixel over which the resampling fades out).
    const fade = border ? 0 : Math.max(box.w / pw, box.h / ph) / 2;
    const ex = box.w / 2 + fade, ey = box.h / 2 + fade;
    const x0 = Math.max(0, Math.floor(box.cx - ex) - 1), x1 = Math.min(W, Math.ceil(box.cx + ex) + 2);
    const y0 = Math.max(0, Math.floor(box.cy - ey) - 1), y1 = Math.min(H, Math.ceil(box.cy + ey) + 2);
    const tx = taps(W, box.cx, box.w, pw, border), ty = taps(H, box.cy, box.h, ph, border);
    const data = img.data, colour = new Float64Array(colours);
    const chunk = rowsPerChunk || 64;
    // A frame or grid covers a few columns of most rows: visit only the image columns whose taps
    // reach a covered patch column. firstX[c + 1]: the first x whose left tap is at least c (taps
    // never decrease along x).
    const firstX = new Int32Array(pw + 2);
    for (let c = -1, x = 0; c <= pw; c++) {
      while (x < W && tx.i0[x] < c) x++;
      firstX[c + 1] = x;
    }
    const rowRuns = new Map(); // patch row pair r0, r0 + 1 -> merged [start, end) image x runs
    function runsOf(r0) {
      if (rowRuns.has(r0)) return rowRuns.get(r0);
      const cols = [];
      for (const r of [r0, r0 + 1]) {
        if (r < 0 || r >= ph) continue;
        for (let c = 0; c < pw; c++) {
          if (mask[r * pw + c] === 0) continue;
          let e = c;
          while (e < pw && mask[r * pw + e] !== 0) e++;
          cols.push([c - 1, e]); // a left tap at c - 1 reaches column c
          c = e;
        }
      }
      cols.sort((a, b) => a[0] - b[0]);
      const runs = [];
      for (const [s, e] of cols) {
        const xs = Math.max(x0, firstX[s + 1]), xe = Math.min(x1, firstX[e + 1]);
        if (xe <= xs) continue;
        const last = runs[runs.length - 1];
        if (last && xs <= last[1]) last[1] = Math.max(last[1], xe);
        else runs.push([xs, xe]);
      }
      rowRuns.set(r0, runs);
      return runs;
    }
    for (let y = y0; y < y1; y++) {
      const r0 = ty.i0[y], fy = ty.frac[y];
      const okR0 = r0 >= 0 && r0 < ph, okR1 = r0 + 1 >= 0 && r0 + 1 < ph;
      const wR0 = okR0 ? 1 - fy : 0, wR1 = okR1 ? fy : 0;
      if (wR0 === 0 && wR1 === 0) continue;
      const base0 = r0 * pw, base1 = (r0 + 1) * pw;
      for (const [xs, xe] of runsOf(r0)) for (let x = xs; x < xe; x++) {
        const c0 = tx.i0[x], fx = tx.frac[x];
        const okC0 = c0 >= 0 && c0 < pw, okC1 = c0 + 1 >= 0 && c0 + 1 < pw;
        const w00 = okR0 && okC0 ? wR0 * (1 - fx) : 0, w01 = okR0 && okC1 ? wR0 * fx : 0;
        const w10 = okR1 && okC0 ? wR1 * (1 - fx) : 0, w11 = okR1 && okC1 ? wR1 * fx : 0;
        const k00 = base0 + c0, k01 = k00 + 1, k10 = base1 + c0, k11 = k10 + 1;
        const a = (w00 ? w00 * mask[k00] : 0) + (w01 ? w01 * mask[k01] : 0) +
          (w10 ? w10 * mask[k10] : 0) + (w11 ? w11 * mask[k11] : 0);
        if (a === 0) continue; // outside the patch: the image shows through unchanged
        for (let c = 0; c < colours; c++) {
          const s = src[c];
          colour[c] = (w00 ? w00 * s[k00] : 0) + (w01 ? w01 * s[k01] : 0) +
            (w10 ? w10 * s[k10] : 0) + (w11 ? w11 * s[k11] : 0);
        }
        const at = (y * W + x) * C;
        for (let c = 0; c < colours; c++) {
          const v = (data[at + c] / max) * (1 - a) + colour[c];
          data[at + c] = BP.roundHalfEven(Math.min(Math.max(v, 0), 1) * max);
        }
        if (img.alpha) { // the patch stays visible on transparent images: alpha + cover * (1 - alpha)
          const v = data[at + C - 1] / max;
          data[at + C - 1] = BP.roundHalfEven(Math.min(Math.max(v + a * (1 - v), 0), 1) * max);
        }
      }
      if ((y - y0 + 1) % chunk === 0) yield (y - y0 + 1) / (y1 - y0);
    }
  }

  // --------------------------------------------------------------------- patches
  function base64ToBytes(text) {
    const bin = atob(text);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  // The finest part of the mask, in patch pixels: the shortest run of covered pixels along a row
  // or a column (a frame's band, a grid's line, a square's side).
  function finest(mask, w, h) {
    let best = Infinity;
    const scan = (len, at) => {
      let run = 0;
      for (let i = 0; i <= len; i++) {
        if (i < len && at(i) > 0) run++;
        else { if (run) best = Math.min(best, run); run = 0; }
      }
    };
    for (let y = 0; y < h; y++) scan(w, (x) => mask[y * w + x]);
    for (let x = 0; x < w; x++) scan(h, (y) => mask[y * w + x]);
    return best === Infinity ? Math.max(w, h) : best;
  }

  function checkPatch(p) {
    if (!p.placement || typeof p.placement.size !== "number") throw new Error("the patch has no placement");
    if (p.pixels.length !== 3 * p.width * p.height || p.mask.length !== p.width * p.height) {
      throw new Error("the patch's pixels and mask do not match its size");
    }
    for (let i = 0; i < p.pixels.length; i++) {
      if (!(p.pixels[i] >= 0 && p.pixels[i] <= 1)) throw new Error("patch pixels must be in [0, 1]");
    }
    p.finest = finest(p.mask, p.width, p.height);
    return p;
  }

  // A newer file may place its pixels in a way this page does not know: refused, as load_patch() does.
  BP.PATCH_FORMAT = 2; // briarpatch.artifacts.FORMAT_VERSION
  function checkFormat(version) {
    if (!/^[0-9]+$/.test(String(version)) || Number(version) > BP.PATCH_FORMAT) {
      throw new Error("written by a newer briarpatch (patch format " + version + "; this page reads formats up to " +
        BP.PATCH_FORMAT + "): open the page of a newer briarpatch (briarpatch web)");
    }
  }

  // A patch exported by `briarpatch export-web` (patch.json): float32 planes in base64.
  BP.patchFromJSON = function (obj) {
    if (obj.format !== "briarpatch-web") throw new Error("not a briarpatch patch (patch.json from export-web)");
    checkFormat(obj.version === undefined ? 1 : obj.version);
    const f32 = (b64) => { const b = base64ToBytes(b64); return new Float32Array(b.buffer, b.byteOffset, b.length / 4); };
    return checkPatch({
      width: obj.width, height: obj.height, pixels: f32(obj.pixels), mask: f32(obj.mask),
      placement: obj.placement, metadata: obj.metadata || {}, measured: obj.measured || null,
    });
  };

  // A patch.safetensors written by `briarpatch train`: an 8-byte header length, a JSON header,
  // then little-endian float32 tensors. Read without running anything, as load_patch() does.
  BP.patchFromSafetensors = function (buffer) {
    const bytes = new Uint8Array(buffer);
    if (bytes.length < 8) throw new Error("file too short for a safetensors patch");
    const n = Number(new DataView(buffer).getBigUint64(0, true));
    if (n > bytes.length - 8) throw new Error("not a safetensors file");
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    const meta = header.__metadata__ || {};
    if (meta.format !== "briarpatch") throw new Error("a safetensors file, but not a briarpatch patch");
    checkFormat(meta.format_version || "1");
    const tensor = (name) => {
      const t = header[name];
      if (!t || t.dtype !== "F32") throw new Error("the patch has no float32 tensor " + name);
      const [a, b] = t.data_offsets;
      const copy = bytes.slice(8 + n + a, 8 + n + b); // aligned copy
      return { shape: t.shape, data: new Float32Array(copy.buffer) };
    };
    const pixels = tensor("pixels"), mask = tensor("mask");
    const metadata = {};
    for (const [k, v] of Object.entries(meta)) {
      if (k !== "format" && k !== "format_version") { try { metadata[k] = JSON.parse(v); } catch (e) { metadata[k] = v; } }
    }
    const placement = metadata.placement; delete metadata.placement;
    return checkPatch({
      width: pixels.shape[2], height: pixels.shape[1], pixels: pixels.data, mask: mask.data,
      placement: placement, metadata: metadata,
    });
  };

  // The plain-words notice for a patch trained on the synthetic benchmark (as apply prints it).
  BP.syntheticNotice = function (patch) {
    const data = patch.metadata && patch.metadata.data;
    if (data && data.dataset === "synthetic") {
      return "This patch was trained on the synthetic benchmark (sensitive attribute: " +
        (patch.metadata.sensitive || "?") + "). It shows where and how a patch goes; it protects nothing in real photos.";
    }
    return "";
  };

  // The plain-words notice for a patch that took only a few patch steps (as apply prints it;
  // FEW_PATCH_STEPS in artifacts.py).
  BP.FEW_PATCH_STEPS = 64;
  BP.fewStepsNotice = function (patch) {
    const m = patch.metadata || {};
    const steps = m.patch_steps !== undefined ? m.patch_steps : (m.kept || {}).steps;
    if (!Number.isInteger(steps) || steps >= BP.FEW_PATCH_STEPS) return "";
    return "This patch took only " + steps + " patch step" + (steps === 1 ? "" : "s") +
      ", a check of an install: it hides little.";
  };
})((globalThis.BP = globalThis.BP || {}));
