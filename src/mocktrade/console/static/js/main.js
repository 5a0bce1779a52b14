// The trader's console: wires the sign-in screen, the live stream and the
// panels together. Each panel is its own module; this one holds no state of
// its own beyond the signed-in session.
import { createApi } from "./api.js";
import { Account } from "./account.js";
import { showSignIn, session, userOf } from "./auth.js";
import { CandleChart, TIMEFRAMES } from "./chart.js";
import { $, h } from "./dom.js";
import { Orders } from "./orders.js";
import { MarketStream, socketUrl } from "./stream.js";
import { OrderTicket } from "./ticket.js";
import { VolumeChart } from "./volume.js";
import { Watchlist } from "./watchlist.js";

const FINAL = new Set(["EXECUTED", "FAILED", "CANCELED", "EXPIRED"]);
const CONNECTION_TEXT = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…" };

function debounce(fn, ms) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

function announce(text, error = false) {
  const el = $("#announce");
  el.textContent = text;
  el.classList.toggle("error", error);
}

function signOut() {
  session.clear();
  location.replace("/");
}

async function config() {
  try {
    return await (await fetch("/console/config.json")).json();
  } catch {
    return {};
  }
}

function fillOf(t) {
  return { orderId: t.orderId, symbol: t.symbol, side: t.side, quantity: t.quantity,
    price: t.executionPrice, time: t.executionTimestamp || t.time };
}

async function start(token, settings) {
  const userId = userOf(token);
  const api = createApi({ token: () => token, onUnauthorized: signOut });
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#session-bar").hidden = false;
  $("#user-name").textContent = userId;
  $("#sign-out").addEventListener("click", signOut);

  const connection = $("#connection");
  const setConnection = (state) => {
    connection.dataset.state = state;
    $(".label", connection).textContent = CONNECTION_TEXT[state] || state;
  };
  setConnection("connecting");

  const account = new Account({ api, userId, summary: $("#account"), positions: $("#positions") });
  const chartStatus = $("#chart-status");
  const chart = new CandleChart($("#chart"), { api, status: (text) => { chartStatus.textContent = text; } });
  const ohlc = $("#chart-ohlc");
  const showOhlc = () => {
    const { bars, last } = chart.snapshot();
    ohlc.dataset.bars = bars;
    ohlc.textContent = last
      ? `O ${last.open}  H ${last.high}  L ${last.low}  C ${last.close}`
      : "Waiting for prices…";
  };
  let watchlist;
  const ticket = new OrderTicket($("#ticket"), {
    api, account: () => account.valued(), lastPrice: (s) => watchlist.price(s),
    onPlaced: () => { orders.loadOpen(); },
  });
  const orders = new Orders({
    api, open: $("#open-orders"), history: $("#order-history"), trades: $("#trade-history"),
    filters: $("#history-filters"), announce,
  });
  const volume = new VolumeChart($("#volume"), { api });

  const select = async (symbol) => {
    watchlist.select(symbol);
    ticket.setSymbol(symbol);
    $("#chart-symbol").textContent = symbol;
    await chart.show(symbol);
    showOhlc();
  };
  watchlist = new Watchlist($("#watchlist"), { api, onSelect: select });

  for (const button of document.querySelectorAll("#timeframes button")) {
    button.addEventListener("click", async () => {
      for (const b of document.querySelectorAll("#timeframes button")) b.setAttribute("aria-pressed", String(b === button));
      await chart.show(chart.symbol, button.dataset.timeframe);
      showOhlc();
    });
  }

  const { prices } = await api.get("/v1/prices");
  const symbols = prices.map((p) => p.symbol);
  watchlist.render(prices);
  ticket.setSymbols(symbols);
  for (const p of prices) account.price(p);

  const stream = new MarketStream(socketUrl(settings.marketdataUrl), { onState: setConnection });
  stream.prices(symbols, (update) => {
    watchlist.update(update);
    account.price(update);
    if (update.symbol === chart.symbol) { chart.tick(update); showOhlc(); }
  });

  const refreshAfterOrders = debounce(() => {
    account.load().catch(() => {});
    orders.loadHistory().catch(() => {});
  }, 300);
  let joins = 0;
  stream.orders(userId, token, (update) => {
    orders.update(update);
    if (update.status === "EXECUTED") chart.addFills([fillOf(update)]);
    if (FINAL.has(update.status) || update.status === "OPEN") refreshAfterOrders();
  }, {
    onJoin: () => {
      joins += 1;
      if (joins > 1) { // a rejoin after a reconnect: catch up what REST shows
        account.load().catch(() => {});
        orders.loadOpen().catch(() => {});
      }
    },
    onError: (reply) => announce(`Live order updates refused: ${(reply && reply.reason) || "error"}`, true),
  });

  await select(symbols[0]);
  await Promise.allSettled([account.load(), orders.loadOpen(), orders.loadHistory(), volume.load()]);
  ticket.refresh();
  try {
    const fills = await api.get("/v1/trades/search", { status: "EXECUTED", limit: 500 });
    chart.addFills(fills.trades.map(fillOf));
  } catch { /* no history service: no markers */ }

  setInterval(() => volume.load(), 30000);
  setInterval(() => account.load().catch(() => {}), 30000);
  document.body.dataset.ready = "true";
  window.mocktradeConsole = { stream, chart, account }; // for debugging from the devtools
}

async function main() {
  $("#timeframes").replaceChildren(...Object.keys(TIMEFRAMES).map((tf, i) => h("button", {
    type: "button", class: "chip", dataset: { timeframe: tf }, "aria-pressed": String(i === 0),
  }, tf)));
  const settings = await config();
  const token = session.token();
  if (token && userOf(token)) {
    await start(token, settings);
    return;
  }
  session.clear();
  const api = createApi({ token: () => null });
  await showSignIn($("#signin"), api, (fresh) => start(fresh, settings));
}

main().catch((err) => {
  console.error(err);
  announce(`The console failed to start: ${err.message}`, true);
});
