/**
 * The seat picker's limits and its words for the contract's stable error codes (picker-*.js).
 */

/** The server enforces MAX_SEATS_PER_HOLD (default 10); the page stops at the same number to say so early. */
export const MAX_SEATS = 10;
export const TICK_MS = 250;
export const URGENT_MS = 10000;

/** Friendly words for the contract's stable error codes. */
export const HOLD_ERRORS = {
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

/**
 * Send `message` over the page's socket when it is open, else `rest()` over REST: the reply, or an Error carrying
 * the contract's `code` (and `details`), whichever way it went.
 */
export async function viaSocketOrRest(live, message, rest) {
  if (live?.isOpen()) {
    const reply = await live.request(message);
    if (reply.type === "error") throw Object.assign(new Error(reply.message), { code: reply.code, details: reply.details });
    return reply;
  }
  return rest();
}
