/**
 * The session page's waiting list and hold extension (docs/waiting-list.md). On a sold-out session the checkout
 * offers "Join the waiting list for [N] seats"; while waiting it shows the place in line; when seats are held for
 * the buyer (`waitlist.offer`, or found on reload) the checkout opens on them with their countdown. A held hold
 * gets one "More time" extension while nobody waits.
 */

import { api } from "./api.js";
import { clock, h, plural, seatList, uuid4 } from "./format.js";
import { storeHold } from "./guest.js";
import { toast } from "./notify.js";
import { HOLD_ERRORS, MAX_SEATS, viaSocketOrRest } from "./picker-rules.js";

const REFRESH_MS = 10000; // while in line, the place is read again this often (and soon after seats change)

const ERRORS = {
  ...HOLD_ERRORS,
  seats_available: "Seats are free again: pick them on the map.",
  not_on_waitlist: "You were not on the waiting list any more.",
  already_extended: "This hold was already extended once.",
  extension_not_allowed: "Others are waiting for seats, so holds cannot be extended now.",
  extension_disabled: "Holds cannot be extended here.",
  hold_expired: "Your hold has already expired.",
  hold_quota_exceeded: "You already hold as many seats as one buyer may. Buy or release some, then join.",
  address_quota_exceeded: "Buyers on your network already wait for as many seats of this show as they may. Try again later.",
};

export class WaitlistControls {
  constructor(page) {
    this.page = page;
    this.entry = null; // the buyer's place: {status: "WAITING", position, quantity, ...}
    this.quantity = 2;
    this.busy = false;
    this.refreshTimer = null;
    this.refreshDue = 0;
  }

  /** While in line: read the place again every REFRESH_MS, and shortly after seats change (others served). */
  follow(soon = false) {
    const delay = soon ? 1000 : REFRESH_MS;
    // a busy session changes seats all the time: a read already due sooner is kept, never pushed back
    if (soon && this.refreshTimer && this.refreshDue <= Date.now() + delay) return;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    if (!this.entry || this.page.destroyed) return;
    this.refreshDue = Date.now() + delay;
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      this.refresh();
    }, delay);
  }

  async refresh() {
    const page = this.page;
    if (!this.entry || !page.guest || page.destroyed) return;
    try {
      const entry = await api(this.path, { token: page.guest.token });
      if (!this.entry) return;
      if (entry.status === "WAITING") {
        const moved = entry.position !== this.entry.position;
        this.entry = entry;
        if (moved) page.renderPanel();
      } else if (entry.status === "OFFERED" && entry.reservationId && !page.hold) {
        const reservation = await api(`/reservations/${entry.reservationId}`, { token: page.guest.token });
        if (reservation.status === "PENDING") this.takeOffer(reservation);
      }
    } catch {
      // Not reachable now: try again at the next turn.
    }
    this.follow();
  }

  get path() {
    return `/sessions/${encodeURIComponent(this.page.sessionId)}/waitlist`;
  }

  /** After load: a place kept in line, or seats held for us while we were away. */
  async restore() {
    const page = this.page;
    if (!page.guest) return;
    try {
      const entry = await api(this.path, { token: page.guest.token });
      if (entry.status === "WAITING") {
        this.entry = entry;
        this.follow();
      } else if (entry.status === "OFFERED" && entry.reservationId && !page.hold) {
        const reservation = await api(`/reservations/${entry.reservationId}`, { token: page.guest.token });
        if (reservation.status === "PENDING") this.takeOffer(reservation);
      }
    } catch {
      // Not on the list (404) or unreachable: nothing to show.
    }
    page.renderPanel();
  }

  /** Call the socket when it is open, else REST (picker-rules.js viaSocketOrRest). */
  call(message, rest) {
    return viaSocketOrRest(this.page.live, message, rest);
  }

  async join() {
    const page = this.page;
    if (this.busy || !page.guest) return;
    this.busy = true;
    page.renderPanel();
    try {
      const reply = await this.call({ type: "waitlist.join", quantity: this.quantity },
        async () => ({ entry: await api(this.path, { method: "POST", token: page.guest.token, body: { quantity: this.quantity } }) }));
      this.entry = reply.entry;
      this.follow();
      toast(`You are number ${this.entry.position} in line for ${plural(this.entry.quantity, "seat")}. Keep this page open: the seats are held for you as soon as they come back.`,
        { tone: "success", key: "waitlist", title: "On the waiting list" });
    } catch (error) {
      toast(ERRORS[error.code] || error.message || "Could not join the waiting list. Please try again.", { tone: "error", key: "waitlist" });
    } finally {
      this.busy = false;
      page.renderPanel();
    }
  }

  async leave() {
    const page = this.page;
    if (this.busy || !page.guest) return;
    this.busy = true;
    try {
      await this.call({ type: "waitlist.leave" }, () => api(this.path, { method: "DELETE", token: page.guest.token }));
      toast("You left the waiting list.", { key: "waitlist" });
    } catch (error) {
      if (error.code !== "not_on_waitlist") toast(error.message || "Could not leave the waiting list.", { tone: "error", key: "waitlist" });
    } finally {
      this.entry = null;
      this.follow();
      this.busy = false;
      page.renderPanel();
    }
  }

  /** `waitlist.offer`: seats were held for us; the checkout opens on them with their countdown. */
  onOffer(msg) {
    if (msg.sessionId !== this.page.sessionId || this.page.hold) return;
    this.takeOffer(msg.reservation);
  }

  takeOffer(reservation) {
    const page = this.page;
    // not while a hold of the page's own is on its way: its answer would replace the offered one on the page (the
    // next read of the line takes the offer up again)
    if (page.phase === "holding") return;
    this.entry = null;
    this.follow();
    page.startHold(reservation, uuid4(), { announce: false });
    const left = Math.max(0, Date.parse(reservation.expiresAt) - (Date.now() + page.skewMs));
    toast(`Seats came back for you: ${seatList(reservation.seats)} ${reservation.seats.length === 1 ? "is" : "are"} held for you for ${clock(left)}. Buy before the timer runs out.`,
      { tone: "success", key: "hold", title: "Your turn", timeout: 12000 });
  }

  /** Whether the checkout shows this panel (nothing picked): while the buyer waits in line, even with a few seats
   * free that do not make up their request, so the place and "Leave" stay in view; else on a sold-out session. */
  shows() {
    const page = this.page;
    if (!page.bookable) return false;
    if (this.entry) return true;
    return page.seats.size > 0 && ![...page.seats.values()].some((s) => s.status === "AVAILABLE");
  }

  /** The panel of a sold-out session without a hold: join, or the place in line. */
  panel() {
    const page = this.page;
    if (this.entry) {
      return h("div", { class: "waitlist", "data-waitlist": "waiting" },
        h("p", { role: "status" }, h("strong", {}, `You are number ${this.entry.position} in line`),
          ` for ${plural(this.entry.quantity, "seat")}. The seats are held for you as soon as they come back.`),
        h("button", { class: "btn btn-ghost btn-block", type: "button", "data-action": "waitlist-leave",
          disabled: this.busy, onclick: () => this.leave() }, "Leave the waiting list"));
    }
    const input = h("input", {
      type: "number", min: "1", max: String(MAX_SEATS), value: String(this.quantity), id: "waitlist-quantity",
      class: "waitlist-quantity", inputmode: "numeric",
      onchange: (event) => {
        const n = Number.parseInt(event.target.value, 10);
        this.quantity = Number.isFinite(n) ? Math.min(MAX_SEATS, Math.max(1, n)) : 1;
        event.target.value = String(this.quantity);
      },
    });
    return h("div", { class: "waitlist", "data-waitlist": "join" },
      h("p", {}, h("strong", {}, "Sold out."), " Seats come back when holds end: wait in line for them."),
      h("div", { class: "waitlist-row" },
        h("button", { class: "btn btn-primary", type: "button", "data-action": "waitlist-join",
          disabled: this.busy || !page.guest || !page.bookable, onclick: () => this.join() }, "Join the waiting list for"),
        h("span", { class: "waitlist-count" }, input, h("label", { for: "waitlist-quantity" }, "seats"))));
  }

  /** "+N s" on a held hold, once. */
  extendButton() {
    const hold = this.page.hold;
    if (!hold || hold.extended) return null;
    return h("button", { class: "btn btn-ghost btn-block", type: "button", "data-action": "extend",
      disabled: this.busy || this.page.phase !== "held", onclick: () => this.extend() }, "More time (once)");
  }

  async extend() {
    const page = this.page;
    const hold = page.hold;
    if (!hold || this.busy || page.phase !== "held") return;
    this.busy = true;
    page.renderPanel();
    try {
      const reply = await this.call({ type: "extend", reservationId: hold.id },
        async () => ({ reservation: await api(`/reservations/${hold.id}/extend`, { method: "POST", token: page.guest?.token }) }));
      const expiresAtMs = Date.parse(reply.reservation.expiresAt);
      hold.totalMs += Math.max(0, expiresAtMs - hold.expiresAtMs);
      hold.expiresAtMs = expiresAtMs;
      hold.extended = true;
      hold.warned = false;
      storeHold({ reservationId: hold.id, sessionId: page.sessionId, userId: page.guest?.id ?? reply.reservation.userId,
        idempotencyKey: hold.idempotencyKey, expiresAt: reply.reservation.expiresAt });
      toast(`More time: your seats are held until the timer shows 0:00 again (${clock(expiresAtMs - (Date.now() + page.skewMs))}).`,
        { tone: "success", key: "hold" });
    } catch (error) {
      if (error.code === "already_extended" || error.code === "extension_not_allowed" || error.code === "extension_disabled") hold.extended = true;
      if (error.code === "not_pending") {  // bought or released elsewhere (another tab): the hold is over here too
        this.busy = false;
        await page.settleNotPending(hold);
        return;
      }
      if (error.code === "hold_expired") {
        this.busy = false;
        page.endHold("expired");
        return;
      }
      toast(ERRORS[error.code] || error.message || "Could not extend the hold.", { tone: "warn", key: "hold" });
    } finally {
      this.busy = false;
      page.renderPanel();
    }
  }
}
