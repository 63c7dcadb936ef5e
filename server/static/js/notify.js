/**
 * Messages to the user: toasts (each one also announced to screen readers), the connection banner and
 * status pill, and the announcer: two visually hidden live regions, polite and urgent.
 */

import { h } from "./format.js";

const MAX_TOASTS = 3;
const KEPT_ANNOUNCEMENTS = 4;
const TONE_ICON = { info: "i", success: "✓", warn: "!", error: "!" };

/**
 * Show a toast and announce it. Tones: info, success, warn, error (warn and error are announced as urgent).
 * `key` replaces an earlier toast with the same key instead of stacking a duplicate.
 */
export function toast(text, { tone = "info", timeout = 6500, key = null, title = null } = {}) {
  const host = document.getElementById("toasts");
  if (!host) return null;
  if (key) host.querySelector(`[data-key="${CSS.escape(key)}"]`)?.remove();
  const urgent = tone === "warn" || tone === "error";
  const close = h("button", { class: "toast-close", type: "button", "aria-label": "Dismiss message" }, "×");
  const el = h("div", { class: `toast toast-${tone}`, "data-key": key, "data-tone": tone },
  h("span", { class: "toast-icon", "aria-hidden": "true" }, TONE_ICON[tone] || "i"),
  h("div", { class: "toast-body" }, title ? h("strong", { class: "toast-title" }, title) : null, h("span", {}, text)),
  close);
  const dismiss = () => {
    el.classList.add("leaving");
    setTimeout(() => el.remove(), 220);
  };
  close.addEventListener("click", dismiss);
  host.append(el);
  while (host.children.length > MAX_TOASTS) host.firstElementChild.remove();
  if (timeout) setTimeout(dismiss, timeout);
  announce(title ? `${title}. ${text}` : text, { urgent });
  return el;
}

/**
 * Say `text` to screen readers through the live regions in index.html: `urgent` interrupts (role alert),
 * otherwise it waits its turn (role status). Each message is a new paragraph, so one said twice is said again.
 */
export function announce(text, { urgent = false } = {}) {
  const region = document.getElementById(urgent ? "announce-urgent" : "announce");
  if (!region) return;
  region.append(h("p", {}, text));
  while (region.children.length > KEPT_ANNOUNCEMENTS) region.firstElementChild.remove();
}

/** The strip under the top bar for lasting conditions (connection lost). `action` = {label, run}. */
export function banner(text, { tone = "warn", action = null } = {}) {
  const el = document.getElementById("banner");
  if (!el) return;
  el.hidden = false;
  el.dataset.tone = tone;
  el.querySelector(".banner-text").textContent = text;
  const button = el.querySelector(".banner-action");
  button.hidden = !action;
  button.onclick = action ? action.run : null;
  if (action) button.textContent = action.label;
}

export function clearBanner() {
  const el = document.getElementById("banner");
  if (el) el.hidden = true;
}

/** The pill in the top bar: state is idle | connecting | live | reconnecting | offline. */
export function connectionPill(state, text) {
  const el = document.getElementById("conn");
  if (!el) return;
  el.hidden = state === "idle";
  el.dataset.state = state;
  el.querySelector(".conn-text").textContent = text;
  document.body.dataset.conn = state;
}
