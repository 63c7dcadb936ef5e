/**
 * Formatting and small helpers shared by the views: money, dates, seat names, ids, DOM building.
 */

/** The contract does not carry a currency; the demo prices are plain amounts shown with this symbol. */
const CURRENCY = "USD";

const moneyFormat = new Intl.NumberFormat(undefined, { style: "currency", currency: CURRENCY });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short" });
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const longDateFormat = new Intl.DateTimeFormat(undefined, {
  weekday: "long", day: "numeric", month: "long", hour: "2-digit", minute: "2-digit",
});

export function money(amount) {
  return moneyFormat.format(Number(amount) || 0);
}

export function showDay(iso) {
  return dayFormat.format(new Date(iso));
}

export function showTime(iso) {
  return timeFormat.format(new Date(iso));
}

export function showDateTime(iso) {
  return longDateFormat.format(new Date(iso));
}

/** "2 h 49 min" from two ISO instants. */
export function runtime(startIso, endIso) {
  const minutes = Math.round((Date.parse(endIso) - Date.parse(startIso)) / 60000);
  if (!Number.isFinite(minutes) || minutes <= 0) return "";
  const h = Math.floor(minutes / 60);
  const m = minutes % 60;
  return h ? `${h} h${m ? ` ${m} min` : ""}` : `${m} min`;
}

/** "Row C, seat 7" (spoken and written form). */
export function seatName(seat) {
  return `Row ${seat.rowLabel}, seat ${seat.seatNumber}`;
}

/** "C7" (compact form for chips and tickets). */
export function seatCode(seat) {
  return `${seat.rowLabel}${seat.seatNumber}`;
}

/** Seats in row order then number order, for stable lists. */
export function bySeatOrder(a, b) {
  if (a.rowLabel.length !== b.rowLabel.length) return a.rowLabel.length - b.rowLabel.length;
  if (a.rowLabel !== b.rowLabel) return a.rowLabel < b.rowLabel ? -1 : 1;
  return a.seatNumber - b.seatNumber;
}

/** A list of seat names in prose: "Row C, seat 7 and Row C, seat 8". */
export function seatList(seats) {
  const names = [...seats].sort(bySeatOrder).map(seatName);
  if (names.length <= 1) return names.join("");
  return `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
}

export function plural(count, one, many = `${one}s`) {
  return `${count} ${count === 1 ? one : many}`;
}

/** mm:ss, rounded up so the display reaches 0:00 exactly when the hold ends. */
export function clock(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(total / 60)}:${String(total % 60).padStart(2, "0")}`;
}

/** A random UUID v4; crypto.randomUUID only exists in secure contexts (a LAN http address is not one). */
export function uuid4() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Epoch milliseconds from a server time that may be a number (ms or s) or an ISO string. */
export function epochMs(value) {
  if (typeof value === "number") return value < 1e11 ? value * 1000 : value;
  if (typeof value === "string") {
    const n = Date.parse(value);
    return Number.isNaN(n) ? null : n;
  }
  return null;
}

/** Poster colours (no artwork is stored): a curated gradient picked by the title, the same on every page. */
const POSTER_PALETTES = [
  ["#3b1d6e", "#0d0a24", "#8b5cf6"], ["#0f3d57", "#06121f", "#38bdf8"], ["#5b1024", "#14060c", "#f43f5e"],
  ["#6b3a0c", "#170b03", "#f59e0b"], ["#0d4a3c", "#03130f", "#34d399"], ["#4a1650", "#12041a", "#e879f9"],
  ["#1e2a6b", "#070a1f", "#818cf8"], ["#5c2a12", "#140804", "#fb923c"],
];

export function posterStyle(title) {
  let hash = 0x811c9dc5; // FNV-1a: spreads similar titles over the palettes better than a plain sum
  for (const ch of title) hash = Math.imul(hash ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  const [p1, p2, p3] = POSTER_PALETTES[(hash >>> 4) % POSTER_PALETTES.length];
  return { "--p1": p1, "--p2": p2, "--p3": p3 };
}

/**
 * Build an element: h("button", {class: "btn", onclick: fn, "aria-label": "x"}, "text", child).
 * Attributes set to null/false are skipped; strings are text nodes (never parsed as HTML).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style" && typeof value === "object") {
      for (const [prop, v] of Object.entries(value)) el.style.setProperty(prop, String(v));
    }
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An inline SVG icon from a path list (kept here so no icon font or image request is needed). */
export function icon(name, cls = "icon") {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", cls);
  for (const d of ICONS[name] || []) {
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

const ICONS = {
  clock: ["M12 3a9 9 0 1 0 0 18a9 9 0 0 0 0-18z", "M12 7v5l3 2"],
  calendar: ["M4 7a2 2 0 0 1 2-2h12a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2z", "M4 10h16M8 3v4M16 3v4"],
  pin: ["M12 21s-7-6.1-7-11.5A7 7 0 0 1 19 9.5C19 14.9 12 21 12 21z", "M12 7.2a2.3 2.3 0 1 0 0 4.6a2.3 2.3 0 0 0 0-4.6z"],
  eye: ["M2 12s3.6-7 10-7s10 7 10 7s-3.6 7-10 7S2 12 2 12z", "M12 9a3 3 0 1 0 0 6a3 3 0 0 0 0-6z"],
  back: ["M15 5l-7 7l7 7"],
  next: ["M9 5l7 7l-7 7"],
  plus: ["M12 5v14M5 12h14"],
  minus: ["M5 12h14"],
  arrow: ["M5 12h14M13 6l6 6l-6 6"],
  check: ["M5 12.5l4.5 4.5L19 7.5"],
  ticket: ["M3 8a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2v2a2 2 0 0 0 0 4v2a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2v-2a2 2 0 0 0 0-4z"],
  film: ["M4 4h16v16H4z", "M8 4v16M16 4v16M4 8h4M4 12h4M4 16h4M16 8h4M16 12h4M16 16h4"],
  wifi: ["M2 8.5a15 15 0 0 1 20 0", "M5 12a10 10 0 0 1 14 0", "M8.5 15.5a5 5 0 0 1 7 0", "M12 19h.01"],
};
