/**
 * "My tickets": the guest's purchases from GET /users/{id}/purchases, shown as ticket stubs in a dialog.
 */

import { api } from "./api.js";
import { bySeatOrder, h, icon, money, plural, seatCode, showDateTime, showDay, showTime } from "./format.js";
import { currentGuest } from "./guest.js";

export async function openTickets() {
  const dialog = document.getElementById("tickets-dialog");
  const body = document.getElementById("tickets-body");
  if (!dialog || !body) return;
  body.replaceChildren(h("div", { class: "tickets-loading" }, h("span", { class: "spinner" }), "Loading your tickets…"));
  if (!dialog.open) dialog.showModal();
  const guest = currentGuest();
  if (!guest) {
    body.replaceChildren(emptyTickets());
    return;
  }
  try {
    const purchases = await api(`/users/${guest.id}/purchases`, { token: guest.token });
    body.replaceChildren(purchases.length ? ticketList(purchases, guest) : emptyTickets());
  } catch (error) {
    body.replaceChildren(h("p", { class: "tickets-error", role: "alert" },
      error.status === 401 || error.status === 403
        ? "Your guest pass is no longer valid, so your past tickets cannot be shown on this device."
        : `Your tickets could not be loaded: ${error.message}`));
  }
}

function emptyTickets() {
  return h("div", { class: "tickets-empty" },
    icon("ticket", "empty-icon"),
    h("p", {}, "No tickets yet."),
    h("p", { class: "hint" }, "Seats you buy show up here, on this device."));
}

function ticketList(purchases, guest) {
  return h("div", { class: "ticket-list" },
    h("p", { class: "hint" }, `Signed in as ${guest.name || "guest"} on this device · ${plural(purchases.length, "purchase")}`),
    purchases.map((sale) => {
      const seats = [...(sale.seats || [])].sort(bySeatOrder);
      return h("article", { class: "ticket", "data-sale-id": sale.id, "aria-label": `${sale.movieTitle}, ${seats.map(seatCode).join(", ")}` },
        h("div", { class: "ticket-main" },
          h("p", { class: "ticket-kicker" }, `${showDay(sale.startShowTime)} · ${showTime(sale.startShowTime)}`),
          h("h3", { class: "ticket-title" }, sale.movieTitle),
          h("ul", { class: "ticket-seats", "aria-label": "Seats" },
            seats.map((s) => h("li", {}, h("span", { class: "ticket-row" }, `Row ${s.rowLabel}`), h("strong", {}, `Seat ${s.seatNumber}`))))),
        h("div", { class: "ticket-stub" },
          h("span", { class: "ticket-label" }, "Total"),
          h("strong", { class: "ticket-total" }, money(sale.totalAmount)),
          h("span", { class: "ticket-label" }, "Bought"),
          h("span", { class: "ticket-date" }, showDateTime(sale.confirmedAt)),
          h("span", { class: "ticket-code" }, `#${sale.id.slice(0, 8).toUpperCase()}`)));
    }));
}

export function setupTicketsDialog() {
  const dialog = document.getElementById("tickets-dialog");
  document.getElementById("tickets-button")?.addEventListener("click", () => openTickets());
  dialog?.querySelector("[data-close]")?.addEventListener("click", () => dialog.close());
  // A click on the backdrop (outside the sheet's box) closes it, as users expect of a sheet.
  dialog?.addEventListener("click", (event) => {
    if (event.target !== dialog) return;
    const box = dialog.getBoundingClientRect();
    const inside = event.clientX >= box.left && event.clientX <= box.right && event.clientY >= box.top && event.clientY <= box.bottom;
    if (!inside) dialog.close();
  });
}
