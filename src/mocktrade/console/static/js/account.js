// The account (cash, buying power, market value, equity, unrealized P&L) and
// the positions table: the portfolio from the server, revalued live at each
// price with exact decimals, the way the server values it.
import { add, round, mul, sub } from "./decimal.js";
import { $, h, num, setSigned } from "./dom.js";

export class Account {
  constructor({ api, userId, summary, positions }) {
    this.api = api;
    this.userId = userId;
    this.summary = summary;
    this.positionsBody = $("tbody", positions);
    this.portfolio = null;
    this.prices = new Map();
    this.loading = null;
  }

  async load() {
    if (this.loading) return this.loading;
    this.loading = (async () => {
      try {
        this.portfolio = await this.api.get(`/v1/portfolio/${encodeURIComponent(this.userId)}`);
        this.render();
      } finally {
        this.loading = null;
      }
    })();
    return this.loading;
  }

  price({ symbol, price }) {
    this.prices.set(symbol, price);
    if (this.portfolio && this.portfolio.positions.some((p) => p.symbol === symbol)) this.render();
  }

  /** The portfolio revalued at the latest prices this page has. */
  valued() {
    const p = this.portfolio;
    if (!p) return null;
    if (!p.positions.length) return p; // nothing to revalue: the server's numbers as given
    let market = "0.00";
    let basis = "0.00";
    const positions = p.positions.map((pos) => {
      const last = this.prices.get(pos.symbol) || pos.lastPrice;
      if (!last) return { ...pos };
      const value = round(mul(pos.quantity, last), 2);
      market = add(market, value);
      basis = add(basis, pos.costBasis);
      return { ...pos, lastPrice: last, marketValue: value, unrealizedPnl: sub(value, pos.costBasis) };
    });
    return {
      ...p, positions, marketValue: market, unrealizedPnl: sub(market, basis),
      totalValue: add(p.cashBalance, market),
    };
  }

  render() {
    const v = this.valued();
    if (!v) return;
    const set = (key, value) => { $(`[data-field=${key}]`, this.summary).textContent = num(value); };
    set("cashBalance", v.cashBalance);
    set("buyingPower", v.buyingPower);
    set("marketValue", v.marketValue);
    set("totalValue", v.totalValue);
    setSigned($("[data-field=unrealizedPnl]", this.summary), v.unrealizedPnl);
    const rows = v.positions.map((pos) => {
      const pnl = h("td", { class: "num" });
      setSigned(pnl, pos.unrealizedPnl);
      return h("tr", { dataset: { symbol: pos.symbol } },
        h("th", { scope: "row" }, pos.symbol),
        h("td", { class: "num" }, num(pos.quantity)),
        h("td", { class: "num" }, num(pos.availableQuantity)),
        h("td", { class: "num" }, num(pos.averageCost)),
        h("td", { class: "num" }, num(pos.lastPrice)),
        h("td", { class: "num" }, num(pos.marketValue)),
        pnl);
    });
    if (!rows.length) rows.push(h("tr", { class: "empty" }, h("td", { colspan: 7 }, "No positions yet.")));
    this.positionsBody.replaceChildren(...rows);
  }
}
