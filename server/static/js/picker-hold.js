/**
 * The session page's hold and checkout (picker.js): Hold (picked or best available) over the WebSocket with one
 * idempotency key, resent after a drop; the hold's countdown; Buy over REST and Release.
 */

import { api } from "./api.js";
import { clock, epochMs, plural, seatCode, seatList, uuid4 } from "./format.js";
import { clearStoredHold, ensureGuest, forgetGuest, storeHold } from "./guest.js";
import { toast } from "./notify.js";
import { HOLD_ERRORS, URGENT_MS, viaSocketOrRest } from "./picker-rules.js";

export class HoldFlow {
  async doHold() {
    if (this.phase !== "browse" && this.phase !== "bought") return;
    if (!this.selection.size || this.hold) return;
    if (!this.live?.isOpen()) {
      toast("The live connection is not up yet. Your selection is kept; try again in a moment.", { tone: "warn", key: "hold" });
      return;
    }
    await this.sendHold([...this.selection], uuid4(), 0);
  }

  /** "Best available: [n] seats": the server chooses the seats and holds them in one step. */
  async doBestHold(quantity) {
    if (this.phase !== "browse" && this.phase !== "bought") return;
    if (this.hold || this.inflight.size) return;
    if (!this.live?.isOpen()) {
      toast("The live connection is not up yet. Try again in a moment.", { tone: "warn", key: "hold" });
      return;
    }
    this.clearSelection();
    await this.sendHold([], uuid4(), 0, { quantity });
  }

  /**
   * Send the hold with an idempotency key. If the connection drops (or the reply is late) the same key is sent
   * again once the socket is back: had the first try held the seats, the server answers with that reservation.
   */
  async sendHold(ids, key, attempt, best = null) {
    this.inflight = new Set(ids);
    this.phase = "holding";
    this.renderPanel();
    let reply;
    try {
      // `best`: {quantity}, the server chooses the seats (best available)
      const admission = this.queue?.admission ? { admission: this.queue.admission } : {};
      reply = await this.live.request({ type: "hold", ...(best ?? { sessionSeatIds: ids }), idempotencyKey: key, ...admission });
    } catch (error) {
      if (this.destroyed) return;
      if (attempt < 2) {
        this.pendingHold = { ids, key, attempt: attempt + 1, best };
        if (this.live.isOpen()) {
          this.resumeHold();
        } else {
          toast("The connection dropped while holding your seats. We will finish the hold as soon as it is back.",
            { tone: "warn", key: "hold" });
        }
        return;
      }
      this.inflight = new Set();
      this.phase = "browse";
      for (const id of ids) this.map.refresh(id);
      this.renderPanel();
      toast("The box office did not answer, so your seats were not held. Check the map, then try again.",
        { tone: "error", key: "hold" });
      return;
    }
    this.inflight = new Set();
    if (this.destroyed) return;
    if (reply.type === "hold.ok" && reply.reservation) {
      this.startHold(reply.reservation, uuid4(), { announce: true });
    } else {
      this.phase = "browse";
      this.holdRefused(reply, ids);
    }
    this.renderPanel();
  }

  resumeHold() {
    const pending = this.pendingHold;
    this.pendingHold = null;
    if (pending && !this.destroyed) this.sendHold(pending.ids, pending.key, pending.attempt, pending.best);
  }

  holdRefused(reply, ids) {
    const conflicts = (reply.conflicts || reply.details?.conflicts || []).filter((id) => this.seats.has(id));
    if (conflicts.length) {
      const seats = conflicts.map((id) => this.seats.get(id));
      for (const seat of seats) {
        this.selection.delete(seat.id);
        // The broadcast that shows who took it may still be on its way: show it as taken until it lands.
        if (seat.status === "AVAILABLE") {
          seat.status = "RESERVED";
          seat.mine = false;
          this.softTaken.add(seat.id);
        }
        this.map.refresh(seat.id, { flash: true });
      }
      const kept = this.selection.size;
      toast(`Sorry, ${seatList(seats)} ${seats.length === 1 ? "was" : "were"} just taken a moment before you. Nothing was held${kept === 1 ? "; your other seat is still selected" : kept ? `; your other ${kept} seats are still selected` : ""}.`,
        { tone: "warn", key: "hold", title: "Just taken" });
      this.refreshSoftTaken();
    } else {
      if (reply.code === "unauthorized") this.renewGuest();
      // The waiting room opened while this page was on the map (an admin, or the demand): take a place in line.
      if (reply.code === "not_admitted") this.queue?.join();
      toast(HOLD_ERRORS[reply.code] || reply.message || "The seats could not be held. Please try again.",
        { tone: "error", key: "hold" });
    }
    for (const id of ids) this.map.refresh(id);
  }

  /** Seats marked taken on a refusal are checked against the REST map shortly after, in case no broadcast comes. */
  refreshSoftTaken() {
    setTimeout(async () => {
      if (this.destroyed || !this.softTaken.size) return;
      try {
        const fresh = await api(`/sessions/${encodeURIComponent(this.sessionId)}/seats`);
        for (const s of fresh.seats) {
          const seat = this.seats.get(s.id);
          if (!seat || !this.softTaken.has(s.id) || s.version < seat.version) continue;
          this.softTaken.delete(s.id);
          seat.status = s.status;
          seat.version = s.version;
          this.map.refresh(s.id, { flash: true });
        }
        this.renderAvailability();
      } catch {
        // The next snapshot or change settles it.
      }
    }, 1500);
  }

  async renewGuest() {
    forgetGuest();
    try {
      this.guest = await ensureGuest();
      this.live?.setToken(this.guest.token);
    } catch {
      // Stays watch-only; the next hold attempt says so.
    }
  }

  startHold(reservation, idempotencyKey, { announce }) {
    const expiresAtMs = epochMs(reservation.expiresAt);
    const createdMs = epochMs(reservation.createdAt);
    const serverNow = Date.now() + this.skewMs;
    const ttlMs = this.holdTtlSeconds ? this.holdTtlSeconds * 1000
      : createdMs ? expiresAtMs - createdMs : Math.max(1000, expiresAtMs - serverNow);
    this.hold = {
      id: reservation.id, expiresAtMs, totalMs: ttlMs, idempotencyKey,
      seatIds: new Set(reservation.seats.map((s) => s.id)),
      seats: reservation.seats,
      // the no-orphan rule warns (docs/beyond.md): the free seats this hold leaves alone
      stranded: (reservation.warnings || []).flatMap((w) => w.sessionSeatIds || [])
        .map((id) => this.seats.get(id)).filter(Boolean),
      // A fresh hold's own message already gives its time; the warning is for a clock that runs down to it.
      warned: announce && expiresAtMs - serverNow <= URGENT_MS,
    };
    for (const s of reservation.seats) {
      const seat = this.seats.get(s.id);
      if (!seat) continue;
      // Keep the version: the broadcast of this hold (a higher version) still applies when it arrives.
      seat.status = seat.status === "SOLD" ? "SOLD" : "RESERVED";
      seat.mine = true;
      seat.reservationId = reservation.id;
      this.selection.delete(s.id);
    }
    for (const id of [...this.selection]) this.selection.delete(id);
    storeHold({
      reservationId: reservation.id, sessionId: this.sessionId, userId: this.guest?.id ?? reservation.userId,
      idempotencyKey, expiresAt: reservation.expiresAt,
    });
    this.phase = "held";
    this.map.refreshAll();
    this.renderPanel();
    this.renderAvailability();
    if (announce) {
      const seconds = Math.round((expiresAtMs - serverNow) / 1000);
      toast(`${seatList(reservation.seats)} ${reservation.seats.length === 1 ? "is" : "are"} held for you for ${clock(seconds * 1000)}. Buy before the timer runs out.`,
        { tone: "success", key: "hold", title: "Seats held" });
    }
  }

  /** The hold ended without a purchase: `expired` (timer or server sweep) or `released` (our own Release). */
  endHold(reason) {
    if (!this.hold) return;
    const hold = this.hold;
    this.hold = null;
    const seats = [];
    for (const id of hold.seatIds) {
      const seat = this.seats.get(id);
      if (!seat) continue;
      seats.push(seat);
      if (seat.status === "RESERVED" && (seat.mine || seat.reservationId === hold.id)) {
        // Shown free at once; the server's broadcast (higher version) confirms it.
        seat.status = "AVAILABLE";
        seat.reservationId = null;
      }
      seat.mine = false;
      this.map.refresh(id, { flash: true });
    }
    clearStoredHold(hold.id);
    this.phase = "browse";
    if (reason === "expired") {
      toast(`Your hold expired, so ${seatList(seats)} went back on sale. Select ${seats.length === 1 ? "it" : "them"} again to try once more.`,
        { tone: "warn", key: "hold", title: "Hold expired", timeout: 10000 });
    } else if (reason === "released") {
      toast(`Released ${seatList(seats)}. ${seats.length === 1 ? "It is" : "They are"} back on sale.`, { key: "hold" });
    } else if (reason === "gone") {
      toast("This hold is no longer active. Pick your seats again.", { tone: "warn", key: "hold" });
    }
    this.renderPanel();
    this.renderAvailability();
  }

  /** Another tab or window bought the held seats. */
  finishElsewhere() {
    const hold = this.hold;
    this.hold = null;
    clearStoredHold(hold.id);
    this.phase = "browse";
    toast(`${seatList(hold.seats)} ${hold.seats.length === 1 ? "was" : "were"} bought from another window. See My tickets.`,
      { tone: "success", key: "hold" });
    this.map.refreshAll();
    this.renderPanel();
  }

  async doBuy() {
    // The phase flips before the first await, so a second click (or Enter) finds "buying" and does nothing.
    if (this.phase !== "held" || !this.hold) return;
    const hold = this.hold;
    this.phase = "buying";
    this.renderPanel();
    try {
      const sale = await api(`/reservations/${hold.id}/confirm`, {
        method: "POST", token: this.guest?.token, headers: { "Idempotency-Key": hold.idempotencyKey },
      });
      this.completePurchase(hold, sale);
    } catch (error) {
      if (this.destroyed) return;
      if (error.code === "hold_expired") {
        this.phase = "held";
        this.endHold("expired");
        toast("Your hold expired just before the purchase went through. Nothing was charged; pick your seats again.",
          { tone: "warn", key: "hold", title: "Hold expired", timeout: 10000 });
      } else if (error.code === "not_pending") {
        await this.settleNotPending(hold);
      } else {
        // Same idempotency key on the next click: however many times it is retried, it buys once.
        this.phase = "held";
        toast(error.status === 0
          ? "We could not reach the box office to confirm. Press Buy again: you will be charged only once."
          : error.message || "The purchase did not go through. Please try again.", { tone: "error", key: "buy" });
      }
      this.renderPanel();
    }
  }

  async settleNotPending(hold) {
    try {
      const reservation = await api(`/reservations/${hold.id}`, { token: this.guest?.token });
      if (reservation.status === "CONFIRMED") {
        this.completePurchase(hold, null);
        return;
      }
    } catch {
      // Fall through: treat the hold as gone.
    }
    this.phase = "held";
    this.endHold("gone");
  }

  completePurchase(hold, sale) {
    this.hold = null;
    clearStoredHold(hold.id);
    for (const id of hold.seatIds) {
      const seat = this.seats.get(id);
      if (!seat) continue;
      seat.status = "SOLD";
      seat.mine = true;
      this.map.refresh(id, { flash: true });
    }
    const seats = sale?.seats?.length ? sale.seats : hold.seats;
    this.lastPurchase = {
      seats, total: sale?.totalAmount ?? seats.length * (this.session?.ticketPrice || 0), id: sale?.id ?? null,
    };
    this.phase = "bought";
    toast(`${plural(seats.length, "ticket")} for ${this.session.movieTitle}: ${seats.map(seatCode).join(", ")}. Enjoy the show!`,
      { tone: "success", key: "hold", title: "Purchase confirmed", timeout: 9000 });
    this.renderPanel();
    this.renderAvailability();
  }

  async doRelease() {
    if (this.phase !== "held" || !this.hold) return;
    const hold = this.hold;
    this.phase = "releasing";
    this.renderPanel();
    try {
      await viaSocketOrRest(this.live, { type: "release", reservationId: hold.id },
        () => api(`/reservations/${hold.id}`, { method: "DELETE", token: this.guest?.token }));
      this.phase = "held";
      this.endHold("released");
    } catch (error) {
      this.phase = "held";
      if (error.code === "not_pending" || error.code === "hold_expired") this.endHold("gone");
      else toast(error.message || "The seats could not be released. Please try again.", { tone: "error", key: "hold" });
      this.renderPanel();
    }
  }

  // ------------------------------------------------------------------ clock

  tick() {
    if (this.connState === "reconnecting") this.renderConnectionBanner();
    if (!this.hold) return;
    const left = this.hold.expiresAtMs - (Date.now() + this.skewMs);
    this.renderTimer(left);
    if (left <= 0 && this.phase === "held") this.endHold("expired");
    else if (left <= URGENT_MS && !this.hold.warned && this.phase === "held") {
      this.hold.warned = true;
      toast(`${plural(Math.ceil(left / 1000), "second")} left to buy ${seatList(this.hold.seats)}. Then ${this.hold.seats.length === 1 ? "it goes" : "they go"} back on sale.`,
        { tone: "warn", key: "hold", title: "Seconds left" });
    }
  }
}
