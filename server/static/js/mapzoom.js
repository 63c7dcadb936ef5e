/**
 * How the seat map is sized and zoomed. The map fits the room to the screen width; where the whole room fits only
 * with seats too small to hit, the fitted room is an overview (a tap zooms in there); zoomed in, every seat is a
 * target of 24 px or more, panned by a swipe or by buttons, with the row labels kept in view. A pinch, a double
 * tap on the background and the -/+ buttons zoom.
 */

import { h, icon } from "./format.js";

/** Seat sizes in CSS px: a fitted map stays within MIN..MAX_FIT; zoomed, a seat is at most MAX_ZOOM. */
const MIN_SEAT_PX = 8;
const MAX_FIT_PX = 40;
const MAX_ZOOM_PX = 56;
/** WCAG 2.2 target size (2.5.8): smaller seats are an overview that a tap zooms, not a target that a tap picks. */
const TARGET_PX = 24;
/** Where a tap on the overview or the + button takes a buyer: comfortably above the target size. */
export const PICK_SEAT_PX = 28;
/** A second tap within this long is a double tap; after a zoom, a tap this soon is its tail and is ignored. */
export const DOUBLE_TAP_MS = 350;
const OPPOSITE_TOOL = { in: "out", out: "in", left: "right", right: "left" };
/** Less than this beyond an edge (the map's own padding) is not "more seats". */
const EDGE_SLACK_PX = 8;

/**
 * The seat map's view: its size, zoom, pan buttons and the hint between them. The seat map (seatmap.js) builds
 * the grid and sets `scroller`, `grid`, `frame`, `buttons`, `columns`, `aisles`, `focusId`, `engaged` and
 * `longestRow`; this fits them to the width and zooms them.
 */
export class ZoomableMap {
  constructor() {
    this.fitSize = MAX_FIT_PX;
    this.zoom = null; // null: the fitted room; else the seat size the buyer zoomed to
    this.width = 0;
    this.pinch = null;
    this.quietUntil = 0;
    this.lastBackgroundTap = 0;
    this.edgesQueued = false;
    this.resizer = new ResizeObserver(() => this.fit());
  }

  /** The zoom and pan buttons, with the hint between them (`this.tools`). */
  buildTools() {
    const tool = (action, label, name) => h("button", {
      class: "btn btn-icon map-tool", type: "button", "data-map": action, "aria-label": label, title: label,
      onclick: () => this.onTool(action),
    }, icon(name));
    this.hint = h("p", { class: "map-hint" });
    this.tools = h("div", { class: "map-tools", role: "toolbar", "aria-label": "Seat map view" },
      h("span", { class: "map-tool-group" }, tool("out", "Zoom out", "minus"), tool("in", "Zoom in", "plus")),
      this.hint,
      h("span", { class: "map-tool-group" },
        tool("left", "Show seats to the left", "back"), tool("right", "Show seats to the right", "next")));
  }

  /** Pinches, ctrl + wheel and scrolling of the scroller zoom and pan the map. */
  watch(scroller) {
    scroller.addEventListener("scroll", () => this.queueEdges(), { passive: true });
    scroller.addEventListener("touchstart", (event) => this.onTouch(event), { passive: true });
    scroller.addEventListener("touchmove", (event) => this.onTouch(event), { passive: false });
    scroller.addEventListener("touchend", (event) => this.onTouch(event), { passive: true });
    scroller.addEventListener("touchcancel", (event) => this.onTouch(event), { passive: true });
    scroller.addEventListener("wheel", (event) => this.onWheel(event), { passive: false });
  }

  /** Widths for a seat size: the gaps and aisles scale with the seats. */
  measure(seat) {
    const aisleCount = [...this.aisles].filter((n) => n < this.columns).length;
    const labels = this.narrow ? 1 : 2;
    const gap = seat <= 12 ? 2 : seat <= 18 ? 3 : Math.min(8, Math.round(seat * 0.2));
    const aisle = Math.round(seat * 0.7);
    const items = this.columns + aisleCount + labels;
    const width = this.columns * seat + aisleCount * aisle + labels * seat * 0.9 + (items - 1) * gap;
    // A seat that is a target is at least TARGET_PX tall as well as wide.
    const height = seat >= TARGET_PX ? Math.max(TARGET_PX, Math.round(seat * 0.92)) : seat * 0.92;
    return { seat, gap, aisle, height, width };
  }

  /** The largest seat with which the whole room fits the width (no smaller than MIN_SEAT_PX). */
  fit() {
    if (!this.scroller || !this.columns) return;
    const width = this.scroller.clientWidth;
    if (width === this.width) return;
    this.width = width;
    const available = width - 8;
    this.narrow = available < 560;
    this.fitSize = MIN_SEAT_PX;
    for (let seat = MAX_FIT_PX; seat >= MIN_SEAT_PX; seat -= 1) {
      if (this.measure(seat).width <= available) {
        this.fitSize = seat;
        break;
      }
    }
    if (!this.zoomable || (this.zoom !== null && this.zoom <= this.fitSize)) this.zoom = null;
    this.apply();
  }

  /** Zooming is offered only where the fitted room's seats are too small to hit. */
  get zoomable() {
    return this.fitSize < TARGET_PX;
  }

  get size() {
    return this.zoom ?? this.fitSize;
  }

  /** Seats are pointer targets (tap to pick) at TARGET_PX and up; below, the map is an overview. */
  get choosing() {
    return this.size >= TARGET_PX;
  }

  apply() {
    const size = this.measure(this.size);
    const style = this.frame.style;
    style.setProperty("--seat", `${size.seat}px`);
    style.setProperty("--seat-h", `${size.height}px`);
    style.setProperty("--gap", `${size.gap}px`);
    style.setProperty("--aisle", `${size.aisle}px`);
    this.grid.dataset.narrow = this.narrow ? "true" : "false";
    this.frame.dataset.mode = !this.zoomable ? "fit" : this.choosing ? "pick" : "overview";
    this.tools.hidden = !this.zoomable;
    this.enableTool("out", this.zoom !== null);
    this.enableTool("in", this.size < MAX_ZOOM_PX);
    // In the overview no seat is a tab stop: the keyboard reaches the zoom buttons, then the seats.
    const focused = this.buttons.get(this.focusId);
    if (focused) focused.tabIndex = this.choosing ? 0 : -1;
    this.updateEdges();
  }

  /** A tool button that goes out of use hands the keyboard focus, if it had it, to its opposite. */
  enableTool(action, enabled) {
    const button = this.tools.querySelector(`[data-map="${action}"]`);
    if (!enabled && document.activeElement === button) this.tools.querySelector(`[data-map="${OPPOSITE_TOOL[action]}"]`).focus();
    button.disabled = !enabled;
  }

  /**
   * Zoom to a seat size, keeping what is under the point (clientX, clientY) under it: the seat nearest the
   * point is measured before and after, and the map and the page scroll by the difference.
   */
  zoomTo(seatSize, x, y) {
    if (!this.zoomable) return;
    const size = Math.round(Math.min(MAX_ZOOM_PX, Math.max(this.fitSize, seatSize)));
    if (size === this.size) return;
    const anchor = this.nearestSeat(x, y);
    const before = anchor?.getBoundingClientRect();
    this.zoom = size <= this.fitSize ? null : size;
    this.apply();
    if (!anchor) return;
    const after = anchor.getBoundingClientRect();
    const scale = after.width / before.width;
    this.scroller.scrollLeft += after.left + (x - before.left) * scale - x;
    window.scrollBy(0, after.top + (y - before.top) * scale - y);
    this.updateEdges();
  }

  nearestSeat(x, y) {
    const hit = document.elementFromPoint(x, y)?.closest?.("button.seat");
    if (hit && this.grid.contains(hit)) return hit;
    let best = null;
    let bestDistance = Infinity;
    for (const button of this.buttons.values()) {
      const r = button.getBoundingClientRect();
      const distance = (r.left + r.width / 2 - x) ** 2 + (r.top + r.height / 2 - y) ** 2;
      if (distance < bestDistance) {
        best = button;
        bestDistance = distance;
      }
    }
    return best;
  }

  /** The point a button zoom keeps still: the focused seat if it is in view, else the middle of the visible map. */
  viewCentre() {
    const focused = this.buttons.get(this.focusId);
    const box = this.scroller.getBoundingClientRect();
    const top = Math.max(box.top, 0);
    const bottom = Math.min(box.bottom, window.innerHeight);
    if (focused && this.engaged) {
      const r = focused.getBoundingClientRect();
      if (r.left >= box.left && r.right <= box.right && r.top >= top && r.bottom <= bottom) {
        return [r.left + r.width / 2, r.top + r.height / 2];
      }
    }
    return [box.left + box.width / 2, (top + bottom) / 2];
  }

  onTool(action) {
    if (action === "left" || action === "right") {
      const step = this.scroller.clientWidth * 0.75 * (action === "left" ? -1 : 1);
      this.scroller.scrollBy({ left: step, behavior: "smooth" });
      return;
    }
    const [x, y] = this.viewCentre();
    if (action === "in") this.zoomTo(this.choosing ? this.size * 1.35 : Math.max(PICK_SEAT_PX, this.size), x, y);
    else this.zoomTo(this.size >= PICK_SEAT_PX * 1.2 ? this.size / 1.35 : this.fitSize, x, y);
  }

  /** Two fingers pinch the map's zoom (the page itself is not zoomed there); one finger scrolls natively. */
  onTouch(event) {
    const touches = event.touches;
    if (event.type === "touchstart" && touches.length === 2 && this.zoomable) {
      this.pinch = { distance: touchDistance(touches), size: this.size };
    } else if (event.type === "touchmove" && this.pinch && touches.length === 2) {
      event.preventDefault();
      const x = (touches[0].clientX + touches[1].clientX) / 2;
      const y = (touches[0].clientY + touches[1].clientY) / 2;
      this.zoomTo(this.pinch.size * (touchDistance(touches) / this.pinch.distance), x, y);
    } else if ((event.type === "touchend" || event.type === "touchcancel") && this.pinch && touches.length < 2) {
      this.pinch = null;
      this.quietUntil = event.timeStamp + DOUBLE_TAP_MS;
    }
  }

  /** A trackpad pinch (ctrl + wheel) zooms the map instead of the page where the map is zoomable. */
  onWheel(event) {
    if (!event.ctrlKey || !this.zoomable) return;
    event.preventDefault();
    this.zoomTo(this.size * Math.exp(-event.deltaY / 200), event.clientX, event.clientY);
  }

  queueEdges() {
    if (this.edgesQueued) return;
    this.edgesQueued = true;
    requestAnimationFrame(() => {
      this.edgesQueued = false;
      this.updateEdges();
    });
  }

  /** Mark the sides with more seats beyond them, and say which seats of the widest row are in view. */
  updateEdges() {
    const s = this.scroller;
    const more = s.scrollWidth - s.clientWidth;
    const left = s.scrollLeft > EDGE_SLACK_PX;
    const right = s.scrollLeft < more - EDGE_SLACK_PX;
    this.frame.dataset.moreLeft = left ? "true" : "false";
    this.frame.dataset.moreRight = right ? "true" : "false";
    this.enableTool("left", left);
    this.enableTool("right", right);
    if (!this.zoomable) return;
    let text = "Tap where you want to sit to zoom in.";
    if (this.choosing && (left || right)) {
      const box = s.getBoundingClientRect();
      const label = this.grid.querySelector(".row-label")?.getBoundingClientRect();
      const from = Math.max(box.left, label ? label.right : box.left) - 1;
      const shown = this.longestRow.filter((b) => {
        const r = b.getBoundingClientRect();
        return r.left >= from && r.right <= box.right + 1;
      }).map((b) => Number(b.dataset.number));
      text = shown.length
        ? `Seats ${shown[0]}–${shown.at(-1)} of ${this.columns} in view: swipe or use the arrows for more.`
        : "Swipe or use the arrows to see more seats.";
    } else if (this.choosing) {
      text = "Every seat is in view. Tap a seat to pick it.";
    }
    if (this.hint.textContent !== text) this.hint.textContent = text;
  }

  destroy() {
    this.resizer.disconnect();
  }
}

function touchDistance(touches) {
  return Math.hypot(touches[0].clientX - touches[1].clientX, touches[0].clientY - touches[1].clientY);
}
