// Small DOM helpers: element building and number display.
import { sign } from "./decimal.js";

/** h("td", {class: "num"}, "12.50"); style is an object: {width: "40%"} */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    // Through the CSSOM, never a style attribute: the page's CSP allows no inline style.
    else if (k === "style") Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

/** A decimal string as given, or a dash. */
export function num(value) {
  return value === null || value === undefined || value === "" ? "—" : String(value);
}

/** A signed decimal string with + for gains, and its direction as a class. */
export function signed(value) {
  if (value === null || value === undefined) return { text: "—", cls: "" };
  const s = sign(value);
  return { text: s > 0 ? `+${value}` : String(value), cls: s > 0 ? "up" : s < 0 ? "down" : "" };
}

export function setSigned(el, value, suffix = "") {
  const { text, cls } = signed(value);
  el.textContent = value === null || value === undefined ? text : text + suffix;
  el.classList.remove("up", "down");
  if (cls) el.classList.add(cls);
}

export function time(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toISOString().replace("T", " ").slice(0, 19) + "Z";
}

export function shortTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toISOString().slice(11, 19);
}
