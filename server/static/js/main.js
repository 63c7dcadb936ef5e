/**
 * Entry point: a tiny router. `/` shows the session list, `/?session={id}` opens that session's seat map
 * (so a link can be shared); in-page links change the URL with the History API, without a reload.
 */

import { mountSessionPage } from "./picker.js";
import { mountSessionList } from "./sessions.js";
import { setupTicketsDialog } from "./tickets.js";

const main = document.getElementById("main");
let current = null;

function route() {
  current?.destroy();
  const sessionId = new URLSearchParams(location.search).get("session");
  current = sessionId ? mountSessionPage(main, sessionId) : mountSessionList(main);
}

function navigate(url) {
  if (url === location.pathname + location.search) return;
  history.pushState(null, "", url);
  route();
  window.scrollTo({ top: 0 });
  main.focus({ preventScroll: true });
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-route]");
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin) return;
  event.preventDefault();
  navigate(url.pathname + url.search);
});

window.addEventListener("popstate", route);
setupTicketsDialog();
route();
