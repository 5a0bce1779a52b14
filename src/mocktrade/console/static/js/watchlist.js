// The watchlist: every symbol's last price, its change since the session
// open, and a flash on each change. The open is the UTC day's first price
// from the daily bar when the server has bars, else the first price this page
// saw; the table says which.
import { div, mul, sign, sub } from "./decimal.js";
import { $, h, setSigned } from "./dom.js";

export class Watchlist {
  constructor(root, { api, onSelect }) {
    this.root = root;
    this.api = api;
    this.onSelect = onSelect;
    this.rows = new Map(); // symbol -> {tr, price, open, basis, cells}
    this.selected = null;
    this.body = $("tbody", root);
    this.note = $("#watchlist-basis");
  }

  render(prices) {
    this.body.replaceChildren();
    for (const { symbol, price } of prices) {
      const button = h("button", { type: "button", class: "symbol-button", "aria-pressed": "false",
        onclick: () => this.onSelect(symbol) }, symbol);
      const last = h("td", { class: "num last" }, price);
      const change = h("td", { class: "num change" }, "—");
      const pct = h("td", { class: "num pct" }, "—");
      const tr = h("tr", { dataset: { symbol } }, h("th", { scope: "row" }, button), last, change, pct);
      this.body.append(tr);
      this.rows.set(symbol, { tr, button, last, change, pct, price, open: null, basis: null });
    }
    this.loadOpens(prices);
  }

  async loadOpens(prices) {
    const today = new Date().toISOString().slice(0, 10);
    let fromBars = 0;
    for (const { symbol, price } of prices) {
      const row = this.rows.get(symbol);
      try {
        const page = await this.api.get(`/v1/bars/${encodeURIComponent(symbol)}`, { timeframe: "1d", limit: 1 });
        const bar = page && page.bars && page.bars[page.bars.length - 1];
        if (bar && String(bar.t).slice(0, 10) === today) {
          row.open = bar.o;
          row.basis = "bars";
          fromBars += 1;
        }
      } catch (err) {
        if (err.missingRoute) break; // no bars on this server: every row falls back
      }
      if (!row.open) { row.open = row.price || price; row.basis = "page"; }
      this._change(row);
    }
    for (const row of this.rows.values()) {
      if (!row.open) { row.open = row.price; row.basis = "page"; this._change(row); }
      row.tr.dataset.basis = row.basis;
    }
    const all = fromBars === this.rows.size;
    this.note.textContent = all
      ? "Change since the session open: the first price of the UTC day (from bars)."
      : fromBars
        ? "Change since the session open: the UTC day's first price from bars; rows marked † since the first price this page saw."
        : "Change since the first price this page saw (bar history is not available).";
    for (const row of this.rows.values()) {
      row.button.textContent = row.basis === "page" && !all && fromBars ? `${row.tr.dataset.symbol}†` : row.tr.dataset.symbol;
    }
  }

  update({ symbol, price }) {
    const row = this.rows.get(symbol);
    if (!row || row.price === price) return;
    const direction = row.price ? sign(sub(price, row.price)) : 0;
    row.price = price;
    row.last.textContent = price;
    if (row.open) this._change(row);
    row.tr.classList.remove("flash-up", "flash-down");
    void row.tr.offsetWidth; // restart the animation
    if (direction) row.tr.classList.add(direction > 0 ? "flash-up" : "flash-down");
  }

  _change(row) {
    if (!row.open || !row.price) return;
    const change = sub(row.price, row.open);
    setSigned(row.change, change);
    const pct = div(mul(change, "100"), row.open, 2);
    setSigned(row.pct, pct, "%");
  }

  select(symbol) {
    this.selected = symbol;
    for (const [s, row] of this.rows) {
      const on = s === symbol;
      row.tr.classList.toggle("selected", on);
      row.button.setAttribute("aria-pressed", on ? "true" : "false");
    }
  }

  price(symbol) {
    const row = this.rows.get(symbol);
    return row ? row.price : null;
  }
}
