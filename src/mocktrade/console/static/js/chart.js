// The candle chart of the selected symbol (TradingView Lightweight Charts):
// history from GET /v1/bars/{symbol}, the forming bar moved by each price,
// and markers for the user's own fills.
import {
  CandlestickSeries, ColorType, CrosshairMode, createChart, createSeriesMarkers,
} from "/console/vendor/lightweight-charts/lightweight-charts.standalone.production.mjs";
import { cmp } from "./decimal.js";

export const TIMEFRAMES = { "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400 };
const BAR_LIMIT = 300;
const MAX_MARKERS = 200;

// The API's times have microseconds; Date.parse is only sure of milliseconds.
const toSeconds = (iso) => Math.floor(Date.parse(String(iso).replace(/(\.\d{3})\d+/, "$1")) / 1000);

export class CandleChart {
  constructor(container, { api, status }) {
    this.api = api;
    this.status = status;
    this.symbol = null;
    this.timeframe = "1m";
    this.last = null; // the forming (latest) bar, as the series holds it
    this.legend = null; // the same bar as the API's exact strings {open, high, low, close}
    this.fills = new Map(); // orderId -> {time (s), side, quantity, price}
    this.generation = 0;
    this.barsMissing = false;
    this.chart = createChart(container, {
      autoSize: true,
      layout: {
        background: { type: ColorType.Solid, color: "transparent" },
        textColor: "#9aa7b8",
        fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace",
        attributionLogo: true,
      },
      grid: { vertLines: { color: "#1c2633" }, horzLines: { color: "#1c2633" } },
      crosshair: { mode: CrosshairMode.Normal },
      rightPriceScale: { borderColor: "#263244" },
      timeScale: { borderColor: "#263244", timeVisible: true, secondsVisible: false },
    });
    this.series = this.chart.addSeries(CandlestickSeries, {
      upColor: "#22c58b", downColor: "#f0506e", borderVisible: false,
      wickUpColor: "#22c58b", wickDownColor: "#f0506e",
      priceFormat: { type: "price", precision: 2, minMove: 0.0001 },
    });
    this.markers = createSeriesMarkers(this.series, []);
  }

  get seconds() { return TIMEFRAMES[this.timeframe]; }

  bucket(seconds) { return Math.floor(seconds / this.seconds) * this.seconds; }

  async show(symbol, timeframe = this.timeframe) {
    this.symbol = symbol;
    this.timeframe = timeframe;
    const generation = ++this.generation;
    this.last = null;
    this.legend = null;
    this.series.setData([]);
    this.markers.setMarkers([]);
    let bars = [];
    try {
      const page = await this.api.get(`/v1/bars/${encodeURIComponent(symbol)}`,
        { timeframe, limit: BAR_LIMIT });
      bars = (page && page.bars) || [];
      this.barsMissing = false;
      this.status(bars.length ? `${bars.length} bars` : "No bars yet: the chart builds from live prices");
    } catch (err) {
      this.barsMissing = true;
      this.status(err.missingRoute
        ? "Bar history is not available on this server: the chart builds from live prices"
        : `Bar history unavailable (${err.message}): the chart builds from live prices`);
    }
    if (generation !== this.generation) return;
    const data = bars.map((b) => ({
      time: toSeconds(b.t), open: Number(b.o), high: Number(b.h), low: Number(b.l), close: Number(b.c),
    })).filter((b) => Number.isFinite(b.time)).sort((a, b) => a.time - b.time);
    this.series.setData(data);
    this.last = data.length ? { ...data[data.length - 1] } : null;
    const latest = bars.reduce((a, b) => (!a || Date.parse(b.t) >= Date.parse(a.t) ? b : a), null);
    this.legend = latest ? { open: latest.o, high: latest.h, low: latest.l, close: latest.c } : null;
    this.chart.timeScale().scrollToRealTime();
    this._renderMarkers();
  }

  /** A price_update of the shown symbol: move the forming bar, or open the next. */
  tick({ symbol, price, timestamp }) {
    if (symbol !== this.symbol) return;
    const p = Number(price);
    const time = this.bucket(toSeconds(timestamp));
    if (!Number.isFinite(p) || !Number.isFinite(time)) return;
    if (this.last && time < this.last.time) return; // older than what is drawn
    if (this.last && time === this.last.time) {
      this.last = { ...this.last, high: Math.max(this.last.high, p), low: Math.min(this.last.low, p), close: p };
      const l = this.legend || { open: price, high: price, low: price, close: price };
      this.legend = { open: l.open, high: cmp(price, l.high) > 0 ? price : l.high,
        low: cmp(price, l.low) < 0 ? price : l.low, close: price };
    } else {
      this.last = { time, open: p, high: p, low: p, close: p };
      this.legend = { open: price, high: price, low: price, close: price };
      this.series.update(this.last);
      this._renderMarkers(); // a fill may belong to the bar just opened
      return;
    }
    this.series.update(this.last);
  }

  /** The user's fills (executed trades or order updates). */
  addFills(fills) {
    for (const f of fills) {
      if (!f.orderId || !f.price || !f.time) continue;
      this.fills.set(f.orderId, f);
    }
    this._renderMarkers();
  }

  _renderMarkers() {
    const data = this.series.data();
    if (!data.length) { this.markers.setMarkers([]); return; }
    const first = data[0].time;
    const markers = [...this.fills.values()]
      .filter((f) => f.symbol === this.symbol)
      .map((f) => ({ ...f, bar: this.bucket(toSeconds(f.time)) }))
      .filter((f) => f.bar >= first)
      .sort((a, b) => a.bar - b.bar)
      .slice(-MAX_MARKERS)
      .map((f) => ({
        time: f.bar,
        position: f.side === "BUY" ? "belowBar" : "aboveBar",
        color: f.side === "BUY" ? "#3b9dff" : "#f5a524",
        shape: f.side === "BUY" ? "arrowUp" : "arrowDown",
        text: `${f.side === "BUY" ? "B" : "S"} ${f.quantity} @ ${f.price}`,
      }));
    this.markers.setMarkers(markers);
  }

  /** How many bars are drawn, and the forming one (for tests and the status line). */
  snapshot() {
    return { bars: this.series.data().length, last: this.legend };
  }
}
