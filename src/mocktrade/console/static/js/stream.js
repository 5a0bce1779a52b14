// Live data over the Phoenix socket at /v1/marketdata: prices:{SYMBOL} and
// orders:{userId}. The phoenix client reconnects with backoff and rejoins
// every channel; the orders channel rejoins with since = the last seq seen,
// so the server replays what was missed, in order, without duplicates.
import { Socket } from "/console/vendor/phoenix/phoenix.mjs";

const BACKOFF_MS = [250, 500, 1000, 2000, 4000];

export function socketUrl(configured) {
  // ":PORT" means this page's host on another port (distributed mode).
  if (configured && configured.startsWith(":")) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.hostname}${configured}/v1/marketdata`;
  }
  return configured || "/v1/marketdata";
}

export class MarketStream {
  constructor(url, { onState } = {}) {
    this.onState = onState || (() => {});
    this.state = "connecting";
    this.connects = 0;
    this.socket = new Socket(url, {
      reconnectAfterMs: (tries) => BACKOFF_MS[tries - 1] ?? 5000,
      rejoinAfterMs: (tries) => BACKOFF_MS[tries - 1] ?? 5000,
      heartbeatIntervalMs: 15000,
    });
    this.socket.onOpen(() => { this.connects += 1; this._set("live"); });
    this.socket.onClose(() => this._set(this.connects ? "reconnecting" : "connecting"));
    this.socket.onError(() => this._set(this.connects ? "reconnecting" : "connecting"));
    this.socket.connect();
    this.lastSeq = null;
  }

  _set(state) {
    if (state === this.state) return;
    this.state = state;
    this.onState(state, this.connects);
  }

  /** price_update {symbol, price, timestamp} for each symbol. */
  prices(symbols, onPrice) {
    return symbols.map((symbol) => {
      const channel = this.socket.channel(`prices:${symbol}`, {});
      channel.on("price_update", onPrice);
      channel.join();
      return channel;
    });
  }

  /** order_update for the user; onJoin(reply) on every (re)join. */
  orders(userId, token, onUpdate, { onJoin, onError } = {}) {
    const channel = this.socket.channel(`orders:${userId}`, () => (
      this.lastSeq === null ? { token } : { token, since: this.lastSeq }));
    channel.on("order_update", (update) => {
      if (typeof update.seq === "number") {
        if (this.lastSeq !== null && update.seq <= this.lastSeq) return; // seen
        this.lastSeq = update.seq;
      }
      onUpdate(update);
    });
    channel.join()
      .receive("ok", (reply) => {
        if (reply && typeof reply.seq === "number" && (this.lastSeq === null || reply.seq > this.lastSeq)) {
          this.lastSeq = reply.seq;
        }
        if (onJoin) onJoin(reply);
      })
      .receive("error", (reply) => { if (onError) onError(reply); });
    // Every rejoin after a reconnect reports through the same push.
    return channel;
  }

  disconnect() {
    this.socket.disconnect();
  }
}
