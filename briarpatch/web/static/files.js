"use strict";
// Image files without any library: PNG decoded and encoded here (exact samples, alpha, gray and
// 16-bit, with the browser's own zlib streams), JPEG, WebP and AVIF sizes read from their headers
// before decoding (untrusted images are bounded), and a zip archive for "download all".
(function (BP) {
  const CRC_TABLE = (() => {
    const t = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      t[n] = c >>> 0;
    }
    return t;
  })();
  BP.crc32 = function (bytes, crc) {
    let c = crc === undefined ? 0xffffffff : crc;
    for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
    return c;
  };
  const crcDone = (c) => (c ^ 0xffffffff) >>> 0;

  async function inflate(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  async function deflate(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  // --------------------------------------------------------------------- sniffing
  const PNG_SIG = [137, 80, 78, 71, 13, 10, 26, 10];
  BP.sniff = function (bytes) {
    if (PNG_SIG.every((v, i) => bytes[i] === v)) return "png";
    if (bytes[0] === 0xff && bytes[1] === 0xd8) return "jpeg";
    if (bytes.length > 12 && String.fromCharCode(...bytes.subarray(0, 4)) === "RIFF" &&
      String.fromCharCode(...bytes.subarray(8, 12)) === "WEBP") return "webp";
    if (avifBrands(bytes).length) return "avif";
    return null;
  };

  // Whether a WebP holds a lossless image (a VP8L bitstream), from its chunk headers, as apply
  // reads it (_images.webp_lossless): a screenshot or a graphic saved lossless stays lossless.
  BP.webpLossless = function (bytes) {
    let at = 12;
    for (let k = 0; k < 64 && at + 8 <= bytes.length; k++) {
      const fourcc = String.fromCharCode(...bytes.subarray(at, at + 4));
      const size = (bytes[at + 4] | (bytes[at + 5] << 8) | (bytes[at + 6] << 16) | (bytes[at + 7] << 24)) >>> 0;
      if (fourcc === "VP8L" || fourcc === "VP8 ") return fourcc === "VP8L";
      at += 8 + size + (size & 1);
    }
    return false;
  };

  // The AVIF brands of an ISO media file's ftyp box (major and compatible), or [] for another file
  // (HEIC among them: the page cannot read it).
  function avifBrands(bytes) {
    if (bytes.length < 16 || String.fromCharCode(...bytes.subarray(4, 8)) !== "ftyp") return [];
    const size = Math.min(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0), bytes.length);
    const brands = [String.fromCharCode(...bytes.subarray(8, 12))];
    for (let at = 16; at + 4 <= size; at += 4) brands.push(String.fromCharCode(...bytes.subarray(at, at + 4)));
    return brands[0].startsWith("he") ? [] : brands.filter((b) => b === "avif" || b === "avis");
  }

  // Offsets of the boxes of one type anywhere in the file's first megabyte (an AVIF's meta box,
  // where ispe and the alpha plane's auxC live, comes before its pixels).
  function findBoxes(bytes, type) {
    const found = [], end = Math.min(bytes.length, 1 << 20) - 8;
    const t = [...type].map((c) => c.charCodeAt(0));
    for (let i = 4; i <= end; i++) {
      if (bytes[i] === t[0] && bytes[i + 1] === t[1] && bytes[i + 2] === t[2] && bytes[i + 3] === t[3]) found.push(i - 4);
    }
    return found;
  }
  BP.avifHasAlpha = (bytes) => findBoxes(bytes, "auxC").some((at) =>
    new TextDecoder().decode(bytes.subarray(at + 12, at + 80)).includes("auxiliary:alpha"));

  // Width, height and (JPEG) number of components from the header alone.
  BP.headerSize = function (bytes, kind) {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (kind === "png") {
      if (bytes.length < 24 || String.fromCharCode(...bytes.subarray(12, 16)) !== "IHDR") throw new Error("no PNG header");
      return { width: dv.getUint32(16), height: dv.getUint32(20) };
    }
    if (kind === "jpeg") {
      let i = 2;
      while (i + 9 < bytes.length) {
        if (bytes[i] !== 0xff) { i++; continue; }
        const marker = bytes[i + 1];
        if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0xff) { i += marker === 0xff ? 1 : 2; continue; }
        const len = dv.getUint16(i + 2);
        if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
          return { height: dv.getUint16(i + 5), width: dv.getUint16(i + 7), components: bytes[i + 9] };
        }
        i += 2 + len;
      }
      throw new Error("no JPEG frame header");
    }
    if (kind === "webp") {
      const chunk = String.fromCharCode(...bytes.subarray(12, 16));
      if (chunk === "VP8X") return { width: 1 + (dv.getUint32(24, true) & 0xffffff), height: 1 + (dv.getUint32(27, true) & 0xffffff) };
      if (chunk === "VP8L") { const b = dv.getUint32(21, true); return { width: 1 + (b & 0x3fff), height: 1 + ((b >>> 14) & 0x3fff) }; }
      if (chunk === "VP8 ") return { width: dv.getUint16(26, true) & 0x3fff, height: dv.getUint16(28, true) & 0x3fff };
      throw new Error("unknown WebP chunk " + chunk);
    }
    if (kind === "avif") { // the largest image spatial extent (ispe): the photo's, not a thumbnail's
      let best = null;
      for (const at of findBoxes(bytes, "ispe")) {
        if (at + 20 > bytes.length) continue;
        const width = dv.getUint32(at + 12), height = dv.getUint32(at + 16);
        if (!best || width * height > best.width * best.height) best = { width, height };
      }
      if (!best) throw new Error("no AVIF image size");
      return best;
    }
    throw new Error("not an image");
  };

  // Frames of an animated PNG (acTL) or WebP (ANMF chunks); 1 for a still image. Patching the
  // first frame alone would pass for patching the animation, so the page refuses them (as apply does).
  BP.frameCount = function (bytes, kind) {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (kind === "png") {
      for (let pos = 8; pos + 12 <= bytes.length;) {
        const len = dv.getUint32(pos), type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
        if (type === "acTL") return Math.max(1, dv.getUint32(pos + 8));
        if (type === "IDAT" || type === "IEND") break;
        pos += 12 + len;
      }
      return 1;
    }
    if (kind === "webp" && String.fromCharCode(...bytes.subarray(12, 16)) === "VP8X" && (bytes[20] & 0x02)) {
      let frames = 0;
      for (let pos = 12; pos + 8 <= bytes.length;) {
        const size = dv.getUint32(pos + 4, true);
        if (String.fromCharCode(...bytes.subarray(pos, pos + 4)) === "ANMF") frames++;
        pos += 8 + size + (size & 1); // chunks are padded to an even size
      }
      return Math.max(frames, 2);
    }
    if (kind === "avif" && avifBrands(bytes).includes("avis")) { // an image sequence: its sample count
      const at = findBoxes(bytes, "stsz")[0];
      return Math.max(at !== undefined && at + 20 <= bytes.length ? dv.getUint32(at + 16) : 0, 2);
    }
    return 1;
  };

  // --------------------------------------------------------------------- EXIF orientation
  // Orientation tag of a TIFF-structured EXIF block (PNG eXIf chunk), 1 when absent.
  function exifOrientation(bytes) {
    if (bytes.length < 8) return 1;
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const little = bytes[0] === 0x49;
    const ifd = dv.getUint32(4, little);
    if (ifd + 2 > bytes.length) return 1;
    const n = dv.getUint16(ifd, little);
    for (let k = 0; k < n; k++) {
      const at = ifd + 2 + 12 * k;
      if (at + 12 > bytes.length) break;
      if (dv.getUint16(at, little) === 0x0112) return dv.getUint16(at + 8, little);
    }
    return 1;
  }

  // The image as a viewer shows it (PIL's ImageOps.exif_transpose).
  BP.orient = function (img, orientation) {
    if (!orientation || orientation === 1) return img;
    const { width: W, height: H, channels: C, data } = img;
    const swap = orientation >= 5;
    const w = swap ? H : W, h = swap ? W : H;
    const out = new data.constructor(data.length);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        let sx, sy;
        switch (orientation) {
          case 2: sx = W - 1 - x; sy = y; break;
          case 3: sx = W - 1 - x; sy = H - 1 - y; break;
          case 4: sx = x; sy = H - 1 - y; break;
          case 5: sx = y; sy = x; break;
          case 6: sx = y; sy = H - 1 - x; break;
          case 7: sx = W - 1 - y; sy = H - 1 - x; break;
          default: sx = W - 1 - y; sy = x; break; // 8
        }
        const from = (sy * W + sx) * C, to = (y * w + x) * C;
        for (let c = 0; c < C; c++) out[to + c] = data[from + c];
      }
    }
    return Object.assign({}, img, { width: w, height: h, data: out });
  };

  // --------------------------------------------------------------------- PNG
  function unfilter(raw, width, height, bpp, bytesPerRow, out, outOffset) {
    let prev = new Uint8Array(bytesPerRow), pos = 0;
    for (let y = 0; y < height; y++) {
      const type = raw[pos++];
      const line = raw.subarray(pos, pos + bytesPerRow);
      pos += bytesPerRow;
      const cur = out.subarray(outOffset + y * bytesPerRow, outOffset + (y + 1) * bytesPerRow);
      for (let i = 0; i < bytesPerRow; i++) {
        const a = i >= bpp ? cur[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
        let v = line[i];
        if (type === 1) v += a;
        else if (type === 2) v += b;
        else if (type === 3) v += (a + b) >> 1;
        else if (type === 4) { const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c); v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c; }
        else if (type !== 0) throw new Error("damaged PNG (filter " + type + ")");
        cur[i] = v & 0xff;
      }
      prev = cur;
    }
    return pos;
  }

  // Decode to the mode the library works in (apply._split): L, LA, RGB, RGBA (8-bit samples) or
  // I;16 (16-bit gray); palette images become RGB(A), other 16-bit images keep their high bytes.
  BP.decodePNG = async function (bytes) {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let pos = 8, ihdr = null, palette = null, trns = null, orientation = 1;
    const idat = [];
    while (pos + 8 <= bytes.length) {
      const len = dv.getUint32(pos), type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
      const body = bytes.subarray(pos + 8, pos + 8 + len);
      if (body.length < len) throw new Error("truncated PNG");
      if (type === "IHDR") ihdr = { width: dv.getUint32(pos + 8), height: dv.getUint32(pos + 12), depth: body[8], colorType: body[9], interlace: body[12] };
      else if (type === "PLTE") palette = body;
      else if (type === "tRNS") trns = body;
      else if (type === "eXIf") orientation = exifOrientation(body);
      else if (type === "IDAT") idat.push(body);
      else if (type === "IEND") break;
      pos += 12 + len;
    }
    if (!ihdr || !idat.length) throw new Error("damaged PNG (no image data)");
    const { width, height, depth, colorType } = ihdr;
    const perPixel = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 }[colorType];
    if (!perPixel || ![1, 2, 4, 8, 16].includes(depth)) throw new Error("unsupported PNG format");
    const joined = new Uint8Array(idat.reduce((n, b) => n + b.length, 0));
    let o = 0;
    for (const b of idat) { joined.set(b, o); o += b.length; }
    const raw = await inflate(joined);
    const bitsPerPixel = perPixel * depth, bpp = Math.max(1, bitsPerPixel >> 3);
    // Samples in image order (de-interlaced), one row of packed bytes after another.
    const rowBytes = (w) => Math.ceil((w * bitsPerPixel) / 8);
    const packed = new Uint8Array(rowBytes(width) * height);
    if (ihdr.interlace) {
      const passes = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]];
      let at = 0;
      for (const [x0, y0, dx, dy] of passes) {
        const pw = Math.ceil((width - x0) / dx), ph = Math.ceil((height - y0) / dy);
        if (pw <= 0 || ph <= 0) continue;
        const sub = new Uint8Array(rowBytes(pw) * ph);
        at += unfilter(raw.subarray(at), pw, ph, bpp, rowBytes(pw), sub, 0);
        for (let y = 0; y < ph; y++) {
          for (let x = 0; x < pw; x++) copyPixel(sub, y * rowBytes(pw), x, packed, (y0 + y * dy) * rowBytes(width), x0 + x * dx, bitsPerPixel);
        }
      }
    } else {
      unfilter(raw, width, height, bpp, rowBytes(width), packed, 0);
    }
    const sample = (row, i) => { // sample i of a row of packed samples, at its own depth
      if (depth === 8) return packed[row + i];
      if (depth === 16) return (packed[row + 2 * i] << 8) | packed[row + 2 * i + 1];
      const per = 8 / depth, byte = packed[row + Math.floor(i / per)], shift = 8 - depth * (1 + (i % per));
      return (byte >> shift) & ((1 << depth) - 1);
    };
    let mode, channels, data;
    const n = width * height;
    if (colorType === 0 && depth === 16) {
      mode = "I;16"; channels = 1; data = new Uint16Array(n);
      for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data[y * width + x] = sample(y * rowBytes(width), x);
    } else if (colorType === 3) {
      mode = trns ? "RGBA" : "RGB"; channels = trns ? 4 : 3; data = new Uint8Array(n * channels);
      for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) {
        const idx = sample(y * rowBytes(width), x), at = (y * width + x) * channels;
        data[at] = palette[3 * idx]; data[at + 1] = palette[3 * idx + 1]; data[at + 2] = palette[3 * idx + 2];
        if (trns) data[at + 3] = idx < trns.length ? trns[idx] : 255;
      }
    } else {
      mode = { 0: "L", 2: "RGB", 4: "LA", 6: "RGBA" }[colorType]; channels = perPixel; data = new Uint8Array(n * channels);
      // Low bit depths scale to 0..255 (PIL's L;1/L;2/L;4), 16-bit colour keeps its high byte.
      const scale = depth < 8 ? 255 / ((1 << depth) - 1) : 1;
      for (let y = 0; y < height; y++) {
        const row = y * rowBytes(width);
        for (let i = 0; i < width * channels; i++) {
          const v = sample(row, i);
          data[y * width * channels + i] = depth === 16 ? v >> 8 : Math.round(v * scale);
        }
      }
    }
    const img = { width, height, channels, mode, colours: mode === "RGB" || mode === "RGBA" ? 3 : 1,
      alpha: mode === "LA" || mode === "RGBA", max: mode === "I;16" ? 65535 : 255, data };
    return BP.orient(img, orientation);
  };

  function copyPixel(src, srcRow, sx, dst, dstRow, dx, bits) {
    if (bits >= 8) {
      const b = bits >> 3;
      for (let k = 0; k < b; k++) dst[dstRow + dx * b + k] = src[srcRow + sx * b + k];
      return;
    }
    const per = 8 / bits, mask = (1 << bits) - 1;
    const v = (src[srcRow + Math.floor(sx / per)] >> (8 - bits * (1 + (sx % per)))) & mask;
    const at = dstRow + Math.floor(dx / per), shift = 8 - bits * (1 + (dx % per));
    dst[at] = (dst[at] & ~(mask << shift)) | (v << shift);
  }

  function chunk(type, body) {
    const out = new Uint8Array(12 + body.length), dv = new DataView(out.buffer);
    dv.setUint32(0, body.length);
    for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
    out.set(body, 8);
    dv.setUint32(8 + body.length, crcDone(BP.crc32(out.subarray(4, 8 + body.length))));
    return out;
  }

  // Encode L, LA, RGB, RGBA or I;16 exactly (Sub filter on every row, the browser's zlib).
  BP.encodePNG = async function (img) {
    const { width, height, channels, mode } = img;
    const depth = mode === "I;16" ? 16 : 8, bpp = channels * (depth >> 3);
    const colorType = { L: 0, "I;16": 0, LA: 4, RGB: 2, RGBA: 6 }[mode];
    const stride = width * bpp, raw = new Uint8Array((stride + 1) * height);
    for (let y = 0; y < height; y++) {
      const row = new Uint8Array(stride);
      if (depth === 16) for (let i = 0; i < width; i++) { const v = img.data[y * width + i]; row[2 * i] = v >> 8; row[2 * i + 1] = v & 255; }
      else row.set(img.data.subarray(y * stride, (y + 1) * stride));
      const at = y * (stride + 1);
      raw[at] = 1; // Sub
      for (let i = 0; i < stride; i++) raw[at + 1 + i] = (row[i] - (i >= bpp ? row[i - bpp] : 0)) & 0xff;
    }
    const ihdr = new Uint8Array(13), dv = new DataView(ihdr.buffer);
    dv.setUint32(0, width); dv.setUint32(4, height);
    ihdr[8] = depth; ihdr[9] = colorType;
    const parts = [new Uint8Array(PNG_SIG), chunk("IHDR", ihdr), chunk("IDAT", await deflate(raw)), chunk("IEND", new Uint8Array(0))];
    return new Blob(parts, { type: "image/png" });
  };

  // --------------------------------------------------------------------- zip
  // An uncompressed (stored) zip: photos are already compressed.
  // A plain (32-bit) zip holds at most this many bytes and files; downloadAll splits beyond it.
  BP.ZIP_MAX_BYTES = 0xfffffffe;
  BP.ZIP_MAX_FILES = 0xffff;
  // What a file takes in a zip: its bytes, its two headers and its name in each.
  BP.zipEntryBytes = (name, size) => size + 76 + 2 * new TextEncoder().encode(name).length;
  BP.zip = async function (files) { // [{name, blob}]
    const parts = [], central = [];
    let offset = 0;
    const enc = new TextEncoder();
    for (const f of files) {
      // Read for its checksum only: the zip refers to the blob, not to a copy of it in memory.
      const size = f.blob.size, crc = crcDone(BP.crc32(new Uint8Array(await f.blob.arrayBuffer())));
      const name = enc.encode(f.name);
      const local = new Uint8Array(30 + name.length), lv = new DataView(local.buffer);
      lv.setUint32(0, 0x04034b50, true); lv.setUint16(4, 20, true); lv.setUint16(6, 0x0800, true);
      lv.setUint32(14, crc, true); lv.setUint32(18, size, true); lv.setUint32(22, size, true);
      lv.setUint16(26, name.length, true); local.set(name, 30);
      const cen = new Uint8Array(46 + name.length), cv = new DataView(cen.buffer);
      cv.setUint32(0, 0x02014b50, true); cv.setUint16(4, 20, true); cv.setUint16(6, 20, true); cv.setUint16(8, 0x0800, true);
      cv.setUint32(16, crc, true); cv.setUint32(20, size, true); cv.setUint32(24, size, true);
      cv.setUint16(28, name.length, true); cv.setUint32(42, offset, true); cen.set(name, 46);
      parts.push(local, f.blob); central.push(cen);
      offset += local.length + size;
    }
    const size = central.reduce((n, c) => n + c.length, 0);
    if (offset + size > BP.ZIP_MAX_BYTES || files.length > BP.ZIP_MAX_FILES) throw new Error("too large for one zip");
    const end = new Uint8Array(22), ev = new DataView(end.buffer);
    ev.setUint32(0, 0x06054b50, true); ev.setUint16(8, files.length, true); ev.setUint16(10, files.length, true);
    ev.setUint32(12, size, true); ev.setUint32(16, offset, true);
    return new Blob([...parts, ...central, end], { type: "application/zip" });
  };
})((globalThis.BP = globalThis.BP || {}));
