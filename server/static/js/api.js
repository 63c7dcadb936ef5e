/**
 * The REST client of the page: JSON in and out; failures become ApiError with the contract's stable `code`.
 */

export class ApiError extends Error {
  constructor(status, body, fallback = "") {
    super(body?.message || fallback || `The box office answered ${status}`);
    this.name = "ApiError";
    this.status = status;
    // status 0: the request never got an answer (network down, node killed mid-request).
    this.code = body?.code || (status === 0 ? "network_error" : "http_error");
    this.details = body?.details || {};
  }
}

/**
 * fetch() a contract route. `token` adds the bearer header; `headers` adds more (Idempotency-Key).
 * Returns the parsed JSON (null for 204).
 */
export async function api(path, { method = "GET", body, token, headers = {}, signal } = {}) {
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
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}
