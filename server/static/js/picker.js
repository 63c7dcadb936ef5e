/**
 * The session page: seat map + checkout panel. Seats come from the live snapshot and its `seats` changes
 * (applied only when a change's version is newer); Hold and Release go over the WebSocket, Buy over REST with
 * one Idempotency-Key per hold; a countdown follows the server's expiresAt corrected for clock skew.
 */

import { api } from "./api.js";
import { epochMs, seatList } from "./format.js";
import { clearStoredHold, ensureGuest, storedHold } from "./guest.js";
import { LiveChannel } from "./live.js";
import { clearBanner, connectionPill, toast } from "./notify.js";
import { WaitingRoom } from "./waiting-room.js";
import { WaitlistControls } from "./waitlist.js";
import { TICK_MS } from "./picker-rules.js";
import { HoldFlow } from "./picker-hold.js";
import { LiveMessages } from "./picker-live.js";
import { PanelView } from "./picker-panel.js";
import { SeatSelection } from "./picker-seats.js";

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
}

/** The page's methods are kept in one module per job (picker-*.js); they all act on the one SessionPage. */
for (const part of [LiveMessages, SeatSelection, HoldFlow, PanelView]) {
  for (const name of Object.getOwnPropertyNames(part.prototype)) {
    if (name !== "constructor") Object.defineProperty(SessionPage.prototype, name, Object.getOwnPropertyDescriptor(part.prototype, name));
  }
}
