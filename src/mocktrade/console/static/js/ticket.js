// The order ticket: only the price fields an order type takes are enabled,
// the estimated cost is checked against buying power before sending, and a
// server error is shown beside the field it names.
import { cmp, isDecimal, mul, round } from "./decimal.js";
import { $ } from "./dom.js";

const PRICE_FIELDS = {
  MARKET: [], LIMIT: ["limitPrice"], STOP: ["stopPrice"], STOP_LIMIT: ["stopPrice", "limitPrice"],
};
// The API's field names -> the ticket's controls.
const CONTROLS = {
  symbol: "#ticket-symbol", side: "#ticket-side", type: "#ticket-type", quantity: "#ticket-quantity",
  limitPrice: "#ticket-limit", stopPrice: "#ticket-stop", timeInForce: "#ticket-tif",
};

export class OrderTicket {
  constructor(form, { api, account, lastPrice, onPlaced }) {
    this.form = form;
    this.api = api;
    this.account = account; // () => portfolio view or null
    this.lastPrice = lastPrice; // symbol -> price string or null
    this.onPlaced = onPlaced;
    this.general = $("#ticket-message", form);
    this.estimate = $("#ticket-estimate", form);
    this.submit = $("button[type=submit]", form);
    form.addEventListener("change", () => this.refresh());
    form.addEventListener("input", () => this.refresh());
    form.addEventListener("submit", (e) => { e.preventDefault(); this.send(); });
    this.refresh();
  }

  control(field) { return $(CONTROLS[field], this.form); }

  setSymbols(symbols) {
    const select = this.control("symbol");
    const current = select.value;
    select.replaceChildren(...symbols.map((s) => new Option(s, s)));
    if (symbols.includes(current)) select.value = current;
  }

  setSymbol(symbol) {
    this.control("symbol").value = symbol;
    this.refresh();
  }

  values() {
    const v = (f) => this.control(f).value.trim();
    return {
      symbol: v("symbol"), side: v("side"), type: v("type"), quantity: v("quantity"),
      limitPrice: v("limitPrice"), stopPrice: v("stopPrice"), timeInForce: v("timeInForce"),
    };
  }

  refresh() {
    const order = this.values();
    const takes = PRICE_FIELDS[order.type] || [];
    for (const field of ["limitPrice", "stopPrice"]) {
      const input = this.control(field);
      const on = takes.includes(field);
      input.disabled = !on;
      input.required = on;
      input.closest(".field").classList.toggle("disabled", !on);
    }
    this.estimate.replaceChildren(...this.estimateText(order));
  }

  /** What the order may pay (a buy) or sell, against buying power or shares. */
  estimateText(order) {
    const portfolio = this.account();
    if (!isDecimal(order.quantity) || cmp(order.quantity, "0") <= 0) return ["Enter a quantity for an estimate."];
    if (order.side === "SELL") {
      const position = portfolio && portfolio.positions.find((p) => p.symbol === order.symbol);
      const available = position ? position.availableQuantity : "0";
      const over = cmp(order.quantity, available) > 0;
      return [`Selling ${order.quantity} of ${available} available ${order.symbol}`,
        over ? this._warn(" — more than you hold") : ""];
    }
    const price = order.type === "LIMIT" || order.type === "STOP_LIMIT" ? order.limitPrice
      : order.type === "STOP" ? order.stopPrice : this.lastPrice(order.symbol);
    if (!price || !isDecimal(price)) return ["Enter a price for an estimate."];
    const cost = round(mul(order.quantity, price), 2);
    const power = portfolio ? portfolio.buyingPower : null;
    const parts = [`Estimated cost ${cost}`, power ? ` of buying power ${power}` : ""];
    if (power && cmp(cost, power) > 0) parts.push(this._warn(" — exceeds buying power"));
    return parts;
  }

  _warn(text) {
    const span = document.createElement("strong");
    span.className = "warn";
    span.textContent = text;
    return span;
  }

  clearErrors() {
    this.general.textContent = "";
    this.general.className = "form-message";
    for (const field of Object.keys(CONTROLS)) {
      const input = this.control(field);
      input.removeAttribute("aria-invalid");
      const err = $(`#${input.id}-error`, this.form);
      if (err) err.textContent = "";
    }
  }

  showError(error) {
    const input = error.field && CONTROLS[error.field] ? this.control(error.field) : null;
    const err = input && $(`#${input.id}-error`, this.form);
    if (err && !input.disabled) {
      input.setAttribute("aria-invalid", "true");
      err.textContent = error.message;
      input.focus();
    } else {
      this.general.textContent = error.message;
      this.general.className = "form-message error";
    }
  }

  async send() {
    this.clearErrors();
    const order = this.values();
    const body = {
      symbol: order.symbol, side: order.side, type: order.type, quantity: order.quantity,
      timeInForce: order.timeInForce,
    };
    for (const field of PRICE_FIELDS[order.type] || []) body[field] = order[field];
    this.submit.disabled = true;
    try {
      const accepted = await this.api.post("/v1/orders", body, { "X-Idempotency-Key": idempotencyKey() });
      this.general.textContent = `Order accepted: ${order.side} ${order.quantity} ${order.symbol} (${accepted.orderId})`;
      this.general.className = "form-message ok";
      if (this.onPlaced) this.onPlaced(accepted);
    } catch (error) {
      this.showError(error);
    } finally {
      this.submit.disabled = false;
    }
  }
}

function idempotencyKey() {
  // crypto.randomUUID exists in secure contexts only; getRandomValues everywhere.
  if (crypto.randomUUID) return crypto.randomUUID();
  return [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, "0")).join("");
}
