/**
 * The session page: seat map + checkout panel. Seats come from the live snapshot and its `seats` changes
 * (applied only when a change's version is newer); Hold and Release go over the WebSocket, Buy over REST with
 * one Idempotency-Key per hold; a countdown follows the server's expiresAt corrected for clock skew.
 */

import { api } from "./api.js";
import { bestAvailableControl, strandedBy, strandedHint } from "./beyond.js";
import {
  bySeatOrder, clock, epochMs, h, icon, money, plural, posterStyle, runtime, seatCode, seatList, seatName, showDay, showTime, uuid4,
} from "./format.js";
import { clearStoredHold, ensureGuest, forgetGuest, storedHold, storeHold } from "./guest.js";
import { LiveChannel } from "./live.js";
import { banner, clearBanner, connectionPill, toast } from "./notify.js";
import { SEAT_VIEWS, SeatMap } from "./seatmap.js";
import { openTickets } from "./tickets.js";
import { WaitingRoom } from "./waiting-room.js";
import { WaitlistControls } from "./waitlist.js";

/** The server enforces MAX_SEATS_PER_HOLD (default 10); the page stops at the same number to say so early. */
const MAX_SEATS = 10;
const TICK_MS = 250;
const URGENT_MS = 10000;

/** Friendly words for the contract's stable error codes. */
const HOLD_ERRORS = {
  invalid_seat_count: `A hold takes 1 to ${MAX_SEATS} seats.`,
  duplicate_seats: "The same seat was picked twice; please pick again.",
  hold_quota_exceeded: "You already hold the most seats one person may hold. Buy or release some first.",
  session_started: "This show has already started, so it can no longer be booked.",
  seats_not_in_session: "Those seats are not part of this show. Reload the page and pick again.",
  rate_limited: "Too many tries in a short time. Wait a few seconds and try again.",
  unauthorized: "Your guest pass was not recognised; we made you a new one. Try again.",
  redis_unavailable: "The box office is busy right now. Try again in a moment.",
  database_unavailable: "The box office is busy right now. Try again in a moment.",
  seats_unavailable: "Not that many seats are free any more. Try fewer, or pick them on the map.",
  address_quota_exceeded: "This connection already holds as many seats as it may. Buy or release some first.",
  overloaded: "The box office is busy right now. Try again in a moment.",
  not_admitted: "So many people want this show that it now has a waiting line. You are in it: the seat map opens when it is your turn.",
};

export function mountSessionPage(main, sessionId) {
  const page = new SessionPage(main, sessionId);
  page.start();
  return page;
}

class SessionPage {
  constructor(main, sessionId) {
    this.main = main;
    this.sessionId = sessionId;
    this.session = null;
    this.roomName = "";
    this.seats = new Map();
    this.selection = new Set();
    this.inflight = new Set();
    this.softTaken = new Set();
    this.hold = null;
    this.phase = "browse";
    this.lastPurchase = null;
    this.skewMs = 0;
    this.holdTtlSeconds = null;
    this.watchers = null;
    this.snapshots = 0;
    this.connState = "connecting";
    this.live = null;
    this.map = null;
    this.guest = null;
    this.ticker = null;
    this.destroyed = false;
    this.lostAt = 0;
    this.pendingHold = null;
    this.waitlist = new WaitlistControls(this);
    this.bestQuantity = 2;
  }

  // ------------------------------------------------------------------ lifecycle

  async start() {
    this.renderShell();
    let session, seatMap;
    try {
      [session, seatMap] = await Promise.all([
        api(`/sessions/${encodeURIComponent(this.sessionId)}`),
        api(`/sessions/${encodeURIComponent(this.sessionId)}/seats`),
      ]);
    } catch (error) {
      if (this.destroyed) return;
      this.renderFailure(error);
      return;
    }
    if (this.destroyed) return;
    this.session = session;
    this.bookable = Date.parse(session.startShowTime) > Date.now();
    document.title = `${session.movieTitle} · pick your seats · boxoffice`;
    this.roomName = seatMap.room?.name || "";
    this.renderHero();
    if (!this.roomName) {
      api(`/rooms/${encodeURIComponent(session.roomId)}`).then((room) => {
        this.roomName = room.name;
        this.renderHero();
      }).catch(() => {});
    }

    // Paint the map from REST at once; the live snapshot (with `mine` flags) replaces it a moment later.
    this.replaceSeats(seatMap.seats.map((s) => ({
      id: s.id, status: s.status, version: s.version, rowLabel: s.seat.rowLabel, seatNumber: s.seat.seatNumber,
      mine: false, reservationId: null,
    })), { flash: false });
    this.renderPanel();

    try {
      this.guest = await ensureGuest();
    } catch {
      toast("We could not create your guest pass, so you can watch the seats but not hold them yet.", { tone: "warn" });
    }
    if (this.destroyed) return;
    await this.restoreHold();
    if (this.destroyed) return;
    await this.waitlist.restore();
    if (this.destroyed) return;
    this.live = new LiveChannel(this.sessionId, {
      token: this.guest?.token ?? null,
      onMessage: (msg) => this.onMessage(msg),
      onState: (state, info) => this.onConnection(state, info),
    });
    this.queue = new WaitingRoom(this.main, this.live, {
      onAdmitted: () => toast("It is your turn: pick your seats.", { tone: "success", key: "queue" }),
    });
    this.live.connect();
    this.ticker = setInterval(() => this.tick(), TICK_MS);
  }

  destroy() {
    this.destroyed = true;
    clearInterval(this.ticker);
    this.waitlist.follow();
    this.live?.close();
    this.queue?.destroy();
    this.map?.destroy();
    clearBanner();
    connectionPill("idle", "");
    document.body.removeAttribute("data-node-id");
    const nodeInfo = document.getElementById("node-info");
    if (nodeInfo) nodeInfo.textContent = "";
  }

  /** After a reload: the reservation kept in localStorage comes back with its countdown and its Buy button. */
  async restoreHold() {
    const kept = storedHold();
    if (!kept || kept.sessionId !== this.sessionId || !this.guest || kept.userId !== this.guest.id) return;
    try {
      const reservation = await api(`/reservations/${kept.reservationId}`, { token: this.guest.token });
      if (reservation.status === "PENDING" && epochMs(reservation.expiresAt) > Date.now() + this.skewMs) {
        this.startHold(reservation, kept.idempotencyKey, { announce: false });
        toast(`Welcome back: ${seatList(reservation.seats)} ${reservation.seats.length === 1 ? "is" : "are"} still held for you.`,
          { tone: "info", key: "hold" });
        return;
      }
    } catch {
      // Unknown or no longer ours: forget it below.
    }
    clearStoredHold(kept.reservationId);
  }

  // ------------------------------------------------------------------ live messages

  onMessage(msg) {
    if (this.destroyed) return;
    if (typeof msg.watchers === "number") this.setWatchers(msg.watchers);
    this.queue?.onMessage(msg);
    switch (msg.type) {
      case "snapshot": this.onSnapshot(msg); break;
      case "seats": this.onSeats(msg); if (this.waitlist.entry) this.waitlist.follow(true); break;
      case "waitlist.offer": this.waitlist.onOffer(msg); break;
      case "presence":
      case "watchers":
        this.setWatchers(msg.count ?? msg.watchers);
        break;
      default: break;
    }
  }

  onSnapshot(msg) {
    const serverNow = epochMs(msg.serverTime);
    if (serverNow) this.skewMs = serverNow - Date.now();
    if (msg.holdTtlSeconds) this.holdTtlSeconds = msg.holdTtlSeconds;
    const reconnect = this.snapshots > 0 || this.lostAt > 0;
    this.snapshots += 1;
    const nodeInfo = document.getElementById("node-info");
    if (msg.nodeId) {
      document.body.dataset.nodeId = msg.nodeId;
      if (nodeInfo) nodeInfo.textContent = `served live by node ${msg.nodeId}`;
    }

    const fresh = msg.seats.map((s) => ({
      id: s.id, status: s.status, version: s.version, rowLabel: s.rowLabel, seatNumber: s.seatNumber,
      mine: !!s.mine, reservationId: s.reservationId ?? null,
    }));
    const sameLayout = fresh.length === this.seats.size && fresh.every((s) => this.seats.has(s.id));
    if (!sameLayout) {
      this.replaceSeats(fresh, { flash: false });
    } else {
      // The snapshot is the truth at its moment: replace every seat, highlight the ones that look different now.
      const before = new Map([...this.seats.values()].map((s) => [s.id, this.viewOf(s)]));
      this.softTaken.clear();
      for (const s of fresh) Object.assign(this.seats.get(s.id), s);
      for (const s of this.seats.values()) {
        this.map.refresh(s.id, { flash: reconnect && before.get(s.id) !== this.viewOf(s) });
      }
    }
    this.reconcileAfterSync(reconnect);
    this.renderPanel();
    this.renderAvailability();
    if (this.pendingHold) this.resumeHold();
  }

  /** After a snapshot: drop selected seats that were taken, and settle a hold that ended while we were away. */
  reconcileAfterSync(reconnect) {
    const taken = [...this.selection].filter((id) => !this.inflight.has(id))
      .map((id) => this.seats.get(id)).filter((s) => !s || s.status !== "AVAILABLE");
    for (const seat of taken) if (seat) this.selection.delete(seat.id);
    if (taken.length && reconnect) {
      toast(`${seatList(taken.filter(Boolean))} ${taken.length === 1 ? "was" : "were"} just taken by someone else while you were offline.`,
        { tone: "warn", key: "taken" });
    }
    if (this.hold && this.phase !== "buying" && this.phase !== "releasing") {
      const seats = [...this.hold.seatIds].map((id) => this.seats.get(id)).filter(Boolean);
      if (seats.length && seats.every((s) => s.status === "SOLD")) this.finishElsewhere("sold");
      else if (seats.some((s) => s.status !== "RESERVED" || !s.mine)) this.endHold("expired");
    }
    for (const id of this.selection) this.map.refresh(id);
  }

  onSeats(msg) {
    const takenFromSelection = [];
    const holdLost = [];
    const holdSold = [];
    const looking = this.map.lookingAt();
    let takenWhileLooking = null;
    for (const change of msg.changes || []) {
      const seat = this.seats.get(change.id);
      if (!seat || !(change.version > seat.version)) continue;
      const before = this.viewOf(seat);
      const wasMine = seat.mine;
      seat.status = change.status;
      seat.version = change.version;
      seat.reservationId = change.reservationId ?? (change.status === "AVAILABLE" ? null : seat.reservationId);
      this.softTaken.delete(seat.id);
      const inHold = !!this.hold && this.hold.seatIds.has(seat.id);
      if (change.status === "AVAILABLE") seat.mine = false;
      else if (change.status === "RESERVED") {
        seat.mine = inHold && (!change.reservationId || change.reservationId === this.hold.id);
      } else seat.mine = wasMine || inHold;
      const after = this.viewOf(seat);
      this.map.refresh(seat.id, { flash: before !== after });
      if (seat.id === looking && before === "available" && (after === "other" || after === "sold")) takenWhileLooking = seat;

      if (this.selection.has(seat.id) && change.status !== "AVAILABLE" && !this.inflight.has(seat.id)) {
        this.selection.delete(seat.id);
        this.map.refresh(seat.id);
        takenFromSelection.push(seat);
      }
      if (inHold && change.status === "AVAILABLE") holdLost.push(seat);
      if (inHold && change.status === "SOLD") holdSold.push(seat);
    }
    if (takenFromSelection.length) {
      toast(`${seatList(takenFromSelection)} ${takenFromSelection.length === 1 ? "was" : "were"} just taken by someone else, so we removed ${takenFromSelection.length === 1 ? "it" : "them"} from your selection.`,
        { tone: "warn", key: "taken" });
    } else if (takenWhileLooking) {
      toast(`${seatName(takenWhileLooking)} was just ${takenWhileLooking.status === "SOLD" ? "sold" : "taken"} by someone else.`,
        { tone: "warn", key: "taken" });
    }
    if (this.hold && this.phase === "held") {
      if (holdLost.length) this.endHold("expired");
      else if (holdSold.length && [...this.hold.seatIds].every((id) => this.seats.get(id)?.status === "SOLD")) {
        this.finishElsewhere("sold");
      }
    }
    this.renderPanel();
    this.renderAvailability();
  }

  onConnection(state, info) {
    if (this.destroyed) return;
    this.connState = state;
    if (state === "open") {
      this.queue?.join();
      connectionPill("live", "Live");
      if (this.lostAt) {
        clearBanner();
        toast(this.snapshots > 0 ? "Reconnected. The seat map is up to date again." : "Live seat updates connected.",
          { tone: "success", key: "conn" });
        this.lostAt = 0;
      }
    } else if (state === "connecting") {
      connectionPill("connecting", "Connecting…");
    } else if (state === "reconnecting") {
      connectionPill("reconnecting", "Reconnecting…");
      // The banner (a status live region) says it once; no toast on top of it.
      if (!this.lostAt) this.lostAt = Date.now();
      this.renderConnectionBanner();
    }
    this.renderPanel();
  }

  renderConnectionBanner() {
    if (this.connState !== "reconnecting" || !this.live) return;
    const wait = Math.max(0, this.live.retryAt - Date.now());
    const when = wait > 400 ? `in ${Math.ceil(wait / 1000)} s` : "now";
    const text = this.live.everOpened
      ? `Connection lost: the seat map may be out of date. Reconnecting ${when}…`
      : `Live seat updates are not connected yet. Retrying ${when}…`;
    banner(text, {
      tone: "warn", action: { label: "Retry now", run: () => this.live?.reconnectNow() },
    });
  }

  setWatchers(count) {
    if (typeof count !== "number" || count < 1) return;
    this.watchers = count;
    const el = this.main.querySelector(".watchers");
    if (!el) return;
    el.hidden = false;
    el.querySelector("span").textContent = count === 1 ? "Only you are watching" : `${count} people watching`;
  }

  // ------------------------------------------------------------------ seats and selection

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

  // ------------------------------------------------------------------ hold, buy, release

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
      if (this.live?.isOpen()) {
        const reply = await this.live.request({ type: "release", reservationId: hold.id });
        if (reply.type === "error") throw Object.assign(new Error(reply.message), { code: reply.code });
      } else {
        await api(`/reservations/${hold.id}`, { method: "DELETE", token: this.guest?.token });
      }
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

  // ------------------------------------------------------------------ rendering

  renderShell() {
    this.main.replaceChildren(
      h("div", { class: "session-page" },
        h("section", { class: "hero", "aria-live": "off" },
          h("a", { class: "back-link", href: "/", "data-route": "home" }, icon("back"), h("span", {}, "All sessions")),
          h("div", { class: "hero-body" }, h("div", { class: "hero-skeleton" }))),
        h("div", { class: "booking" },
          h("section", { class: "stage", "aria-label": "Seat map" },
            h("div", { class: "theater" }, h("div", { class: "map-loading" }, h("span", { class: "spinner" }), "Loading the seat map…")),
            legend()),
          h("aside", { class: "checkout", "aria-labelledby": "checkout-title" }))),
    );
    document.body.dataset.view = "session";
  }

  renderFailure(error) {
    const notFound = error.status === 404 || error.status === 400;
    this.main.replaceChildren(h("section", { class: "empty-state" },
      icon("film", "empty-icon"),
      h("h1", {}, notFound ? "This session does not exist" : "The box office is not answering"),
      h("p", {}, notFound ? "The link may be old, or the session was removed." : error.message),
      h("a", { class: "btn btn-primary", href: "/", "data-route": "home" }, "See all sessions")));
  }

  renderHero() {
    const s = this.session;
    const body = this.main.querySelector(".hero-body");
    if (!body || !s) return;
    body.replaceChildren(
      h("div", { class: "poster", style: posterStyle(s.movieTitle), "aria-hidden": "true" }, s.movieTitle.trim().charAt(0).toUpperCase()),
      h("div", { class: "hero-text" },
        h("h1", { class: "hero-title" }, s.movieTitle),
        h("ul", { class: "hero-meta" },
          h("li", {}, icon("calendar"), h("span", {}, `${showDay(s.startShowTime)} · ${showTime(s.startShowTime)}`)),
          runtime(s.startShowTime, s.endShowTime) ? h("li", {}, icon("clock"), h("span", {}, runtime(s.startShowTime, s.endShowTime))) : null,
          this.roomName ? h("li", {}, icon("pin"), h("span", {}, this.roomName)) : null,
          h("li", {}, icon("ticket"), h("span", {}, `${money(s.ticketPrice)} per seat`)))),
      h("div", { class: "hero-side" },
        h("p", { class: "availability", "aria-live": "off" }),
        h("p", { class: "watchers", hidden: this.watchers ? null : true }, icon("eye"), h("span", {}, ""))),
    );
    if (this.watchers) this.setWatchers(this.watchers);
    if (!this.bookable) {
      body.append(h("p", { class: "notice" }, "This show has started: the seat map is shown for reference, booking is closed."));
    }
    this.renderAvailability();
  }

  renderAvailability() {
    const el = this.main.querySelector(".availability");
    if (!el || !this.seats.size) return;
    const free = [...this.seats.values()].filter((s) => s.status === "AVAILABLE").length;
    const ratio = free / this.seats.size;
    el.dataset.level = ratio === 0 ? "none" : ratio < 0.2 ? "low" : "ok";
    el.replaceChildren(
      h("strong", {}, free === 0 ? "Sold out" : `${free}`),
      free === 0 ? "" : ` of ${this.seats.size} seats free`,
    );
  }

  renderPanel() {
    const panel = this.main.querySelector(".checkout");
    if (!panel || !this.session) return;
    const price = this.session.ticketPrice;
    const phase = this.phase;
    const holding = !!this.hold && (phase === "held" || phase === "buying" || phase === "releasing");
    const listed = holding
      ? [...this.hold.seatIds].map((id) => this.seats.get(id)).filter(Boolean)
      : [...this.selection].map((id) => this.seats.get(id)).filter(Boolean);
    listed.sort(bySeatOrder);
    const total = listed.length * price;
    panel.dataset.phase = phase;

    const head = h("div", { class: "checkout-head" },
      h("h2", { id: "checkout-title" }, phase === "bought" ? "You're going!" : "Your seats"),
      h("span", { class: "checkout-count" }, listed.length ? plural(listed.length, "seat") : ""));

    const parts = [head];
    if (holding) parts.push(this.timerBlock());

    if (phase === "bought" && this.lastPurchase) {
      parts.push(h("div", { class: "bought" },
        h("div", { class: "bought-icon", "aria-hidden": "true" }, icon("check")),
        h("p", {}, `${plural(this.lastPurchase.seats.length, "ticket")} bought: `,
          h("strong", {}, this.lastPurchase.seats.map(seatCode).join(", "))),
        h("p", { class: "bought-total" }, `Paid ${money(this.lastPurchase.total)}`),
        h("button", { class: "btn btn-secondary", type: "button", "data-action": "tickets", onclick: () => openTickets() },
          icon("ticket"), "View my tickets")));
      parts.push(h("p", { class: "hint" }, "Want more seats? Pick them on the map."));
    } else if (!listed.length && this.waitlist.shows()) {
      parts.push(this.waitlist.panel());
    } else if (!listed.length) {
      parts.push(h("div", { class: "empty-pick" },
        h("div", { class: "empty-seat", "aria-hidden": "true" }),
        h("p", {}, this.bookable ? "Pick your seats on the map." : "Booking is closed for this show."),
        this.bookable ? h("p", { class: "hint" }, `Click or tap a seat, or use the arrow keys and Enter. Up to ${MAX_SEATS} seats.`) : null,
        this.bookable ? bestAvailableControl({
          maxSeats: MAX_SEATS, quantity: this.bestQuantity,
          disabled: (phase !== "browse" && phase !== "bought") || this.connState !== "open",
          onChange: (n) => { this.bestQuantity = n; },
          hold: (n) => this.doBestHold(n),
        }) : null));
    } else {
      parts.push(h("ul", { class: "chips", "aria-label": holding ? "Seats held for you" : "Selected seats" },
        listed.map((seat) => h("li", { class: `chip${holding ? " chip-held" : ""}` },
          h("span", { class: "chip-code" }, seatCode(seat)),
          h("span", { class: "chip-name" }, `Row ${seat.rowLabel} · Seat ${seat.seatNumber}`),
          h("span", { class: "chip-price" }, money(price)),
          holding ? null : h("button", {
            class: "chip-remove", type: "button", "aria-label": `Remove ${seatName(seat)} from your selection`,
            onclick: () => this.activate(seat),
          }, "×")))));
      const hint = holding ? strandedHint(this.hold.stranded || [], true)
        : strandedHint(strandedBy(this.seats, [...this.selection]));
      if (hint) parts.push(hint);
    }

    if (listed.length && phase !== "bought") {
      parts.push(h("div", { class: "total-row" },
        h("span", {}, `${plural(listed.length, "ticket")} × ${money(price)}`),
        h("strong", { class: "total" }, money(total))));
    }

    const actions = h("div", { class: "actions" });
    const liveDown = this.connState !== "open";
    if (holding) {
      actions.append(
        h("button", {
          class: "btn btn-primary btn-block", type: "button", "data-action": "buy",
          disabled: phase !== "held", "aria-busy": phase === "buying" ? "true" : null, onclick: () => this.doBuy(),
        }, phase === "buying" ? [h("span", { class: "spinner spinner-small" }), "Buying…"] : `Buy ${plural(listed.length, "ticket")} · ${money(total)}`),
        h("button", {
          class: "btn btn-ghost btn-block", type: "button", "data-action": "release",
          disabled: phase !== "held", "aria-busy": phase === "releasing" ? "true" : null, onclick: () => this.doRelease(),
        }, phase === "releasing" ? "Releasing…" : "Release seats"),
      );
      const extend = this.waitlist.extendButton();
      if (extend) actions.append(extend);
    } else if (phase !== "bought" || listed.length) {
      const busy = phase === "holding";
      actions.append(...[
        h("button", {
          class: "btn btn-primary btn-block", type: "button", "data-action": "hold",
          disabled: busy || !listed.length || liveDown || !this.bookable, "aria-busy": busy ? "true" : null,
          onclick: () => this.doHold(),
        }, busy ? [h("span", { class: "spinner spinner-small" }), "Holding…"]
          : liveDown && listed.length ? "Waiting for connection…"
            : listed.length ? `Hold ${plural(listed.length, "seat")}` : "Hold seats"),
        listed.length > 0 && !busy ? h("button", {
          class: "btn btn-ghost btn-block", type: "button", "data-action": "clear", onclick: () => this.clearSelection(),
        }, "Clear selection") : null,
      ].filter(Boolean));
    }
    if (actions.childElementCount) parts.push(actions);
    if (!holding && phase !== "bought") {
      const ttl = this.holdTtlSeconds || 30;
      parts.push(h("p", { class: "fine-print" }, `Holding keeps the seats yours for ${ttl} seconds while you pay. Everyone else sees them as taken at once.`));
    }
    const hadFocus = panel.contains(document.activeElement) ? document.activeElement.dataset.action : null;
    panel.replaceChildren(...parts);
    if (hadFocus) panel.querySelector(`[data-action="${hadFocus}"]`)?.focus();
    if (this.hold) this.renderTimer(this.hold.expiresAtMs - (Date.now() + this.skewMs));
    else if (document.title.startsWith("⏱")) document.title = `${this.session.movieTitle} · pick your seats · boxoffice`;
  }

  timerBlock() {
    const r = 26;
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 60 60");
    svg.setAttribute("class", "timer-ring");
    svg.setAttribute("aria-hidden", "true");
    for (const cls of ["timer-track", "timer-progress"]) {
      const c = document.createElementNS(ns, "circle");
      c.setAttribute("cx", "30");
      c.setAttribute("cy", "30");
      c.setAttribute("r", String(r));
      c.setAttribute("class", cls);
      svg.append(c);
    }
    return h("div", { class: "timer", role: "timer", "aria-label": "Time left on your hold" },
      h("div", { class: "timer-dial" }, svg, h("span", { class: "timer-clock" }, "")),
      h("div", { class: "timer-text" },
        h("strong", {}, "Seats held for you"),
        h("span", { class: "timer-sub" }, "Complete your purchase before the timer ends; then they go back on sale.")));
  }

  renderTimer(leftMs) {
    const panel = this.main.querySelector(".checkout");
    const clockEl = panel?.querySelector(".timer-clock");
    if (!clockEl || !this.hold) return;
    const left = Math.max(0, leftMs);
    const text = clock(left);
    if (clockEl.textContent !== text) {
      clockEl.textContent = text;
      document.title = `⏱ ${text} · ${this.session.movieTitle} · boxoffice`;
    }
    const progress = panel.querySelector(".timer-progress");
    const fraction = Math.min(1, left / (this.hold.totalMs || 1));
    const length = 2 * Math.PI * 26;
    progress.style.strokeDasharray = `${length}`;
    progress.style.strokeDashoffset = `${length * (1 - fraction)}`;
    panel.querySelector(".timer").dataset.urgent = left <= URGENT_MS ? "true" : "false";
  }
}

const LEGEND = { available: "Available", selected: "Selected", mine: "Held by you", other: "Held by others", sold: "Sold" };

function legend() {
  return h("ul", { class: "legend", "aria-label": "Legend" },
    Object.keys(SEAT_VIEWS).map((view) => h("li", {},
      h("span", { class: "seat seat-swatch", "data-state": view, "aria-hidden": "true" }),
      h("span", {}, LEGEND[view]))));
}
