/**
 * Controls of the seat picker beyond picking seats one by one (docs/beyond.md): "Best available: [2] seats",
 * which asks the server to choose and hold the best free seats in one step (a socket `hold` with `quantity`).
 */

import { h } from "./format.js";

/** The "Best available" control; `hold(quantity)` sends the hold and returns when it is answered. */
export function bestAvailableControl({ maxSeats, disabled, hold }) {
  const input = h("input", {
    type: "number", min: "1", max: String(maxSeats), value: "2", class: "best-quantity",
    "aria-label": "Number of seats", inputmode: "numeric",
  });
  const button = h("button", {
    class: "btn btn-secondary", type: "button", "data-action": "best-available", disabled: disabled ? true : null,
    onclick: () => {
      const quantity = Math.min(maxSeats, Math.max(1, Number.parseInt(input.value, 10) || 1));
      input.value = String(quantity);
      hold(quantity);
    },
  }, "Hold the best seats");
  return h("div", { class: "best-available", role: "group", "aria-label": "Best available seats" },
    h("label", {}, "Best available: ", input, " seats"), button);
}
