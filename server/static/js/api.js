/**
 * The REST client of the page: JSON in and out; failures become ApiError with the contract's stable `code`.
 */

export class ApiError extends Error {
  constructor(status, body, fallback = "", retryAfter = null) {
    super(body?.message || fallback || `The box office answered ${status}`);
    this.name = "ApiError";
    this.status = status;
    // status 0: the request never got an answer (network down, node killed mid-request).
    this.code = body?.code || (status === 0 ? "network_error" : "http_error");
    this.details = body?.details || {};
    this.retryAfter = retryAfter;
  }
}

// A busy node answers 503 `overloaded` (or 429) with Retry-After, having done nothing: the page waits that
// long -- stretched by up to half at random, so buyers told the same pause do not all come back in the
// same instant -- and asks again, a few times, before showing the error.
const RETRIES = 3;
const MAX_WAIT_SECONDS = 10;

function retryable(error, method) {
  if (error.code === "overloaded" || (error.status === 429 && error.retryAfter)) return true;
  return error.status === 503 && method === "GET";
}

export function retryDelayMs(retryAfter) {
  const seconds = Math.min(Math.max(retryAfter || 1, 0.5), MAX_WAIT_SECONDS);
  return seconds * 1000 * (1 + Math.random() * 0.5);
}

/**
 * fetch() a contract route. `token` adds the bearer header; `headers` adds more (Idempotency-Key).
 * Returns the parsed JSON (null for 204).
 */
export async function api(path, options = {}) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await request(path, options);
    } catch (error) {
      const method = options.method || "GET";
      if (!(error instanceof ApiError) || attempt >= RETRIES || !retryable(error, method)) throw error;
      await new Promise((resolve) => setTimeout(resolve, retryDelayMs(error.retryAfter)));
    }
  }
}

async function request(path, { method = "GET", body, token, headers = {}, signal } = {}) {
  const sent = { Accept: "application/json", ...headers };
  if (body !== undefined) sent["Content-Type"] = "application/json";
  if (token) sent.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method, headers: sent, signal, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error?.name === "AbortError") throw error;
    throw new ApiError(0, null, "The box office could not be reached. Check your connection and try again.");
  }
  if (response.status === 204) return null;
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const retryAfter = Number.parseFloat(response.headers.get("Retry-After") || "") || null;
    throw new ApiError(response.status, data, "", retryAfter);
  }
  return data;
}
