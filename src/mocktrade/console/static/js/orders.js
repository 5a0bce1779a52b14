// Open orders (with Cancel), order history and trade history, each page
// fetched on demand with nextPageToken.
import { $, h, num, time } from "./dom.js";

const OPEN = new Set(["ACCEPTED", "OPEN", "PENDING_CANCEL"]);

function statusBadge(order) {
  const label = order.status === "FAILED" && order.outcome ? order.outcome : order.status;
  return h("span", { class: `badge status-${order.status.toLowerCase()}`, title: order.failureReason || "" }, label);
}

function priceCell(order) {
  const parts = [];
  if (order.limitPrice) parts.push(`L ${order.limitPrice}`);
  if (order.stopPrice) parts.push(`S ${order.stopPrice}${order.stopTriggered ? " ✓" : ""}`);
  return parts.join(" / ") || "MKT";
}

export class Orders {
  constructor({ api, open, history, trades, filters, announce }) {
    this.api = api;
    this.open = open;
    this.history = history;
    this.trades = trades;
    this.filters = filters;
    this.announce = announce;
    this.historyToken = null;
    this.tradesToken = null;
    filters.addEventListener("submit", (e) => { e.preventDefault(); this.loadHistory(); });
    $("#history-more").addEventListener("click", () => this.loadHistory(true));
    $("#trades-more").addEventListener("click", () => this.loadTrades(true));
  }

  filterValues() {
    const v = (name) => this.filters.elements[name].value.trim();
    return { symbol: v("symbol").toUpperCase(), status: v("status"), side: v("side") };
  }

  async loadOpen() {
    const page = await this.api.get("/v1/orders", { status: "open", limit: 200 });
    const rows = page.orders.map((o) => this.openRow(o));
    if (!rows.length) rows.push(h("tr", { class: "empty" }, h("td", { colspan: 8 }, "No open orders.")));
    $("tbody", this.open).replaceChildren(...rows);
  }

  openRow(o) {
    const cancel = h("button", {
      type: "button", class: "small danger", "aria-label": `Cancel ${o.side} ${o.quantity} ${o.symbol}`,
      disabled: o.status === "PENDING_CANCEL",
      onclick: () => this.cancel(o, cancel),
    }, "Cancel");
    return h("tr", { dataset: { orderId: o.orderId } },
      h("td", {}, time(o.orderTimestamp)),
      h("th", { scope: "row" }, o.symbol),
      h("td", { class: o.side === "BUY" ? "buy" : "sell" }, o.side),
      h("td", {}, o.type, " ", h("span", { class: "muted" }, o.timeInForce)),
      h("td", { class: "num" }, num(o.quantity)),
      h("td", { class: "num" }, priceCell(o)),
      h("td", {}, statusBadge(o)),
      h("td", {}, cancel));
  }

  async cancel(order, button) {
    button.disabled = true;
    try {
      await this.api.del(`/v1/orders/${encodeURIComponent(order.orderId)}`);
      this.announce(`Cancel requested for ${order.side} ${order.quantity} ${order.symbol}`);
    } catch (err) {
      this.announce(`Cancel failed: ${err.message}`, true);
      button.disabled = false;
    }
    await this.loadOpen();
  }

  /** An order_update: the open list reflects it at once. */
  update(o) {
    const body = $("tbody", this.open);
    const existing = $(`tr[data-order-id="${CSS.escape(o.orderId)}"]`, body);
    if (OPEN.has(o.status)) {
      const row = this.openRow(o);
      if (existing) existing.replaceWith(row);
      else { $("tr.empty", body)?.remove(); body.prepend(row); }
    } else if (existing) {
      existing.remove();
      if (!body.children.length) body.append(h("tr", { class: "empty" }, h("td", { colspan: 8 }, "No open orders.")));
    }
  }

  async loadHistory(more = false) {
    const f = this.filterValues();
    if (!more) this.historyToken = null;
    const page = await this.api.get("/v1/orders", {
      status: "closed", symbol: f.symbol, limit: 50, pageToken: more ? this.historyToken : null,
    });
    // The orders endpoint filters by symbol; side and outcome are filtered here.
    const rows = page.orders
      .filter((o) => (!f.side || o.side === f.side) && (!f.status || (o.outcome || o.status) === f.status))
      .map((o) => h("tr", {},
        h("td", {}, time(o.orderTimestamp)),
        h("th", { scope: "row" }, o.symbol),
        h("td", { class: o.side === "BUY" ? "buy" : "sell" }, o.side),
        h("td", {}, o.type),
        h("td", { class: "num" }, num(o.quantity)),
        h("td", { class: "num" }, num(o.executionPrice)),
        h("td", {}, statusBadge(o))));
    const body = $("tbody", this.history);
    if (more) body.append(...rows); else body.replaceChildren(...rows);
    if (!body.children.length) body.append(h("tr", { class: "empty" }, h("td", { colspan: 7 }, "No orders.")));
    this.historyToken = page.nextPageToken;
    $("#history-more").hidden = !page.nextPageToken;
    await this.loadTrades(more);
  }

  async loadTrades(more = false) {
    const f = this.filterValues();
    if (!more) this.tradesToken = null;
    const page = await this.api.get("/v1/trades/search", {
      symbol: f.symbol, status: f.status, side: f.side, limit: 50, pageToken: more ? this.tradesToken : null,
    });
    const rows = page.trades.map((t) => h("tr", {},
      h("td", {}, time(t.executionTimestamp)),
      h("th", { scope: "row" }, t.symbol),
      h("td", { class: t.side === "BUY" ? "buy" : "sell" }, t.side),
      h("td", { class: "num" }, num(t.quantity)),
      h("td", { class: "num" }, num(t.executionPrice)),
      h("td", {}, h("span", { class: `badge status-${t.status.toLowerCase()}`, title: t.failureReason || "" }, t.status))));
    const body = $("tbody", this.trades);
    if (more) body.append(...rows); else body.replaceChildren(...rows);
    if (!body.children.length) body.append(h("tr", { class: "empty" }, h("td", { colspan: 6 }, "No trades.")));
    this.tradesToken = page.nextPageToken;
    $("#trades-more").hidden = !page.nextPageToken;
    $("#trades-count").textContent = `${page.totalCount} in all`;
    return page.trades;
  }
}
