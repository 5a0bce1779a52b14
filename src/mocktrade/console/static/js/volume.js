// Market volume per symbol over 1h / 24h / 7d, as a bar chart of plain
// elements (each bar labelled with its exact volume, trades and notional).
import { cmp, div } from "./decimal.js";
import { $, h } from "./dom.js";

export class VolumeChart {
  constructor(root, { api }) {
    this.root = root;
    this.api = api;
    this.window = "1h";
    this.list = $("#volume-bars", root);
    for (const input of root.querySelectorAll("input[name=volume-window]")) {
      input.addEventListener("change", () => { this.window = input.value; this.load(); });
    }
  }

  async load() {
    let answer;
    try {
      answer = await this.api.get("/v1/analytics/volume", { timeWindow: this.window });
    } catch (err) {
      this.list.replaceChildren(h("li", { class: "muted" }, `Volume unavailable: ${err.message}`));
      return;
    }
    const rows = [...answer.symbols].sort((a, b) => cmp(b.volume, a.volume));
    if (!rows.length) {
      this.list.replaceChildren(h("li", { class: "muted" }, `No executed trades in the last ${this.window}.`));
      return;
    }
    const max = rows[0].volume;
    this.list.replaceChildren(...rows.map((r) => {
      const pct = cmp(max, "0") > 0 ? div(r.volume, max, 4) : "0";
      const width = `${Math.max(0.5, Number(pct) * 100)}%`;
      return h("li", { dataset: { symbol: r.symbol } },
        h("span", { class: "vol-symbol" }, r.symbol),
        h("span", { class: "vol-track", "aria-hidden": "true" }, h("span", { class: "vol-bar", style: { width } })),
        h("span", { class: "vol-value" }, `${r.volume} sh`,
          h("span", { class: "muted" }, ` · ${r.tradeCount} trades · ${r.notional}`)));
    }));
  }
}
