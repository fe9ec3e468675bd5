// qr.js: a small QR Code encoder (ISO/IEC 18004) for the QR-login demo:
// byte mode (UTF-8), error correction L or M, versions 1-10 (up to 271
// bytes at L, 213 at M; a login URL needs version 3-5). Written for pushd;
// checked by cmd/pushd/demo_test.go, which decodes its output with zbar.
//
//   import { encodeQR, qrSVGPath } from "./qr.js";
//   const q = encodeQR("https://example.com/login?n=7f3a");  // {size, version, ecc, mask, dark(x, y)}

const MAX_VERSION = 10;

// Error correction per version (index 1..10): [ecc codewords per block,
// blocks in group 1, data codewords per group-1 block, blocks in group 2
// (one more data codeword each)].
const BLOCKS = {
  L: [null, [7, 1, 19, 0], [10, 1, 34, 0], [15, 1, 55, 0], [20, 1, 80, 0], [26, 1, 108, 0],
    [18, 2, 68, 0], [20, 2, 78, 0], [24, 2, 97, 0], [30, 2, 116, 0], [18, 2, 68, 2]],
  M: [null, [10, 1, 16, 0], [16, 1, 28, 0], [26, 1, 44, 0], [18, 2, 32, 0], [24, 2, 43, 0],
    [16, 4, 27, 0], [18, 4, 31, 0], [22, 2, 38, 2], [22, 3, 36, 2], [26, 4, 43, 1]],
};

// Format information's two error-correction-level bits.
const ECC_BITS = { L: 1, M: 0 };

// Centres of the alignment patterns per version (rows and columns alike).
const ALIGN = [null, [], [6, 18], [6, 22], [6, 26], [6, 30], [6, 34], [6, 22, 38], [6, 24, 42], [6, 26, 46], [6, 28, 50]];

const MASKS = [
  (r, c) => (r + c) % 2 === 0,
  (r) => r % 2 === 0,
  (r, c) => c % 3 === 0,
  (r, c) => (r + c) % 3 === 0,
  (r, c) => (Math.floor(r / 2) + Math.floor(c / 3)) % 2 === 0,
  (r, c) => ((r * c) % 2) + ((r * c) % 3) === 0,
  (r, c) => (((r * c) % 2) + ((r * c) % 3)) % 2 === 0,
  (r, c) => (((r + c) % 2) + ((r * c) % 3)) % 2 === 0,
];

// GF(256) with the QR polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d).
const EXP = new Uint8Array(512);
const LOG = new Uint8Array(256);
for (let i = 0, x = 1; i < 255; i++) {
  EXP[i] = x;
  LOG[x] = i;
  x <<= 1;
  if (x & 0x100) x ^= 0x11d;
}
for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255];
const gfMul = (a, b) => (a === 0 || b === 0 ? 0 : EXP[LOG[a] + LOG[b]]);

// rsGenerator returns the coefficients (highest degree first, leading 1
// dropped) of prod_{i<n} (x - 2^i).
function rsGenerator(n) {
  let g = [1];
  for (let i = 0; i < n; i++) {
    const next = new Array(g.length + 1).fill(0);
    for (let j = 0; j < g.length; j++) {
      next[j] ^= g[j];
      next[j + 1] ^= gfMul(g[j], EXP[i]);
    }
    g = next;
  }
  return g.slice(1);
}

// rsRemainder is data(x) * x^n mod g(x): the n error-correction codewords.
function rsRemainder(data, gen) {
  const rem = new Array(gen.length).fill(0);
  for (const b of data) {
    const factor = b ^ rem.shift();
    rem.push(0);
    for (let i = 0; i < gen.length; i++) rem[i] ^= gfMul(gen[i], factor);
  }
  return rem;
}

function dataCapacity(version, ecc) {
  const [, n1, d1, n2] = BLOCKS[ecc][version];
  return n1 * d1 + n2 * (d1 + 1);
}

// encodeQR encodes text (as UTF-8) in the smallest version that fits, at
// ecc "M" (default) or "L". opts.mask (0-7) forces a mask, opts.minVersion
// a larger symbol. Returns { size, version, ecc, mask, modules } where
// modules[y][x] is true for a dark module, without the quiet zone.
export function encodeQR(text, opts = {}) {
  const ecc = opts.ecc ?? "M";
  if (!BLOCKS[ecc]) throw new RangeError(`qr: ecc must be L or M, not ${ecc}`);
  const bytes = new TextEncoder().encode(text);
  let version = Math.max(1, opts.minVersion ?? 1);
  for (; version <= MAX_VERSION; version++) {
    const countBits = version < 10 ? 8 : 16;
    if (4 + countBits + 8 * bytes.length <= 8 * dataCapacity(version, ecc)) break;
  }
  if (version > MAX_VERSION) throw new RangeError(`qr: ${bytes.length} bytes do not fit version ${MAX_VERSION}-${ecc}`);
  const codewords = addErrorCorrection(dataCodewords(bytes, version, ecc), version, ecc);
  const sym = new Symbol(version);
  sym.drawFunctionPatterns();
  sym.drawCodewords(codewords);
  let mask = opts.mask;
  if (mask === undefined) {
    let best = Infinity;
    for (let m = 0; m < 8; m++) {
      sym.applyMask(m);
      sym.drawFormat(ecc, m);
      const p = sym.penalty();
      if (p < best) {
        best = p;
        mask = m;
      }
      sym.applyMask(m); // XOR again: undone
    }
  }
  if (!(mask >= 0 && mask < 8)) throw new RangeError(`qr: mask must be 0-7, not ${mask}`);
  sym.applyMask(mask);
  sym.drawFormat(ecc, mask);
  return { size: sym.size, version, ecc, mask, modules: sym.dark };
}

// dataCodewords builds the data bit stream: mode 0100 (byte), the count,
// the bytes, a terminator, then pad bytes 0xEC 0x11.
function dataCodewords(bytes, version, ecc) {
  const cap = dataCapacity(version, ecc);
  const bits = [];
  const put = (v, n) => {
    for (let i = n - 1; i >= 0; i--) bits.push((v >>> i) & 1);
  };
  put(0b0100, 4);
  put(bytes.length, version < 10 ? 8 : 16);
  for (const b of bytes) put(b, 8);
  put(0, Math.min(4, cap * 8 - bits.length));
  put(0, (8 - (bits.length % 8)) % 8);
  const out = [];
  for (let i = 0; i < bits.length; i += 8) {
    let b = 0;
    for (let j = 0; j < 8; j++) b = (b << 1) | bits[i + j];
    out.push(b);
  }
  for (let pad = 0xec; out.length < cap; pad ^= 0xec ^ 0x11) out.push(pad);
  return out;
}

// addErrorCorrection splits data into blocks, appends each block's
// Reed-Solomon codewords and interleaves: data column by column, then
// error correction column by column.
function addErrorCorrection(data, version, ecc) {
  const [ecLen, n1, d1, n2] = BLOCKS[ecc][version];
  const gen = rsGenerator(ecLen);
  const blocks = [];
  let off = 0;
  for (let i = 0; i < n1 + n2; i++) {
    const len = i < n1 ? d1 : d1 + 1;
    const d = data.slice(off, off + len);
    off += len;
    blocks.push({ d, ec: rsRemainder(d, gen) });
  }
  const out = [];
  for (let i = 0; i <= d1; i++) for (const b of blocks) if (i < b.d.length) out.push(b.d[i]);
  for (let i = 0; i < ecLen; i++) for (const b of blocks) out.push(b.ec[i]);
  return out;
}

// Symbol is the module grid under construction: dark[y][x], and which
// modules belong to function patterns (never masked).
class Symbol {
  constructor(version) {
    this.version = version;
    this.size = 17 + 4 * version;
    this.dark = Array.from({ length: this.size }, () => new Array(this.size).fill(false));
    this.fixed = Array.from({ length: this.size }, () => new Array(this.size).fill(false));
  }

  set(x, y, dark) {
    this.dark[y][x] = dark;
    this.fixed[y][x] = true;
  }

  drawFunctionPatterns() {
    const n = this.size;
    for (let i = 0; i < n; i++) {
      this.set(6, i, i % 2 === 0); // timing patterns
      this.set(i, 6, i % 2 === 0);
    }
    for (const [cx, cy] of [[3, 3], [n - 4, 3], [3, n - 4]]) this.drawFinder(cx, cy);
    const al = ALIGN[this.version];
    for (const cx of al) {
      for (const cy of al) {
        const nearFinder = (cx === 6 && cy === 6) || (cx === 6 && cy === n - 7) || (cx === n - 7 && cy === 6);
        if (!nearFinder) this.drawAlignment(cx, cy);
      }
    }
    this.drawFormat("M", 0); // reserve the areas; redrawn after masking
    this.drawVersion();
  }

  // drawFinder draws a 7×7 finder centred on (cx, cy) with its light
  // separator ring.
  drawFinder(cx, cy) {
    for (let dy = -4; dy <= 4; dy++) {
      for (let dx = -4; dx <= 4; dx++) {
        const x = cx + dx;
        const y = cy + dy;
        if (x < 0 || y < 0 || x >= this.size || y >= this.size) continue;
        const d = Math.max(Math.abs(dx), Math.abs(dy));
        this.set(x, y, d !== 2 && d !== 4);
      }
    }
  }

  drawAlignment(cx, cy) {
    for (let dy = -2; dy <= 2; dy++) {
      for (let dx = -2; dx <= 2; dx++) this.set(cx + dx, cy + dy, Math.max(Math.abs(dx), Math.abs(dy)) !== 1);
    }
  }

  // drawFormat writes the 15 format bits (ecc level, mask; BCH(15,5),
  // XOR 0x5412) twice, and the dark module.
  drawFormat(ecc, mask) {
    const data = (ECC_BITS[ecc] << 3) | mask;
    let rem = data;
    for (let i = 0; i < 10; i++) rem = (rem << 1) ^ ((rem >>> 9) * 0x537);
    const bits = ((data << 10) | rem) ^ 0x5412;
    const bit = (i) => ((bits >>> i) & 1) === 1;
    const n = this.size;
    for (let i = 0; i <= 5; i++) this.set(8, i, bit(i));
    this.set(8, 7, bit(6));
    this.set(8, 8, bit(7));
    this.set(7, 8, bit(8));
    for (let i = 9; i < 15; i++) this.set(14 - i, 8, bit(i));
    for (let i = 0; i < 8; i++) this.set(n - 1 - i, 8, bit(i));
    for (let i = 8; i < 15; i++) this.set(8, n - 15 + i, bit(i));
    this.set(8, n - 8, true);
  }

  // drawVersion writes the 18 version bits (version 7 and up; BCH(18,6))
  // in the two 6×3 blocks.
  drawVersion() {
    if (this.version < 7) return;
    let rem = this.version;
    for (let i = 0; i < 12; i++) rem = (rem << 1) ^ ((rem >>> 11) * 0x1f25);
    const bits = (this.version << 12) | rem;
    for (let i = 0; i < 18; i++) {
      const dark = ((bits >>> i) & 1) === 1;
      const a = this.size - 11 + (i % 3);
      const b = Math.floor(i / 3);
      this.set(a, b, dark);
      this.set(b, a, dark);
    }
  }

  // drawCodewords places the bits in the zigzag order: two-module columns
  // from the right, alternately upwards and downwards, skipping the
  // vertical timing column and every function module.
  drawCodewords(codewords) {
    const n = this.size;
    let i = 0;
    const total = codewords.length * 8;
    for (let right = n - 1; right >= 1; right -= 2) {
      if (right === 6) right = 5;
      const upward = ((right + 1) & 2) === 0;
      for (let k = 0; k < n; k++) {
        const y = upward ? n - 1 - k : k;
        for (let j = 0; j < 2; j++) {
          const x = right - j;
          if (this.fixed[y][x]) continue;
          // Remainder bits past the last codeword stay light.
          this.dark[y][x] = i < total && ((codewords[i >>> 3] >>> (7 - (i & 7))) & 1) === 1;
          i++;
        }
      }
    }
  }

  applyMask(m) {
    const f = MASKS[m];
    for (let y = 0; y < this.size; y++) {
      for (let x = 0; x < this.size; x++) if (!this.fixed[y][x] && f(y, x)) this.dark[y][x] = !this.dark[y][x];
    }
  }

  // penalty scores the symbol as the mask-selection rules do: runs of 5+
  // alike, 2×2 blocks, finder-like 1:1:3:1:1 runs beside 4 light
  // modules, and imbalance of dark and light.
  penalty() {
    const n = this.size;
    const g = this.dark;
    let p = 0;
    let dark = 0;
    const finder = [true, false, true, true, true, false, true];
    for (let pass = 0; pass < 2; pass++) {
      for (let a = 0; a < n; a++) {
        const at = (b) => (pass === 0 ? g[a][b] : g[b][a]);
        let run = 1;
        for (let b = 1; b <= n; b++) {
          if (b < n && at(b) === at(b - 1)) {
            run++;
            continue;
          }
          if (run >= 5) p += run - 2;
          run = 1;
        }
        for (let b = 0; b + 7 <= n; b++) {
          if (!finder.every((v, k) => at(b + k) === v)) continue;
          const lightBefore = b >= 4 && [1, 2, 3, 4].every((k) => !at(b - k));
          const lightAfter = b + 11 <= n && [7, 8, 9, 10].every((k) => !at(b + k));
          if (lightBefore || lightAfter) p += 40;
        }
      }
    }
    for (let y = 0; y < n; y++) {
      for (let x = 0; x < n; x++) {
        if (g[y][x]) dark++;
        if (x + 1 < n && y + 1 < n && g[y][x] === g[y][x + 1] && g[y][x] === g[y + 1][x] && g[y][x] === g[y + 1][x + 1]) p += 3;
      }
    }
    p += 10 * Math.floor(Math.abs(dark * 20 - n * n * 10) / (n * n));
    return p;
  }
}

// qrSVGPath returns an SVG path drawing q's dark modules, offset by a
// quiet zone of border modules (one unit per module).
export function qrSVGPath(q, border = 4) {
  let d = "";
  for (let y = 0; y < q.size; y++) {
    for (let x = 0; x < q.size; x++) if (q.modules[y][x]) d += `M${x + border},${y + border}h1v1h-1z`;
  }
  return d;
}
