/**
 * The session page's live messages (picker.js): the snapshot and the `seats` changes applied by version, the
 * connection's state and banner, and the watchers count.
 */

import { epochMs, seatList, seatName } from "./format.js";
import { banner, clearBanner, connectionPill, toast } from "./notify.js";

export class LiveMessages {
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
}
