/**
 * The guest identity: a user made with POST /users on first need, kept in localStorage ({id, token, name}),
 * plus the reservation the guest is holding (so a reload restores its countdown and its Buy button).
 */

import { api } from "./api.js";
import { uuid4 } from "./format.js";

const GUEST_KEY = "boxoffice.guest";
const HOLD_KEY = "boxoffice.hold";

const NICKNAMES = ["Popcorn", "Matinee", "Front Row", "Encore", "Reel", "Marquee", "Spotlight", "Premiere",
  "Usher", "Trailer", "Balcony", "Cameo"];

let creating = null;

function readJson(key) {
  try {
    return JSON.parse(localStorage.getItem(key) || "null");
  } catch {
    return null;
  }
}

function writeJson(key, value) {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // Private mode or a full quota: the page still works, only a reload forgets the guest.
  }
}

export function currentGuest() {
  const guest = readJson(GUEST_KEY);
  return guest && guest.id && guest.token ? guest : null;
}

export function forgetGuest() {
  writeJson(GUEST_KEY, null);
  writeJson(HOLD_KEY, null);
}

/** The stored guest, or a new one. Concurrent callers share one POST /users. */
export async function ensureGuest() {
  const existing = currentGuest();
  if (existing) return existing;
  if (!creating) {
    creating = (async () => {
      const suffix = uuid4();
      const name = `${NICKNAMES[Math.floor(Math.random() * NICKNAMES.length)]} guest ${suffix.slice(0, 4).toUpperCase()}`;
      const user = await api("/users", { method: "POST", body: { name, email: `guest-${suffix}@guests.boxoffice.example` } });
      const guest = { id: user.id, token: user.token, name: user.name };
      writeJson(GUEST_KEY, guest);
      return guest;
    })().finally(() => {
      creating = null;
    });
  }
  return creating;
}

/**
 * Run `call(guest)`; if the server no longer knows the token (401: a reset database), make a new guest once
 * and run it again.
 */
export async function asGuest(call) {
  const guest = await ensureGuest();
  try {
    return await call(guest);
  } catch (error) {
    if (error?.status !== 401) throw error;
    forgetGuest();
    return call(await ensureGuest());
  }
}

/** {reservationId, sessionId, userId, idempotencyKey} of the hold in progress, or null. */
export function storedHold() {
  return readJson(HOLD_KEY);
}

export function storeHold(hold) {
  writeJson(HOLD_KEY, hold);
}

export function clearStoredHold(reservationId) {
  const hold = storedHold();
  if (!hold || !reservationId || hold.reservationId === reservationId) writeJson(HOLD_KEY, null);
}
