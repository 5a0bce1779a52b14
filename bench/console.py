"""Console benchmark: the browser console served by a real embedded `mocktrade up`.

    python bench/console.py                        # 10 cold + 10 warm loads, 30 s hold; ~2-3 min
    python bench/console.py --loads 3 --duration 10    # smoke run
    python bench/console.py --profile              # + CDP CPU profile of a load and of the hold

What it measures, in Debian's chromium (/usr/bin/chromium, headless, driven
by Playwright; never `playwright install`), against `mocktrade up` on a free
127.0.0.1 port with a fresh data dir and the default simulated feed
(MOCKTRADE_FEED_TICKS_PER_SECOND=20: 20 price updates/s over the 20 default
symbols, all of which the page subscribes to). Signed in as the demo user
`alice` with a token in sessionStorage, as tests/browser does.

(a) Load: navigation start (performance.timeOrigin) -> the first price
    rendered in the watchlist (a MutationObserver installed before any page
    script sees a `#watchlist td.last` with text), the next animation frame
    after it, the first live price_update rendered (a price cell whose text
    differs from the one first rendered), and `body[data-ready=true]` (every
    panel loaded). Cold loads use a new browser context (empty HTTP cache);
    warm loads a new page in one context that already loaded the console.
    Cold and warm alternate in one run.

(b) Hold: three pages side by side for the same `--duration` seconds: the
    console with the live stream, the console with its stream disconnected
    (the same page, idle), and a blank page. Each runs the same probe: a
    requestAnimationFrame loop (frame time = delta between callbacks),
    PerformanceObserver 'longtask' (main-thread tasks > 50 ms) and, where
    Chromium has it, 'long-animation-frame' (frames > 50 ms, with script
    attribution). The blank page measures what this machine's load does to
    an empty page's frames; the idle console what the page costs without
    ticks.

Loopback only, bounded in time, stops the server and the browser itself.
Prints figures; never passes or fails on time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Platform, cpu_seconds, machine, percentile  # noqa: E402

CHROMIUM = os.environ.get("MOCKTRADE_CHROMIUM") or "/usr/bin/chromium"
USER = "alice"  # the first demo user, created by `up` on a fresh data dir
LIVE = "console, live (20 ticks/s)"
STILL = "console, live, reduced motion (no flash)"

# Runs in every page before its own scripts (Playwright add_init_script).
PROBE = r"""
(() => {
  if (window.top !== window || window.__bench) return;
  const b = window.__bench = {
    firstPrice: null, firstPriceFrame: null, firstLive: null, ready: null,
    longtasks: [], loafs: [], frames: [], updates: 0, initial: null, noLongtask: null,
  };
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) b.longtasks.push([e.startTime, e.duration]);
    }).observe({ type: "longtask", buffered: true });
  } catch (e) { b.noLongtask = String(e); }
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        b.loafs.push({ start: e.startTime, duration: e.duration, blocking: e.blockingDuration,
          render: e.renderStart ? e.startTime + e.duration - e.renderStart : 0,
          scripts: (e.scripts || []).map((s) => ({ src: s.sourceURL, fn: s.sourceFunctionName,
            invoker: s.invoker, duration: s.duration, layout: s.forcedStyleAndLayoutDuration || 0 })) });
      }
    }).observe({ type: "long-animation-frame", buffered: true });
  } catch (e) { /* no LoAF in this Chromium */ }
  const cells = () => document.querySelectorAll("#watchlist tbody td.last");
  const observer = new MutationObserver(() => {
    const now = performance.now();
    if (b.firstPrice === null) {
      const texts = [...cells()].map((td) => td.textContent);
      if (texts.length && texts.some((t) => t.trim())) {
        b.firstPrice = now;
        b.initial = texts;
        requestAnimationFrame(() => { b.firstPriceFrame = performance.now(); });
      }
    } else if (b.firstLive === null) {
      const texts = [...cells()].map((td) => td.textContent);
      if (texts.some((t, i) => t !== b.initial[i])) b.firstLive = now;
    }
    if (b.ready === null && document.body && document.body.dataset.ready === "true") b.ready = now;
    if (b.firstLive !== null && b.ready !== null) observer.disconnect();
  });
  observer.observe(document, { subtree: true, childList: true, characterData: true, attributes: true,
    attributeFilter: ["data-ready"] });
})();
"""

# Starts a measurement window in a page: frame deltas from rAF, watchlist
# updates counted by an observer on the price cells only.
START_HOLD = r"""
() => {
  const b = window.__bench;
  b.holdStart = performance.now();
  b.frames = [];
  b.updates = 0;
  b.holding = true;
  let last = null;
  const frame = (t) => {
    if (!b.holding) return;
    if (last !== null) b.frames.push(t - last);
    last = t;
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  const body = document.querySelector("#watchlist tbody");
  if (body) {
    b.updateObserver = new MutationObserver((records) => {
      for (const r of records) if (r.target.classList && r.target.classList.contains("last")) b.updates += 1;
    });
    b.updateObserver.observe(body, { subtree: true, childList: true });
  }
  return b.holdStart;
}
"""

STOP_HOLD = r"""
() => {
  const b = window.__bench;
  b.holding = false;
  if (b.updateObserver) b.updateObserver.disconnect();
  const end = performance.now();
  const inWindow = (start) => start >= b.holdStart && start <= end;
  return { seconds: (end - b.holdStart) / 1000, frames: b.frames, updates: b.updates,
    longtasks: b.longtasks.filter(([s]) => inWindow(s)),
    loafs: b.loafs.filter((l) => inWindow(l.start)), noLongtask: b.noLongtask };
}
"""

LOAD_FIGURES = r"""
() => {
  const b = window.__bench;
  const nav = performance.getEntriesByType("navigation")[0];
  const fcp = performance.getEntriesByName("first-contentful-paint")[0];
  const resources = performance.getEntriesByType("resource").map((r) => ({
    name: r.name.replace(location.origin, ""), start: r.startTime, end: r.responseEnd,
    transfer: r.transferSize, body: r.decodedBodySize }));
  return { firstPrice: b.firstPrice, firstPriceFrame: b.firstPriceFrame, firstLive: b.firstLive,
    ready: b.ready, fcp: fcp ? fcp.startTime : null,
    docEnd: nav ? nav.responseEnd : null, dcl: nav ? nav.domContentLoadedEventEnd : null,
    loadEnd: nav ? nav.loadEventEnd : null, resources,
    longtasks: b.longtasks.slice() };
}
"""


# -- machine figures ------------------------------------------------------------

def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def busy_jiffies() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle, sum(fields[:8])


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            out.append(child)
            todo.append(child)
    return out


def tree_cpu(root: int, include_root: bool = True) -> float:
    total = 0.0
    for pid in ([root] if include_root else []) + descendants(root):
        try:
            total += cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            pass
    return total


class CpuWindow:
    """CPU used by the server tree, the browser (our descendants) and the rest
    of the machine over a window, in cores."""

    def __init__(self, server_pid: int):
        self.server_pid = server_pid

    def __enter__(self) -> "CpuWindow":
        self.t0 = time.monotonic()
        self.server0 = tree_cpu(self.server_pid)
        self.ours0 = tree_cpu(os.getpid()) - self.server0
        self.busy0 = busy_jiffies()[0]
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.monotonic() - self.t0
        server = tree_cpu(self.server_pid) - self.server0
        ours = tree_cpu(os.getpid()) - server - self.server0 - self.ours0  # browser + this script
        busy = (busy_jiffies()[0] - self.busy0) / os.sysconf("SC_CLK_TCK")
        self.figures = {"server": server / elapsed, "browser": ours / elapsed,
                        "other": max(0.0, busy - server - ours) / elapsed}

    def line(self) -> str:
        f = self.figures
        return (f"cores used: server {f['server']:.2f}, browser+bench {f['browser']:.2f}, "
                f"other processes {f['other']:.2f}; load average {load_average()}")


# -- the page -------------------------------------------------------------------

def open_console(context, platform: Platform, token: str, timeout_ms: float):
    page = context.new_page()
    page.goto(platform.base + "/", wait_until="commit", timeout=timeout_ms)
    page.wait_for_function("() => window.__bench && window.__bench.ready !== null "
                           "&& window.__bench.firstLive !== null", timeout=timeout_ms, polling=100)
    return page


def new_context(browser, token: str, **options):
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, **options)
    context.add_init_script(f"sessionStorage.setItem('mocktrade.token', {token!r})")
    context.add_init_script(PROBE)
    return context


def fmt(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (f"median {statistics.median(values):7.1f}  min {min(values):7.1f}  "
            f"max {max(values):7.1f} ms  (n={len(values)})")


def measure_loads(browser, platform: Platform, token: str, loads: int, timeout_ms: float,
                  profile: bool) -> None:
    print(f"\n== (a) load: navigation start -> first price in the watchlist "
          f"({loads} cold + {loads} warm, alternating)")
    warm_context = new_context(browser, token)
    open_console(warm_context, platform, token, timeout_ms).close()  # fills the HTTP cache
    runs: dict[str, list[dict]] = {"cold": [], "warm": []}
    with CpuWindow(platform.pid) as cpu:
        for i in range(loads):
            for kind in ("cold", "warm"):
                context = new_context(browser, token) if kind == "cold" else warm_context
                page = open_console(context, platform, token, timeout_ms)
                figures = page.evaluate(LOAD_FIGURES)
                runs[kind].append(figures)
                page.close()
                if kind == "cold":
                    context.close()
    warm_context.close()
    for kind in ("cold", "warm"):
        r = runs[kind]
        print(f"  {kind}:")
        for key, label in (("docEnd", "HTML received"), ("fcp", "first contentful paint"),
                           ("dcl", "DOMContentLoaded"), ("firstPrice", "first price in the DOM"),
                           ("firstPriceFrame", "next frame after it"),
                           ("firstLive", "first live tick rendered"), ("ready", "all panels (data-ready)")):
            print(f"    {label:<27} {fmt([x[key] for x in r if x[key] is not None])}")
        lt = [d for x in r for _, d in x["longtasks"]]
        print(f"    long tasks up to data-ready: {len(lt)} in {len(r)} loads"
              + (f", max {max(lt):.1f} ms, per load median {statistics.median([len(x['longtasks']) for x in r])}"
                 if lt else ""))
        # where the load time goes: when the key requests finished (median)
        ends: dict[str, list[float]] = {}
        transfer = []
        for x in r:
            transfer.append(sum(res["transfer"] for res in x["resources"]))
            seen = set()
            for res in x["resources"]:
                name = res["name"].split("?")[0]
                if name not in seen:  # the first request of each path in this load
                    seen.add(name)
                    ends.setdefault(name, []).append(res["end"])
        print(f"    bytes over the wire per load: median {statistics.median(transfer):,.0f}")
        key_names = ["/console/js/main.js", "/console/vendor/lightweight-charts/"
                     "lightweight-charts.standalone.production.mjs", "/console/config.json", "/v1/prices"]
        for name in key_names:
            if name in ends:
                print(f"    {name.split('/')[-1]:<27} response end median {statistics.median(ends[name]):7.1f} ms")
    print(f"  {cpu.line()}")

    if profile:
        profile_load(browser, platform, token, timeout_ms)


# -- CPU profiles (CDP Profiler) -------------------------------------------------

def top_self_time(profile: dict, top: int = 15) -> list[tuple[float, str]]:
    nodes = {n["id"]: n for n in profile["nodes"]}
    deltas = profile.get("timeDeltas", [])
    self_ms: Counter = Counter()
    for sample, delta in zip(profile.get("samples", []), deltas):
        frame = nodes[sample]["callFrame"]
        url = frame.get("url", "").split("/")[-1]
        name = f"{frame.get('functionName') or '(anonymous)'} {url}:{frame.get('lineNumber', 0) + 1}" \
            if url else (frame.get("functionName") or "(program)")
        self_ms[name] += delta / 1000
    return [(ms, name) for name, ms in self_ms.most_common(top)]


def print_profile(title: str, profile: dict) -> None:
    total = sum(profile.get("timeDeltas", [])) / 1000
    idle = sum(d for s, d in zip(profile["samples"], profile["timeDeltas"])
               if {n["id"]: n for n in profile["nodes"]}[s]["callFrame"]["functionName"] == "(idle)") / 1000
    print(f"  {title}: {total:.0f} ms sampled, {total - idle:.0f} ms not idle; top self time:")
    for ms, name in top_self_time(profile):
        print(f"    {ms:8.1f} ms  {name}")


def profile_load(browser, platform: Platform, token: str, timeout_ms: float) -> None:
    context = new_context(browser, token)
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Profiler.enable")
    cdp.send("Profiler.setSamplingInterval", {"interval": 200})
    cdp.send("Profiler.start")
    page.goto(platform.base + "/", wait_until="commit", timeout=timeout_ms)
    page.wait_for_function("() => window.__bench && window.__bench.ready !== null",
                           timeout=timeout_ms, polling=100)
    profile = cdp.send("Profiler.stop")["profile"]
    print_profile("CPU profile of one cold load (renderer main thread, to data-ready)", profile)
    context.close()


# -- (b) the hold ---------------------------------------------------------------

TRACE_CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "v8.execute", "blink",
                    "cc", "gpu", "toplevel"]


def print_trace(data: bytes, seconds: float, path: str) -> None:
    """Main-thread CPU of the traced page's renderer by trace event (self thread time)."""
    events = json.loads(data)
    events = events["traceEvents"] if isinstance(events, dict) else events
    main = {(e["pid"], e["tid"]) for e in events
            if e.get("ph") == "M" and e.get("name") == "thread_name"
            and e.get("args", {}).get("name") == "CrRendererMain"}
    # The traced page's renderer: the CrRendererMain with the most events.
    busiest = Counter((e["pid"], e["tid"]) for e in events if (e.get("pid"), e.get("tid")) in main)
    if not busiest:
        print("  trace: no renderer main thread found")
        return
    key = busiest.most_common(1)[0][0]
    spans = sorted((e for e in events if (e.get("pid"), e.get("tid")) == key and e.get("ph") == "X"
                    and "tdur" in e), key=lambda e: (e["ts"], -e["dur"]))
    self_ms: Counter = Counter()
    stack: list[dict] = []
    for e in spans:  # self thread time: an event's tdur minus its direct children's
        while stack and e["ts"] >= stack[-1]["ts"] + stack[-1]["dur"]:
            stack.pop()
        if stack:
            self_ms[stack[-1]["name"]] -= e["tdur"] / 1000
        self_ms[e["name"]] += e["tdur"] / 1000
        stack.append(e)
    top, end = [], -1.0
    for e in spans:  # the outermost events: the main thread's tasks
        if e["ts"] >= end:
            top.append(e)
            end = e["ts"] + e["dur"]
    total = sum(e["tdur"] for e in top) / 1000
    long = [e for e in top if e["dur"] > 50_000]
    print(f"  trace of the live console ({path}; tracing adds its own cost): {len(top)} main-thread "
          f"tasks, {total / seconds:.0f} ms/s of thread time; longest task thread time "
          f"{max(e['tdur'] for e in top) / 1000:.1f} ms; {len(long)} tasks > 50 ms wall"
          + (f", their thread time max {max(e['tdur'] for e in long) / 1000:.1f} ms, "
             f"median {statistics.median([e['tdur'] for e in long]) / 1000:.1f} ms" if long else ""))
    print("  self thread time by trace event, ms per second:")
    for name, ms in self_ms.most_common(12):
        print(f"    {ms / seconds:7.1f}  {name}")


def page_metrics(session) -> dict[str, float]:
    return {m["name"]: m["value"] for m in session.send("Performance.getMetrics")["metrics"]}


def frame_line(frames: list[float]) -> str:
    if not frames:
        return "no frames"
    over = sum(1 for f in frames if f > 50)
    return (f"p50 {percentile(frames, 0.5):6.1f}  p99 {percentile(frames, 0.99):6.1f}  "
            f"max {max(frames):6.1f} ms  ({len(frames)} frames, {over} > 50 ms)")


def route_js_from(context, revision: str) -> None:
    """Serve the console's own modules (static/js/*.js) as they are at a git
    revision, to measure a change side by side with the working tree."""
    import subprocess

    repo = Path(__file__).resolve().parent.parent

    def handle(route) -> None:
        name = route.request.url.split("?")[0].rsplit("/", 1)[1]
        body = subprocess.run(["git", "show", f"{revision}:src/mocktrade/console/static/js/{name}"],
                              cwd=repo, capture_output=True, check=True).stdout
        route.fulfill(status=200, body=body, content_type="text/javascript")

    context.route("**/console/js/*.js", handle)


def measure_hold(browser, platform: Platform, token: str, duration: float, timeout_ms: float,
                 profile: bool, baseline_js: str | None = None, trace: str | None = None) -> None:
    print(f"\n== (b) hold: {duration:.0f} s with the page open, "
          "four pages side by side in one browser")
    live_ctx, idle_ctx, blank_ctx = (new_context(browser, token) for _ in range(3))
    live = open_console(live_ctx, platform, token, timeout_ms)
    idle = open_console(idle_ctx, platform, token, timeout_ms)
    idle.evaluate("() => window.mocktradeConsole.stream.disconnect()")
    blank = blank_ctx.new_page()
    blank.goto(platform.base + "/healthz")  # same origin, no script of its own
    # The same live page with prefers-reduced-motion: reduce, which the CSS
    # answers by not flashing the price cells: what the flash costs.
    still_ctx = new_context(browser, token, reduced_motion="reduce")
    still = open_console(still_ctx, platform, token, timeout_ms)
    pages = {LIVE: live, STILL: still, "console, stream off": idle, "blank page": blank}
    contexts = [live_ctx, still_ctx, idle_ctx, blank_ctx]
    if baseline_js:
        base_ctx = new_context(browser, token)
        route_js_from(base_ctx, baseline_js)
        pages[f"console, live, js from {baseline_js}"] = open_console(base_ctx, platform, token, timeout_ms)
        contexts.append(base_ctx)
    time.sleep(2.0)  # let the pages settle after their loads
    # CDP Performance.getMetrics per page: ThreadTime is the renderer main
    # thread's CPU time, ProcessTime the renderer process's, the *Duration
    # figures where the main thread's time went.
    sessions = {name: page.context.new_cdp_session(page) for name, page in pages.items()}
    for session in sessions.values():
        session.send("Performance.enable")
    cdp = None
    if profile:
        cdp = live_ctx.new_cdp_session(live)
        cdp.send("Profiler.enable")
        cdp.send("Profiler.setSamplingInterval", {"interval": 500})
        cdp.send("Profiler.start")
    if trace:
        browser.start_tracing(page=live, path=trace, categories=TRACE_CATEGORIES)
    with CpuWindow(platform.pid) as cpu:
        metrics0 = {name: page_metrics(session) for name, session in sessions.items()}
        for page in pages.values():
            page.evaluate(START_HOLD)
        time.sleep(duration)
        results = {name: page.evaluate(STOP_HOLD) for name, page in pages.items()}
        metrics = {name: {k: v - metrics0[name].get(k, 0) for k, v in page_metrics(session).items()}
                   for name, session in sessions.items()}
    profiled = cdp.send("Profiler.stop")["profile"] if cdp else None
    traced = browser.stop_tracing() if trace else None
    for name, r in results.items():
        lt = [d for _, d in r["longtasks"]]
        print(f"  {name}:")
        print(f"    frame time (rAF deltas)   {frame_line(r['frames'])}")
        print(f"    long tasks (> 50 ms)      {len(lt)}"
              + (f", max {max(lt):.1f} ms, total {sum(lt):.0f} ms" if lt else "")
              + (f"  [longtask observer unavailable: {r['noLongtask']}]" if r["noLongtask"] else ""))
        loafs = r["loafs"]
        if loafs:
            script_ms: Counter = Counter()
            layout_ms = 0.0
            for l in loafs:
                for s in l["scripts"]:
                    script_ms[f"{s['invoker']} ({(s['src'] or '').split('/')[-1]})"] += s["duration"]
                    layout_ms += s["layout"]
            print(f"    long animation frames     {len(loafs)}, max {max(l['duration'] for l in loafs):.1f} ms, "
                  f"median blocking {statistics.median([l['blocking'] for l in loafs]):.1f} ms, "
                  f"script in them {sum(script_ms.values()):.0f} ms "
                  f"(of which forced style+layout {layout_ms:.0f} ms)")
            for invoker, ms in script_ms.most_common(4):
                print(f"      {ms:7.0f} ms  {invoker}")
        else:
            print("    long animation frames     0")
        m = metrics[name]
        per_s = lambda key: m.get(key, 0) * 1000 / r["seconds"]  # noqa: E731
        print(f"    renderer CPU per second   main thread {per_s('ThreadTime'):.0f} ms, process "
              f"{per_s('ProcessTime'):.0f} ms; main-thread tasks {per_s('TaskDuration'):.0f} ms/s: "
              f"script {per_s('ScriptDuration'):.0f}, style {per_s('RecalcStyleDuration'):.0f}, "
              f"layout {per_s('LayoutDuration'):.0f}, other {per_s('TaskOtherDuration'):.0f}; "
              f"{m.get('LayoutCount', 0) / r['seconds']:.1f} layouts/s, "
              f"{m.get('RecalcStyleCount', 0) / r['seconds']:.1f} style recalcs/s")
        if name.startswith("console, live"):
            print(f"    price cells updated       {r['updates']} ({r['updates'] / r['seconds']:.1f}/s)")
    print(f"  {cpu.line()}")
    live_frames = results[LIVE]["frames"]
    blank_frames = results["blank page"]["frames"]
    if live_frames and blank_frames:
        print(f"  ratio live console / blank page, side by side: p50 "
              f"{percentile(live_frames, .5) / percentile(blank_frames, .5):.2f}x, p99 "
              f"{percentile(live_frames, .99) / percentile(blank_frames, .99):.2f}x")
    live_r, live_m = results[LIVE], metrics[LIVE]
    still_r, still_m = results[STILL], metrics[STILL]
    rate = lambda m, r: m.get("ThreadTime", 0) / r["seconds"]  # noqa: E731
    print(f"  main-thread CPU, live / reduced motion (flash / no flash), side by side: "
          f"{rate(live_m, live_r) / max(1e-9, rate(still_m, still_r)):.2f}x "
          f"({rate(live_m, live_r) * 1000:.0f} vs {rate(still_m, still_r) * 1000:.0f} ms/s)")
    for name in pages:
        if name.startswith("console, live, js from"):
            other_m, other_r = metrics[name], results[name]
            print(f"  main-thread CPU, working-tree js / {name.split('from ')[1]} js, side by side: "
                  f"{(live_m.get('ThreadTime', 0) / live_r['seconds']) / max(1e-9, other_m.get('ThreadTime', 0) / other_r['seconds']):.2f}x; "
                  f"long tasks {len(live_r['longtasks'])} vs {len(other_r['longtasks'])}; "
                  f"layouts/s {live_m.get('LayoutCount', 0) / live_r['seconds']:.1f} vs "
                  f"{other_m.get('LayoutCount', 0) / other_r['seconds']:.1f}")
    idle_r, idle_m = results["console, stream off"], metrics["console, stream off"]
    if live_r["updates"]:
        extra = (live_m.get("ThreadTime", 0) / live_r["seconds"]
                 - idle_m.get("ThreadTime", 0) / idle_r["seconds"]) * live_r["seconds"]
        print(f"  renderer main-thread CPU per price update (live minus stream off): "
              f"{extra * 1000 / live_r['updates']:.2f} ms")
    if profiled:
        print_profile("CPU profile of the live console over the hold", profiled)
    if traced:
        print_trace(traced, live_r["seconds"], trace)
    for ctx in contexts:
        ctx.close()


# -- main -------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loads", type=int, default=10, help="cold loads, and as many warm ones (10)")
    p.add_argument("--duration", type=float, default=30.0, help="hold, seconds (30)")
    p.add_argument("--ticks", default="20", help="MOCKTRADE_FEED_TICKS_PER_SECOND (20, the default)")
    p.add_argument("--profile", action="store_true", help="CDP CPU profiles of a load and of the hold")
    p.add_argument("--baseline-js", metavar="REV",
                   help="also hold a live console whose static/js/*.js come from git REV, side by side")
    p.add_argument("--trace", metavar="FILE", help="Chrome trace of the live console over the hold")
    p.add_argument("--timeout", type=float, default=60.0, help="per page load, seconds (60)")
    p.add_argument("--chromium", default=CHROMIUM)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from playwright.sync_api import sync_playwright

    print(f"machine: {machine()}; chromium {args.chromium}")
    print(f"load average at start: {load_average()}")
    env = {"MOCKTRADE_FEED_TICKS_PER_SECOND": args.ticks}
    timeout_ms = args.timeout * 1000
    with Platform(env=env) as platform:
        t0 = time.monotonic()
        platform.start()
        platform.wait_for_prices(20)
        print(f"mocktrade up ready on {platform.base} in {time.monotonic() - t0:.1f} s "
              f"(feed {args.ticks} ticks/s)")
        token = platform.token(USER)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium)
            try:
                print(f"browser: {browser.version} (headless)")
                measure_loads(browser, platform, token, args.loads, timeout_ms, args.profile)
                measure_hold(browser, platform, token, args.duration, timeout_ms, args.profile,
                             args.baseline_js, args.trace)
            finally:
                browser.close()
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
