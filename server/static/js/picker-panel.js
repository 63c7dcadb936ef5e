/**
 * The session page's rendering (picker.js): the shell, the show's header, the availability line, the
 * checkout panel with its hold timer, and the legend.
 */

import { bestAvailableControl, strandedBy, strandedHint } from "./beyond.js";
import { bySeatOrder, clock, h, icon, money, plural, posterStyle, runtime, seatCode, seatName, showDay, showTime } from "./format.js";
import { SEAT_VIEWS } from "./seatmap.js";
import { openTickets } from "./tickets.js";
import { MAX_SEATS, URGENT_MS } from "./picker-rules.js";

export class PanelView {
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
