/**
 * The live channel of one session: a WebSocket to /ws/sessions/{id} (the token in its subprotocol
 * "bearer.<token>", never in the URL), request/reply by requestId,
 * a keep-alive ping, and reconnection with exponential backoff and jitter (every reconnect resyncs from the
 * server's fresh snapshot).
 */

import { uuid4 } from "./format.js";

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;
const PING_EVERY_MS = 15000;
// No frame at all for this long after a ping: the connection is half-open (laptop slept, NAT dropped it).
const SILENCE_LIMIT_MS = 25000;
const REQUEST_TIMEOUT_MS = 10000;

export class ChannelClosed extends Error {
  constructor(message = "The live connection dropped before the box office answered") {
    super(message);
    this.name = "ChannelClosed";
    this.code = "connection_lost";
  }
}

/**
 * Callbacks: onMessage(msg) for every server frame (snapshot, seats, replies too),
 * onState(state, info) with state in connecting | open | reconnecting | closed; info = {attempt, delayMs, code}.
 */
export class LiveChannel {
  constructor(sessionId, { token = null, onMessage = () => {}, onState = () => {} } = {}) {
    this.sessionId = sessionId;
    this.token = token;
    this.onMessage = onMessage;
    this.onState = onState;
    this.ws = null;
    this.state = "idle";
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastFrameAt = 0;
    this.pending = new Map();
    this.stopped = false;
    this.everOpened = false;
    this.nodeId = null;
    this.retryAt = 0;
    this.wakeUp = () => {
      if (this.state === "reconnecting" && document.visibilityState !== "hidden") this.reconnectNow();
    };
    window.addEventListener("online", this.wakeUp);
    document.addEventListener("visibilitychange", this.wakeUp);
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws/sessions/${encodeURIComponent(this.sessionId)}`;
  }

  /** The token travels as the subprotocol "bearer.<token>", never in the URL (which proxies log). */
  protocols() {
    return this.token ? ["boxoffice", `bearer.${this.token}`] : ["boxoffice"];
  }

  connect() {
    this.stopped = false;
    clearTimeout(this.retryTimer);
    this.setState(this.everOpened ? "reconnecting" : "connecting", { attempt: this.attempt, delayMs: 0 });
    let ws;
    try {
      ws = new WebSocket(this.url(), this.protocols());
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.stopPing();
      this.failPending(new ChannelClosed());
      if (this.stopped) {
        this.setState("closed", { code: event.code });
        return;
      }
      this.scheduleReconnect(event.code);
    };
    // An error is always followed by close; reconnection is handled there.
    ws.onerror = () => {};
  }

  receive(raw) {
    this.lastFrameAt = Date.now();
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      return;
    }
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "snapshot") {
      // A snapshot means the server accepted us and we are in sync: the backoff starts over.
      this.attempt = 0;
      this.everOpened = true;
      this.nodeId = msg.nodeId ?? null;
      this.startPing();
      this.setState("open", { nodeId: this.nodeId });
    }
    const waiter = msg.requestId ? this.pending.get(msg.requestId) : null;
    if (waiter) {
      this.pending.delete(msg.requestId);
      clearTimeout(waiter.timer);
      waiter.resolve(msg);
    }
    this.onMessage(msg);
  }

  /** Send a frame now; false if the socket is not open (the caller decides what to tell the user). */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  isOpen() {
    return this.state === "open" && !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  /** Send a message with a fresh requestId and resolve with the server's reply to it. */
  request(msg, timeoutMs = REQUEST_TIMEOUT_MS) {
    const requestId = uuid4();
    return new Promise((resolve, reject) => {
      if (!this.send({ ...msg, requestId })) {
        reject(new ChannelClosed("The live connection is down; wait a moment for it to come back"));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(Object.assign(new Error("The box office did not answer in time"), { code: "timeout" }));
      }, timeoutMs);
      this.pending.set(requestId, { resolve, reject, timer });
    });
  }

  failPending(error) {
    for (const [id, waiter] of this.pending) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
      this.pending.delete(id);
    }
  }

  /** Exponential backoff with "equal jitter": half the step fixed, half random, so a crowd spreads out. */
  scheduleReconnect(code = null) {
    const step = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const delayMs = Math.round(step / 2 + Math.random() * (step / 2));
    this.attempt += 1;
    this.retryAt = Date.now() + delayMs;
    this.setState("reconnecting", { attempt: this.attempt, delayMs, code });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delayMs);
  }

  reconnectNow() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = null;
      ws.close();
      this.stopPing();
      this.failPending(new ChannelClosed());
    }
    this.connect();
  }

  /** Replace the token (a new guest) and reconnect so the server knows who holds. */
  setToken(token) {
    this.token = token;
    this.reconnectNow();
  }

  startPing() {
    this.stopPing();
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastFrameAt > SILENCE_LIMIT_MS) {
        // Half-open: close it ourselves, onclose schedules the reconnect.
        this.ws?.close(4000, "silent");
        return;
      }
      this.send({ type: "ping", requestId: uuid4() });
    }, PING_EVERY_MS);
  }

  stopPing() {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  setState(state, info = {}) {
    this.state = state;
    this.onState(state, info);
  }

  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.stopPing();
    window.removeEventListener("online", this.wakeUp);
    document.removeEventListener("visibilitychange", this.wakeUp);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = null;
      ws.close(1000, "bye");
    }
    this.failPending(new ChannelClosed());
    this.state = "closed";
  }
}
