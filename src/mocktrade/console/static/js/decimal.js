// Exact decimal arithmetic on the API's decimal strings, with BigInt.
// A value is {n: BigInt, s: scale}: n / 10^s. Functions take and return
// strings; results keep the scale the arithmetic gives (add: the larger
// scale, mul: the sum) unless rounded with round(). Rounding is half-even,
// like Python's Decimal.quantize, so a recomputed value matches the server's.

const TEN = 10n;

export function parse(text) {
  const str = String(text).trim();
  const m = /^([+-])?(\d*)(?:\.(\d*))?$/.exec(str);
  if (!m || (m[2] === "" && (m[3] === undefined || m[3] === ""))) {
    throw new Error(`not a decimal: ${text}`);
  }
  const frac = m[3] || "";
  let n = BigInt((m[2] || "0") + frac);
  if (m[1] === "-") n = -n;
  return { n, s: frac.length };
}

export function isDecimal(text) {
  try { parse(text); return true; } catch { return false; }
}

function scaleUp(v, s) {
  return v.s >= s ? v.n : v.n * TEN ** BigInt(s - v.s);
}

function format({ n, s }) {
  const neg = n < 0n;
  let digits = (neg ? -n : n).toString();
  if (s > 0) {
    digits = digits.padStart(s + 1, "0");
    digits = `${digits.slice(0, -s)}.${digits.slice(-s)}`;
  }
  return (neg && n !== 0n ? "-" : "") + digits;
}

function divRound(num, den) {
  // num / den rounded half-even to an integer (den > 0).
  let q = num / den;
  let r = num % den;
  if (r < 0n) { r = -r; }
  const twice = 2n * r;
  if (twice > den || (twice === den && (q % 2n !== 0n))) {
    q += num < 0n ? -1n : 1n;
  }
  return q;
}

export function add(a, b) {
  const x = parse(a), y = parse(b), s = Math.max(x.s, y.s);
  return format({ n: scaleUp(x, s) + scaleUp(y, s), s });
}

export function sub(a, b) {
  const x = parse(a), y = parse(b), s = Math.max(x.s, y.s);
  return format({ n: scaleUp(x, s) - scaleUp(y, s), s });
}

export function mul(a, b) {
  const x = parse(a), y = parse(b);
  return format({ n: x.n * y.n, s: x.s + y.s });
}

/** a rounded (half-even) to `scale` places; a pads with zeros when shorter. */
export function round(a, scale) {
  const x = parse(a);
  if (x.s <= scale) return format({ n: scaleUp(x, scale), s: scale });
  return format({ n: divRound(x.n, TEN ** BigInt(x.s - scale)), s: scale });
}

/** a / b rounded half-even to `scale` places; null when b is zero. */
export function div(a, b, scale) {
  const x = parse(a), y = parse(b);
  if (y.n === 0n) return null;
  // a/b = (x.n / 10^xs) / (y.n / 10^ys); times 10^scale.
  let num = x.n * TEN ** BigInt(y.s + scale);
  let den = y.n * TEN ** BigInt(x.s);
  if (den < 0n) { num = -num; den = -den; }
  return format({ n: divRound(num, den), s: scale });
}

export function cmp(a, b) {
  const x = parse(a), y = parse(b), s = Math.max(x.s, y.s);
  const d = scaleUp(x, s) - scaleUp(y, s);
  return d > 0n ? 1 : d < 0n ? -1 : 0;
}

export function sign(a) {
  const { n } = parse(a);
  return n > 0n ? 1 : n < 0n ? -1 : 0;
}

export function sum(values, scale = 0) {
  return values.reduce((acc, v) => add(acc, v), round("0", scale));
}
