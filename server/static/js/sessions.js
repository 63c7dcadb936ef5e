/**
 * The session list: every upcoming screening as a card with its time, room, price and how many seats are free.
 */

import { api } from "./api.js";
import { h, icon, money, posterStyle, runtime, showDay, showTime } from "./format.js";

const AVAILABILITY_LOOKUPS = 24;

export function mountSessionList(main) {
  let destroyed = false;
  document.body.dataset.view = "sessions";
  document.title = "boxoffice · pick your seats";
  main.replaceChildren(
    h("section", { class: "list-hero" },
      h("p", { class: "eyebrow" }, "Now showing"),
      h("h1", {}, "Pick a show, then pick your seats"),
      h("p", { class: "lede" }, "Seat maps are live: you see every seat others hold or buy the moment it happens.")),
    h("div", { class: "session-grid", "aria-busy": "true" }, [0, 1, 2].map(() => h("div", { class: "session-card skeleton" }))),
  );
  load();
  return { destroy: () => { destroyed = true; } };

  async function load() {
    const grid = main.querySelector(".session-grid");
    let sessions;
    let rooms = [];
    try {
      [sessions, rooms] = await Promise.all([api("/sessions?limit=100"), api("/rooms?limit=100").catch(() => [])]);
    } catch (error) {
      if (destroyed) return;
      grid.replaceChildren(h("p", { class: "empty-state", role: "alert" }, `The sessions could not be loaded: ${error.message}`));
      grid.removeAttribute("aria-busy");
      return;
    }
    if (destroyed) return;
    const roomNames = new Map(rooms.map((r) => [r.id, r.name]));
    const now = Date.now();
    const upcoming = sessions.filter((s) => Date.parse(s.endShowTime) > now)
      .sort((a, b) => Date.parse(a.startShowTime) - Date.parse(b.startShowTime));
    grid.removeAttribute("aria-busy");
    if (!upcoming.length) {
      grid.replaceChildren(h("div", { class: "empty-state" }, icon("film", "empty-icon"),
        h("h2", {}, "No upcoming sessions"), h("p", {}, "Run `boxoffice seed` to load the demo screening.")));
      return;
    }
    grid.replaceChildren(...upcoming.map((s) => card(s, roomNames.get(s.roomId))));
    // Free-seat counts, a few at a time so a long list does not flood the server.
    for (const s of upcoming.slice(0, AVAILABILITY_LOOKUPS)) {
      if (destroyed) return;
      try {
        const map = await api(`/sessions/${s.id}/seats`);
        const free = map.seats.filter((x) => x.status === "AVAILABLE").length;
        const el = grid.querySelector(`[data-session-id="${s.id}"] .card-free`);
        if (el) {
          el.dataset.level = free === 0 ? "none" : free / map.seats.length < 0.2 ? "low" : "ok";
          el.textContent = free === 0 ? "Sold out" : `${free} of ${map.seats.length} seats free`;
        }
      } catch {
        // The count is a nicety; the card works without it.
      }
    }
  }
}

function card(s, roomName) {
  const started = Date.parse(s.startShowTime) <= Date.now();
  return h("article", { class: "session-card", "data-session-id": s.id },
    h("div", { class: "poster poster-large", style: posterStyle(s.movieTitle) },
      h("h2", { class: "poster-title" }, s.movieTitle)),
    h("div", { class: "card-body" },
      h("p", { class: "card-when" }, `${showDay(s.startShowTime)} · `, h("strong", {}, showTime(s.startShowTime))),
      h("ul", { class: "card-meta" },
        roomName ? h("li", {}, icon("pin"), roomName) : null,
        runtime(s.startShowTime, s.endShowTime) ? h("li", {}, icon("clock"), runtime(s.startShowTime, s.endShowTime)) : null),
      h("div", { class: "card-foot" },
        h("span", { class: "card-price" }, h("strong", {}, money(s.ticketPrice)), " / seat"),
        h("span", { class: "card-free" }, started ? "Started" : "")),
      h("a", {
        class: "btn btn-primary btn-block", href: `/?session=${encodeURIComponent(s.id)}`, "data-route": "session",
        "aria-label": `${started ? "View seat map" : "Choose seats"} for ${s.movieTitle}, ${showDay(s.startShowTime)} ${showTime(s.startShowTime)}`,
      }, started ? "View seat map" : "Choose seats", icon("arrow"))));
}
