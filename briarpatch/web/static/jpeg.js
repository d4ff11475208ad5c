"use strict";
// A baseline JPEG encoder with colour at full resolution (4:4:4), as `briarpatch apply` writes.
// The browser's own encoder (canvas) halves the colour planes below quality 100 (4:2:0), which
// blurs a thin patch's colours: on the embedded benchmark, saved at quality 95, a model read 0.584
// of the attribute through 4:2:0 against 0.522 through 4:4:4 (docs/robustness.md, "The owner's
// own save"). libjpeg's colour conversion, integer DCT, quantization and tables, as PIL calls it for
// `apply`: on the same pixels and quality the page writes the same bytes (tests/test_web.py).
(function (BP) {
  // The standard's example quantization tables (ITU-T T.81, Annex K), in natural order.
  const QT_Y = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99];
  const QT_C = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99];
  // Natural index of each zigzag position.
  const ZIGZAG = [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6,
    7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46,
    53, 60, 61, 54, 47, 55, 62, 63];
  // The standard Huffman tables (Annex K.3) as a DHT segment holds them: 16 code-length counts, then the symbols.
  const HUFFMAN = {
    dcY: "00010501010101010100000000000000000102030405060708090a0b",
    acY: "0002010303020403050504040000017d01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282" +
      "090a161718191a25262728292a3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a8384" +
      "85868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3" +
      "e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa",
    dcC: "00030101010101010101010000000000000102030405060708090a0b",
    acC: "00020102040403040705040400010277000102031104052131061241510761711322328108144291a1b1c109233352f0156272d10a" +
      "162434e125f11718191a262728292a35363738393a434445464748494a535455565758595a636465666768696a737475767778797a82" +
      "838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2" +
      "e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9fa",
  };
  const hexBytes = (hex) => Uint8Array.from(hex.match(/../g), (h) => parseInt(h, 16));

  // Code and length of each symbol (Annex C): codes of one length are consecutive, then shift.
  function huffmanCodes(segment) {
    const codes = new Uint16Array(256), lengths = new Uint8Array(256);
    let code = 0, k = 16;
    for (let len = 1; len <= 16; len++) {
      for (let i = 0; i < segment[len - 1]; i++) { const sym = segment[k++]; codes[sym] = code++; lengths[sym] = len; }
      code <<= 1;
    }
    return { codes, lengths };
  }
  const TABLES = Object.fromEntries(Object.entries(HUFFMAN).map(([k, hex]) => {
    const segment = hexBytes(hex);
    return [k, { segment, ...huffmanCodes(segment) }];
  }));

  // libjpeg's jpeg_quality_scaling and jpeg_add_quant_table (baseline: every step at most 255).
  BP.jpegTables = function (quality) {
    const q = Math.min(100, Math.max(1, Math.round(quality)));
    const scale = q < 50 ? Math.floor(5000 / q) : 200 - 2 * q;
    const table = (base) => base.map((v) => Math.min(255, Math.max(1, Math.floor((v * scale + 50) / 100))));
    return [table(QT_Y), table(QT_C)];
  };

  // libjpeg's default forward DCT, jpeg_fdct_islow (jfdctint.c): integer arithmetic, 13-bit
  // constants, in place on 64 values; its outputs are 8 times the true coefficients. The same
  // arithmetic as the library PIL calls for `apply`, so the two write the same coefficients.
  // For 8-bit samples every intermediate fits in 32 bits (libjpeg's INT32), so shifts are exact.
  const down = (x) => (x + 16384) >> 15; // the second pass's DESCALE, by CONST_BITS + PASS1_BITS
  function fdct(d) {
    for (let o = 0; o < 64; o += 8) {
      const t0 = d[o] + d[o + 7], t7 = d[o] - d[o + 7], t1 = d[o + 1] + d[o + 6], t6 = d[o + 1] - d[o + 6];
      const t2 = d[o + 2] + d[o + 5], t5 = d[o + 2] - d[o + 5], t3 = d[o + 3] + d[o + 4], t4 = d[o + 3] - d[o + 4];
      const t10 = t0 + t3, t13 = t0 - t3, t11 = t1 + t2, t12 = t1 - t2;
      d[o] = (t10 + t11) << 2;
      d[o + 4] = (t10 - t11) << 2;
      const z1 = (t12 + t13) * 4433;
      d[o + 2] = (z1 + t13 * 6270 + 1024) >> 11;
      d[o + 6] = (z1 - t12 * 15137 + 1024) >> 11;
      const z5 = (t4 + t6 + t5 + t7) * 9633;
      const o1 = (t4 + t7) * -7373, o2 = (t5 + t6) * -20995, o3 = (t4 + t6) * -16069 + z5, o4 = (t5 + t7) * -3196 + z5;
      d[o + 7] = (t4 * 2446 + o1 + o3 + 1024) >> 11;
      d[o + 5] = (t5 * 16819 + o2 + o4 + 1024) >> 11;
      d[o + 3] = (t6 * 25172 + o2 + o3 + 1024) >> 11;
      d[o + 1] = (t7 * 12299 + o1 + o4 + 1024) >> 11;
    }
    for (let o = 0; o < 8; o++) {
      const t0 = d[o] + d[o + 56], t7 = d[o] - d[o + 56], t1 = d[o + 8] + d[o + 48], t6 = d[o + 8] - d[o + 48];
      const t2 = d[o + 16] + d[o + 40], t5 = d[o + 16] - d[o + 40], t3 = d[o + 24] + d[o + 32], t4 = d[o + 24] - d[o + 32];
      const t10 = t0 + t3, t13 = t0 - t3, t11 = t1 + t2, t12 = t1 - t2;
      d[o] = (t10 + t11 + 2) >> 2;
      d[o + 32] = (t10 - t11 + 2) >> 2;
      const z1 = (t12 + t13) * 4433;
      d[o + 16] = down(z1 + t13 * 6270);
      d[o + 48] = down(z1 - t12 * 15137);
      const z5 = (t4 + t6 + t5 + t7) * 9633;
      const o1 = (t4 + t7) * -7373, o2 = (t5 + t6) * -20995, o3 = (t4 + t6) * -16069 + z5, o4 = (t5 + t7) * -3196 + z5;
      d[o + 56] = down(t4 * 2446 + o1 + o3);
      d[o + 40] = down(t5 * 16819 + o2 + o4);
      d[o + 24] = down(t6 * 25172 + o2 + o3);
      d[o + 8] = down(t7 * 12299 + o1 + o4);
    }
  }

  class BitWriter {
    constructor(size) { this.buf = new Uint8Array(Math.max(1024, size)); this.n = 0; this.acc = 0; this.bits = 0; }
    byte(b) {
      if (this.n === this.buf.length) { const grown = new Uint8Array(this.buf.length * 2); grown.set(this.buf); this.buf = grown; }
      this.buf[this.n++] = b;
    }
    bytes(arr) { for (const b of arr) this.byte(b); }
    write(value, length) { // MSB first; a 0xFF byte in the scan is followed by a stuffed 0x00
      this.acc = (this.acc << length) | (value & ((1 << length) - 1));
      this.bits += length;
      while (this.bits >= 8) {
        const b = (this.acc >>> (this.bits - 8)) & 0xff;
        this.byte(b);
        if (b === 0xff) this.byte(0);
        this.bits -= 8;
      }
      this.acc &= (1 << this.bits) - 1;
    }
    flush() { if (this.bits > 0) this.write(0x7f, 8 - this.bits); } // pad with ones
    segment(marker, body) { this.bytes([0xff, marker, (body.length + 2) >> 8, (body.length + 2) & 0xff]); this.bytes(body); }
  }

  function bitLength(v) { let a = Math.abs(v), n = 0; while (a) { n++; a >>= 1; } return n; }

  // Quantize (libjpeg's rounding division by 8 x step, halves away from zero), zigzag and
  // entropy-code one 8x8 block of fdct outputs; returns its DC for the next block.
  const q = new Int32Array(64);
  function codeBlock(out, block, divisors, prevDC, dc, ac) {
    // floor(a / b) for whole a >= 0 and b >= 2 is floor((a + 0.5) * (1 / b)): the half keeps the
    // product clear of the integer that the rounded reciprocal could otherwise fall just short of.
    for (let i = 0; i < 64; i++) {
      const v = block[ZIGZAG[i]], half = divisors.half[i] + 0.5, r = divisors.recip[i];
      q[i] = v < 0 ? -Math.floor((half - v) * r) : Math.floor((v + half) * r);
    }
    const diff = q[0] - prevDC, cat = bitLength(diff);
    out.write(dc.codes[cat], dc.lengths[cat]);
    if (cat) out.write(diff < 0 ? diff - 1 : diff, cat);
    let run = 0;
    for (let i = 1; i < 64; i++) {
      if (q[i] === 0) { run++; continue; }
      while (run > 15) { out.write(ac.codes[0xf0], ac.lengths[0xf0]); run -= 16; }
      const size = bitLength(q[i]), sym = (run << 4) | size;
      out.write(ac.codes[sym], ac.lengths[sym]);
      out.write(q[i] < 0 ? q[i] - 1 : q[i], size);
      run = 0;
    }
    if (run) out.write(ac.codes[0], ac.lengths[0]);
    return q[0];
  }

  // Encode an image {width, height, data: RGBA bytes} (``gray``: one component, from the red
  // channel) at ``quality`` (1-100). A generator: it yields the share done after each row of
  // blocks, so the page stays responsive, and returns the file's bytes.
  BP.encodeJPEG = function* (img, quality, gray) {
    const { width, height, data } = img;
    if (width > 65535 || height > 65535) { // the frame header has 16 bits for each
      throw new Error(`${width}×${height}: a JPEG holds at most 65535 pixels a side; save it as PNG`);
    }
    const tables = BP.jpegTables(quality);
    // Divisors per zigzag position: 8 x the step (the DCT's outputs are 8 times the coefficients).
    const divisors = tables.map((t) => {
      const qval = Int32Array.from(ZIGZAG, (k) => 8 * t[k]);
      return { half: qval.map((v) => v >> 1), recip: Float64Array.from(qval, (v) => 1 / v) };
    });
    const nc = gray ? 1 : 3;
    const out = new BitWriter(width * height * nc / 4 + 1024);
    out.bytes([0xff, 0xd8]);
    out.segment(0xe0, [0x4a, 0x46, 0x49, 0x46, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0]); // JFIF 1.1, no density, no thumbnail
    for (let t = 0; t < (gray ? 1 : 2); t++) out.segment(0xdb, [t, ...ZIGZAG.map((k) => tables[t][k])]);
    const sof = [8, height >> 8, height & 0xff, width >> 8, width & 0xff, nc];
    for (let c = 0; c < nc; c++) sof.push(c + 1, 0x11, c ? 1 : 0); // every component at full resolution
    out.segment(0xc0, sof);
    const dht = [[0x00, "dcY"], [0x10, "acY"], ...(gray ? [] : [[0x01, "dcC"], [0x11, "acC"]])];
    for (const [id, name] of dht) out.segment(0xc4, [id, ...TABLES[name].segment]);
    const sos = [nc];
    for (let c = 0; c < nc; c++) sos.push(c + 1, c ? 0x11 : 0x00);
    out.segment(0xda, [...sos, 0, 63, 0]);

    // One row of blocks at a time: its 8 pixel rows as YCbCr planes (the image's last row and column
    // repeated past its edge, as libjpeg does), then each 8x8 block of each plane coded.
    const cols = Math.ceil(width / 8) * 8, rowsOfBlocks = Math.ceil(height / 8);
    const planes = [0, 1, 2].slice(0, nc).map(() => new Int16Array(8 * cols));
    const block = new Int32Array(64); // whole numbers throughout: the DCT is integer arithmetic
    const prev = [0, 0, 0];
    const tableNames = ["Y", "C", "C"];
    for (let by = 0; by < rowsOfBlocks; by++) {
      for (let y = 0; y < 8; y++) {
        const row = Math.min(by * 8 + y, height - 1) * width;
        for (let x = 0; x < cols; x++) {
          const at = 4 * (row + (x < width ? x : width - 1)), i = y * cols + x;
          const r = data[at], g = data[at + 1], b = data[at + 2];
          if (gray) { planes[0][i] = r - 128; continue; }
          // libjpeg's YCbCr in 16-bit fixed point (jccolor.c), whole levels, centred on 0.
          planes[0][i] = ((19595 * r + 38470 * g + 7471 * b + 32768) >> 16) - 128;
          planes[1][i] = ((-11059 * r - 21709 * g + 32768 * b + 32767) >> 16);
          planes[2][i] = ((32768 * r - 27439 * g - 5329 * b + 32767) >> 16);
        }
      }
      for (let bx = 0; bx < cols; bx += 8) {
        for (let c = 0; c < nc; c++) {
          const plane = planes[c];
          for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) block[y * 8 + x] = plane[y * cols + bx + x];
          fdct(block);
          const t = tableNames[c];
          prev[c] = codeBlock(out, block, divisors[c ? 1 : 0], prev[c], TABLES["dc" + t], TABLES["ac" + t]);
        }
      }
      yield (by + 1) / rowsOfBlocks;
    }
    out.flush();
    out.bytes([0xff, 0xd9]);
    return out.buf.slice(0, out.n);
  };
})((globalThis.BP = globalThis.BP || {}));
