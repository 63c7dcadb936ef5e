/**
 * The seat map: screen, labelled rows, aisles between seat blocks, one <button> per seat; roving focus with
 * arrow keys, a tap or Enter picks a seat, a brief highlight on seats that change. How it is sized and zoomed
 * lives in mapzoom.js (ZoomableMap, which SeatMap extends).
 */

import { h } from "./format.js";
import { DOUBLE_TAP_MS, PICK_SEAT_PX, ZoomableMap } from "./mapzoom.js";

/** What a seat looks like to this user; the words are also what screen readers hear. */
export const SEAT_VIEWS = {
  available: "available",
  selected: "selected",
  mine: "held by you",
  other: "held by someone else",
  sold: "sold",
};

/**
 * Where the aisles go for a row of `columns` seats: cinema style blocks (4 | 8 | 4 for 16 seats),
 * one centre aisle for mid-size rows, none for small ones. Returns the seat numbers an aisle follows.
 */
export function aislesAfter(columns) {
  if (columns >= 14) {
    const side = Math.round(columns / 4);
    return new Set([side, columns - side]);
  }
  if (columns >= 8) return new Set([Math.floor(columns / 2)]);
  return new Set();
}

export class SeatMap extends ZoomableMap {
  /**
   * viewOf(seat) -> a key of SEAT_VIEWS; onActivate(seat) on click / Enter / Space;
   * priceOf(seat) -> a formatted price for the tooltip.
   */
  constructor(host, { viewOf, onActivate, priceOf = () => "" }) {
    super();
    this.host = host;
    this.viewOf = viewOf;
    this.onActivate = onActivate;
    this.priceOf = priceOf;
    this.seats = new Map();
    this.buttons = new Map();
    this.rows = [];
    this.focusId = null;
    this.engaged = false;
    this.columns = 0;
    this.aisles = new Set();
  }

  /** (Re)build the grid from seat objects {id, rowLabel, seatNumber, ...}; the objects are shared, not copied. */
  build(seats) {
    const hadFocus = this.host.contains(document.activeElement);
    this.seats = new Map(seats.map((s) => [s.id, s]));
    const rowOrder = [];
    const byRow = new Map();
    for (const seat of seats) {
      if (!byRow.has(seat.rowLabel)) {
        byRow.set(seat.rowLabel, []);
        rowOrder.push(seat.rowLabel);
      }
      byRow.get(seat.rowLabel).push(seat);
    }
    this.columns = Math.max(0, ...seats.map((s) => s.seatNumber));
    this.aisles = aislesAfter(this.columns);
    this.rows = rowOrder.map((label) => byRow.get(label).sort((a, b) => a.seatNumber - b.seatNumber));
    this.buttons.clear();

    const grid = h("div", {
      class: "seatmap", role: "grid",
      "aria-label": `Seat map, ${rowOrder.length} rows, screen at the top. Use the arrow keys to move between seats.`,
      "aria-rowcount": rowOrder.length,
    });
    this.rows.forEach((row, rowIndex) => {
      const label = row[0].rowLabel;
      const rowEl = h("div", { class: "seat-row", role: "row", "aria-rowindex": rowIndex + 1 },
        h("span", { class: "row-label", role: "rowheader", "aria-label": `Row ${label}` }, label));
      const present = new Map(row.map((s) => [s.seatNumber, s]));
      for (let n = 1; n <= this.columns; n += 1) {
        const seat = present.get(n);
        if (seat) {
          const button = h("button", {
            type: "button", class: "seat", "data-seat-id": seat.id, "data-row": label, "data-number": n, tabindex: -1,
          }, h("span", { class: "seat-num", "aria-hidden": "true" }, n));
          this.buttons.set(seat.id, button);
          rowEl.append(h("span", { class: "seat-cell", role: "gridcell" }, button));
        } else {
          rowEl.append(h("span", { class: "seat-gap", "aria-hidden": "true" }));
        }
        if (this.aisles.has(n) && n < this.columns) rowEl.append(h("span", { class: "aisle", "aria-hidden": "true" }));
      }
      rowEl.append(h("span", { class: "row-label row-label-end", "aria-hidden": "true" }, label));
      grid.append(rowEl);
    });
    grid.addEventListener("keydown", (event) => this.onKey(event));
    grid.addEventListener("focusin", (event) => {
      const button = event.target.closest?.("button.seat");
      if (!button) return;
      this.engaged = true;
      if (button.dataset.seatId !== this.focusId) this.setFocus(button.dataset.seatId, false);
    });

    const scroller = h("div", { class: "seatmap-scroll" }, grid);
    scroller.addEventListener("click", (event) => this.onClick(event));
    this.watch(scroller);

    this.buildTools();
    this.frame = h("div", { class: "seatmap-frame" }, scroller);
    this.host.replaceChildren(
      h("div", { class: "screen-wrap", "aria-hidden": "true" },
        h("div", { class: "screen" }), h("div", { class: "screen-glow" }), h("span", { class: "screen-label" }, "Screen")),
      this.tools,
      this.frame,
    );
    this.scroller = scroller;
    this.grid = grid;
    this.longestRow = this.rows.reduce((a, b) => (b.length > a.length ? b : a), []).map((s) => this.buttons.get(s.id));
    this.resizer.disconnect();
    this.resizer.observe(scroller);

    if (!this.seats.has(this.focusId)) {
      const first = seats.find((s) => this.viewOf(s) === "available") || seats[0];
      this.focusId = first ? first.id : null;
    }
    this.refreshAll();
    this.width = 0;
    this.fit();
    if (hadFocus && this.focusId) this.buttons.get(this.focusId)?.focus({ preventScroll: true });
  }

  /**
   * A tap on the overview zooms in around it; a tap on a seat big enough to hit picks it; a double tap on the
   * background (an aisle, a row label, the margin) goes back to the whole room. Enter and Space (detail 0)
   * always pick the focused seat.
   */
  onClick(event) {
    const button = event.target.closest("button.seat");
    const pointer = event.detail > 0;
    const now = event.timeStamp; // when the finger lifted, however late the page gets to it
    if (pointer && now < this.quietUntil) return;
    if (button) this.engaged = true;
    if (pointer && this.zoomable && !this.choosing) {
      this.zoomTo(PICK_SEAT_PX, event.clientX, event.clientY);
      this.quietUntil = now + DOUBLE_TAP_MS;
      if (button) this.setFocus(button.dataset.seatId, false);
      return;
    }
    if (!button) {
      if (pointer && this.zoom !== null && now - this.lastBackgroundTap < DOUBLE_TAP_MS) {
        this.zoomTo(this.fitSize, event.clientX, event.clientY);
        this.lastBackgroundTap = 0;
      } else {
        this.lastBackgroundTap = now;
      }
      return;
    }
    const seat = this.seats.get(button.dataset.seatId);
    if (!seat) return;
    this.setFocus(seat.id, false);
    this.onActivate(seat);
  }

  /** The seat the buyer is looking at: the one focused or last pressed, once they have used the map. */
  lookingAt() {
    return this.engaged ? this.focusId : null;
  }

  /** Update one seat's look and label; `flash` plays the change highlight. */
  refresh(id, { flash = false } = {}) {
    const seat = this.seats.get(id);
    const button = this.buttons.get(id);
    if (!seat || !button) return;
    const view = this.viewOf(seat);
    const words = SEAT_VIEWS[view];
    if (button.dataset.state !== view) {
      button.dataset.state = view;
      button.setAttribute("aria-label", `Row ${seat.rowLabel}, seat ${seat.seatNumber}, ${words}`);
      button.setAttribute("aria-pressed", view === "selected" ? "true" : "false");
      // Sold and held seats stay real, focusable buttons: the label says why they cannot be picked and a press
      // explains it ("just taken"), instead of a dead control.
      const price = view === "available" || view === "selected" ? ` · ${this.priceOf(seat)}` : "";
      button.title = `Row ${seat.rowLabel} · Seat ${seat.seatNumber} · ${words}${price}`;
    }
    button.tabIndex = id === this.focusId && this.choosing ? 0 : -1;
    if (flash) {
      button.classList.remove("flash");
      // Force a reflow so the animation restarts when the same seat changes twice in a row.
      void button.offsetWidth;
      button.classList.add("flash");
    }
  }

  refreshAll() {
    for (const id of this.seats.keys()) this.refresh(id);
  }

  setFocus(id, move = true) {
    if (!this.buttons.has(id)) return;
    const previous = this.focusId;
    this.focusId = id;
    if (previous && previous !== id) this.buttons.get(previous)?.setAttribute("tabindex", "-1");
    const button = this.buttons.get(id);
    button.tabIndex = this.choosing ? 0 : -1;
    if (move) {
      button.focus();
      button.scrollIntoView({ block: "nearest", inline: "nearest" });
    }
  }

  /** Arrow keys move across the grid (up/down keep the column), Home/End go to the row's ends. */
  onKey(event) {
    const button = event.target.closest?.("button.seat");
    if (!button) return;
    const seat = this.seats.get(button.dataset.seatId);
    const rowIndex = this.rows.findIndex((row) => row[0].rowLabel === seat.rowLabel);
    const row = this.rows[rowIndex];
    const index = row.indexOf(seat);
    let target = null;
    switch (event.key) {
      case "ArrowLeft": target = row[index - 1]; break;
      case "ArrowRight": target = row[index + 1]; break;
      case "ArrowUp": target = this.nearestIn(this.rows[rowIndex - 1], seat.seatNumber); break;
      case "ArrowDown": target = this.nearestIn(this.rows[rowIndex + 1], seat.seatNumber); break;
      case "Home": target = event.ctrlKey ? this.rows[0][0] : row[0]; break;
      case "End": target = event.ctrlKey ? this.rows.at(-1).at(-1) : row.at(-1); break;
      case "PageUp": target = this.nearestIn(this.rows[0], seat.seatNumber); break;
      case "PageDown": target = this.nearestIn(this.rows.at(-1), seat.seatNumber); break;
      default: return;
    }
    event.preventDefault();
    if (target) this.setFocus(target.id);
  }

  nearestIn(row, seatNumber) {
    if (!row) return null;
    return row.reduce((best, s) => (Math.abs(s.seatNumber - seatNumber) < Math.abs(best.seatNumber - seatNumber) ? s : best));
  }

}

