/**
 * The waiting room of a session: the page joins the line over its live socket, shows the buyer's place
 * ("You are number 1,234 in line · about 3 min"), a progress bar and an aria-live announcement, and opens
 * the seat map on its own once the buyer is admitted. The server pushes the place at most once a second;
 * the page only listens. On a session without a waiting room the join answers "admitted" at once and
 * nothing shows.
 */

const COUNT = new Intl.NumberFormat("en");

function waitText(seconds) {
  if (seconds < 60) return "less than a minute";
  const minutes = Math.round(seconds / 60);
  return `about ${COUNT.format(minutes)} min`;
}

export class WaitingRoom {
  /** `page` is the element that holds the seat map; `live` the session's LiveChannel. */
  constructor(page, live, { onAdmitted = () => {} } = {}) {
    this.page = page;
    this.live = live;
    this.onAdmitted = onAdmitted;
    this.admission = null;
    this.waiting = false;
    this.firstAhead = null;
    this.lastAnnounced = 0;
    this.el = document.createElement("section");
    this.el.className = "waiting-room";
    this.el.hidden = true;
    this.el.setAttribute("aria-labelledby", "waiting-room-title");
    this.el.innerHTML = `
      <h2 id="waiting-room-title">You are in line</h2>
      <p class="waiting-room-place" data-testid="queue-place"></p>
      <div class="waiting-room-bar" role="progressbar" aria-label="Your progress in line" aria-valuemin="0"
           aria-valuemax="100" aria-valuenow="0"><span class="waiting-room-fill"></span></div>
      <p class="waiting-room-note">Keep this page open: the seat map opens by itself when it is your turn.</p>
      <p class="sr-only" aria-live="polite" data-testid="queue-announcer"></p>`;
    page.prepend(this.el);
  }

  /** (Re)join on every socket open: the server answers the same place, and pushes from the new node. */
  async join() {
    try {
      this.onMessage(await this.live.request({ type: "queue.join" }));
    } catch {
      // The socket dropped; the next open joins again.
    }
  }

  /** Every `queue.*` message from the socket. */
  onMessage(msg) {
    if (msg.type === "queue.position" || msg.type === "queue.admitted") this.apply(msg);
  }

  apply(place) {
    if (place.admitted) {
      this.admission = place.admission || null;
      const wasWaiting = this.waiting;
      this.waiting = false;
      this.el.hidden = true;
      this.page.removeAttribute("data-waiting");
      if (wasWaiting) this.onAdmitted();
      return;
    }
    this.waiting = true;
    this.page.setAttribute("data-waiting", "true");
    this.el.hidden = false;
    if (this.firstAhead === null || place.ahead > this.firstAhead) this.firstAhead = place.ahead;
    const number = COUNT.format(place.ahead + 1);
    const text = `You are number ${number} in line · ${waitText(place.estimatedWaitSeconds)}`;
    this.el.querySelector(".waiting-room-place").textContent = text;
    const done = this.firstAhead ? Math.round(100 * (1 - place.ahead / this.firstAhead)) : 0;
    const bar = this.el.querySelector(".waiting-room-bar");
    bar.setAttribute("aria-valuenow", String(done));
    bar.setAttribute("aria-valuetext", text);
    this.el.querySelector(".waiting-room-fill").style.width = `${done}%`;
    // Announce at most every 10 s, so a screen reader is not talking every second.
    if (Date.now() - this.lastAnnounced > 10_000) {
      this.lastAnnounced = Date.now();
      this.el.querySelector("[aria-live]").textContent = text;
    }
  }

  destroy() {
    this.el.remove();
    this.page.removeAttribute("data-waiting");
  }
}
