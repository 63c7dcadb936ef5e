/**
 * Controls of the seat picker beyond picking seats one by one (docs/beyond.md): "Best available: [2] seats",
 * which asks the server to choose and hold the best free seats in one step (a socket `hold` with `quantity`),
 * and the no-orphan hint, which says when a selection would leave a single free seat alone.
 */

import { h, seatCode } from "./format.js";

/**
 * The "Best available" control: − [2] + and a button, every part a 44 px target (phone-first).
 * `quantity` is the number shown; `onChange(n)` keeps it across renders; `hold(n)` sends the hold.
 */
export function bestAvailableControl({ maxSeats, quantity, disabled, onChange, hold }) {
  let value = Math.min(maxSeats, Math.max(1, quantity || 2));
  const shown = h("output", { class: "best-quantity", "aria-live": "polite", "data-role": "best-quantity" }, String(value));
  const holdButton = h("button", {
    class: "btn btn-secondary best-hold", type: "button", "data-action": "best-available", disabled: disabled ? true : null,
    onclick: () => hold(value),
  }, label(value));
  const step = (delta) => {
    value = Math.min(maxSeats, Math.max(1, value + delta));
    shown.textContent = String(value);
    holdButton.textContent = label(value);
    less.disabled = value <= 1;
    more.disabled = value >= maxSeats;
    onChange?.(value);
  };
  const less = h("button", {
    class: "btn btn-icon best-step", type: "button", "data-action": "best-less", "aria-label": "One seat fewer",
    disabled: value <= 1 ? true : null, onclick: () => step(-1),
  }, "−");
  const more = h("button", {
    class: "btn btn-icon best-step", type: "button", "data-action": "best-more", "aria-label": "One seat more",
    disabled: value >= maxSeats ? true : null, onclick: () => step(1),
  }, "+");
  return h("div", { class: "best-available", role: "group", "aria-label": "Best available seats" },
    h("span", { class: "best-label" }, "Best available:"),
    h("span", { class: "best-stepper" }, less, shown, more),
    holdButton);
}

function label(n) {
  return n === 1 ? "Hold the best seat" : `Hold the best ${n} seats`;
}

/**
 * The free seats a hold of `ids` would leave alone: a free seat beside one of them whose other side is a taken
 * seat or the row's end (the server's rule, storage/best_hold.py). `seats` maps id -> {status, rowLabel,
 * seatNumber}; seats count as neighbours when their numbers follow each other in one row.
 */
export function strandedBy(seats, ids) {
  const byPlace = new Map();
  for (const seat of seats.values()) byPlace.set(`${seat.rowLabel}\u0000${seat.seatNumber}`, seat);
  const picked = new Set(ids);
  const at = (seat, offset) => byPlace.get(`${seat.rowLabel}\u0000${seat.seatNumber + offset}`);
  const takenOrEnd = (seat) => !seat || picked.has(seat.id) || seat.status !== "AVAILABLE";
  const stranded = new Map();
  for (const id of picked) {
    const seat = seats.get(id);
    if (!seat) continue;
    for (const step of [-1, 1]) {
      const beside = at(seat, step);
      if (beside && !picked.has(beside.id) && beside.status === "AVAILABLE" && takenOrEnd(at(seat, 2 * step))) {
        stranded.set(beside.id, beside);
      }
    }
  }
  return [...stranded.values()];
}

/** The hint shown under a selection that would strand seats (or a hold that did). */
export function strandedHint(stranded, held = false) {
  if (!stranded.length) return null;
  const codes = stranded.map(seatCode).join(", ");
  const one = stranded.length === 1;
  return h("p", { class: "orphan-hint", role: "note", "data-role": "orphan-hint" },
    `${held ? "Your hold leaves" : "This leaves"} ${codes} on ${one ? "its" : "their"} own: nobody books a single seat. `
      + (held ? "No harm done; you keep your seats." : "You can still hold these seats, or move over by one."));
}
