/**
 * The session page's seats (picker.js): what each seat looks like to this user, the seat map, and picking and
 * unpicking seats.
 */

import { money, seatName } from "./format.js";
import { toast } from "./notify.js";
import { SeatMap } from "./seatmap.js";
import { MAX_SEATS } from "./picker-rules.js";

export class SeatSelection {
  /** What a seat looks like to this user (a key of SEAT_VIEWS). */
  viewOf(seat) {
    if (seat.status === "SOLD") return "sold";
    if (seat.status === "RESERVED") {
      if (seat.mine || (this.hold && (this.hold.seatIds.has(seat.id) || seat.reservationId === this.hold.id))) return "mine";
      // Our own hold is on its way: the broadcast may arrive before the reply.
      if (this.inflight.has(seat.id)) return "selected";
      return "other";
    }
    return this.selection.has(seat.id) ? "selected" : "available";
  }

  replaceSeats(list, { flash }) {
    this.seats = new Map(list.map((s) => [s.id, s]));
    for (const id of [...this.selection]) if (!this.seats.has(id)) this.selection.delete(id);
    if (!this.map) {
      this.map = new SeatMap(this.main.querySelector(".theater"), {
        viewOf: (seat) => this.viewOf(seat),
        onActivate: (seat) => this.activate(seat),
        priceOf: () => money(this.session?.ticketPrice),
      });
    }
    this.map.build(list);
    if (flash) for (const s of list) this.map.refresh(s.id, { flash: true });
    this.renderAvailability();
  }

  activate(seat) {
    if (!this.bookable) {
      toast("This show has already started, so it can no longer be booked.", { tone: "info", key: "seat" });
      return;
    }
    const view = this.viewOf(seat);
    if (view === "sold") {
      toast(`${seatName(seat)} is already sold. Pick another seat.`, { tone: "info", key: "seat" });
      return;
    }
    if (view === "other") {
      toast(`${seatName(seat)} was just taken: someone else is holding it right now. If they do not buy it, it comes back in a moment.`,
        { tone: "warn", key: "seat" });
      return;
    }
    if (view === "mine") {
      toast(`${seatName(seat)} is held for you. Buy it before the timer runs out, or release it.`, { key: "seat" });
      return;
    }
    if (this.inflight.size) return;
    if (this.hold) {
      toast("You are already holding seats. Buy or release them before picking others.", { key: "seat" });
      return;
    }
    if (this.phase === "bought") this.phase = "browse";
    if (view === "selected") {
      this.selection.delete(seat.id);
    } else {
      if (this.selection.size >= MAX_SEATS) {
        toast(`You can pick up to ${MAX_SEATS} seats at a time.`, { tone: "info", key: "seat" });
        return;
      }
      this.selection.add(seat.id);
    }
    this.map.refresh(seat.id);
    this.renderPanel();
  }

  clearSelection() {
    const ids = [...this.selection];
    this.selection.clear();
    for (const id of ids) this.map.refresh(id);
    this.renderPanel();
  }
}
