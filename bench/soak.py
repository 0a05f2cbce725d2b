"""Soak: queued jobs, signed-in browser sessions polling every page, and a loop of imports, all at once.

Prints, once a minute, the resident memory of the app server and of the job worker, the page visits and how
many failed (an exception element, an HTTP error or a timeout), and at the end rows lost or duplicated
(every import that reported success has its dataset and all its images; no dataset twice), jobs that failed,
how long a page took to show (click to the end of the run it started: median, 95th percentile, share under
2 s; the slowest visits, and which visit of that page by that session each was) and the server's memory in the
first and the last 5 minutes.

    python bench/soak.py --minutes 30          # the full soak
    python bench/soak.py --minutes 3 --sessions 3 --jobs 3
    python bench/soak.py --workspace WS        # over a `pirl app --demo` workspace whose pipeline finished
    python bench/soak.py --workspace WS --jobs 0 --no-imports --sessions 1 --minutes 3   # page times alone, any WS
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from pirl_core import demo
from pirl_core.access import users
from pirl_core.data import demo_data, ingest, sources
from pirl_core.engine.config import PretrainConfig
from pirl_core.jobs import kinds, queue
from pirl_core.workspace.folder import Workspace

ROOT = Path(__file__).resolve().parent.parent
assert kinds  # registers the job kinds queue.submit checks against
PAGES = ["", "data", "pretrain", "label", "compare", "explore", "predict", "export"]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def rss_mb(pid: int | None) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, TypeError):
        pass
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Marks the end of the next script run: the app root's script state goes running, then notRunning. A page
# counts as shown when the run its click started has ended (a check for "no status widget" right after the
# click can pass before the run has even begun). A click while a run is still going (the sign-in's own run of
# Home, or a fragment's redraw: a full rerun preempts both) restarts it with no notRunning between: the state
# never changes to running, so the run counts as started already (otherwise the visit ended only with the next
# fragment redraw, up to 3 s later).
WATCH_RUN = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  window.pirlRunStarted = app.getAttribute('data-test-script-state') === 'running'; window.pirlRunDone = false;
  if (!window.pirlWatching) {
    window.pirlWatching = new MutationObserver(() => {
      const state = app.getAttribute('data-test-script-state');
      if (state === 'running') window.pirlRunStarted = true;
      else if (state === 'notRunning' && window.pirlRunStarted) window.pirlRunDone = true;
    });
    window.pirlWatching.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
  }
}"""


def browse(url: str, name: str, password: str, pages: list[str], stop: threading.Event, counts: dict,
           lock: threading.Lock):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=os.environ.get("PIRL_TEST_CHROMIUM", "/usr/bin/chromium"),
                                     args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(url)
        page.get_by_role("textbox", name="User name").fill(name)
        page.get_by_role("textbox", name="Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text(f"Signed in as {name}").wait_for(timeout=60_000)
        i = 0
        while not stop.is_set():
            path = pages[i % len(pages)]
            i += 1
            ok, why = True, ""
            try:
                link = {"": "Home"}.get(path, path.capitalize())
                page.evaluate(WATCH_RUN)
                started = time.perf_counter()
                page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=link).click(timeout=30_000)
                page.wait_for_function("() => window.pirlRunDone", timeout=60_000)
                took = time.perf_counter() - started
                errors = page.locator('[data-testid="stException"]')
                ok = errors.count() == 0
                why = "" if ok else f"/{path}: {errors.first.inner_text()[:300]}"
            except Exception as exc:  # noqa: BLE001  a timeout or a closed connection counts as a failed visit
                ok, why = False, f"/{path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            with lock:
                counts["visits"] += 1
                counts["failed"] += not ok
                if ok:
                    counts.setdefault("seconds", []).append(took)
                    counts.setdefault(f"/{path}", []).append(took)
                    counts.setdefault("visit", []).append((took, f"/{path}", (i - 1) // len(pages) + 1, name))
                if why:
                    counts.setdefault("why", []).append(why)
            time.sleep(1)
        browser.close()


def _times(seconds: list[float]) -> str:
    if not seconds:
        return "no visit"
    seconds = sorted(seconds)
    return (f"{seconds[len(seconds) // 2]:.2f} s (median), {seconds[int(len(seconds) * 0.95)]:.2f} s (95th "
            f"percentile), {max(seconds):.2f} s (slowest), {sum(t < 2 for t in seconds) / len(seconds):.0%} under "
            f"2 s, {len(seconds)} visits")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--workspace", type=Path, help="soak this workspace, filled by `pirl app --demo` and its "
                    "pipeline finished (pages with runs, a comparison and a model), not a fresh one; it keeps the "
                    "soak's users, imports and cancelled jobs")
    ap.add_argument("--no-imports", action="store_true", help="no import loop (page times alone; with --jobs 0 "
                    "any workspace will do, not only a demo one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.workspace:  # pages with something on them: runs, comparisons, a model
            ws = Workspace.open(args.workspace)
            pool, images = ws.store.dataset(demo.POOL), ws.root / "demo-data" / "unlabeled"
            if pool is None and (args.jobs or not args.no_imports):
                raise SystemExit(f"{args.workspace} holds no demo pool: fill it with `pirl app --demo` first, "
                                 "or soak with --jobs 0 --no-imports.")
            pool_id = pool["id"] if pool else None
        else:
            demo_data.generate(tmp / "demo", n=40, unlabeled=120, size=96)
            images = tmp / "demo" / "unlabeled"
            ws = Workspace.open(tmp / "ws")
            pool_id = ingest.ingest(ws, sources.folder_source(images, check_roots=False), "pool").dataset_id
            ingest.ingest(ws, sources.folder_source(tmp / "demo" / "labeled", check_roots=False), "lab",
                          folder_labels=True)
        password = "soak password 1"
        for k in range(args.sessions):
            users.add_user(ws, f"user{k}", password, "editor" if k == 0 else "viewer")
        queued = [queue.submit(ws, "pretrain", PretrainConfig(image_size=64, epochs=200, batch_size=16,
                                                              seed=k).to_dict(), pool_id) for k in range(args.jobs)]
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
             "--server.headless", "true"], cwd=ROOT, env={**os.environ, "PIRL_HOME": str(ws.root)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        stop, lock = threading.Event(), threading.Lock()
        counts = {"visits": 0, "failed": 0}
        sessions = [threading.Thread(target=browse, args=(  # viewers have no Export page
                    url, f"user{k}", password, PAGES if k == 0 else PAGES[:-1], stop, counts, lock))
                    for k in range(args.sessions)]
        for t in sessions:
            t.start()
        imported, import_failures, n, memory = {}, 0, 0, []
        tag = time.strftime("%H%M%S")  # a second soak of one workspace imports under new names
        t0, next_report = time.time(), time.time()
        print("minute  server MB  worker MB  visits  failed  imports", flush=True)
        while time.time() - t0 < args.minutes * 60:
            n += 1
            try:
                if not args.no_imports:
                    files = sources.folder_source(images, check_roots=False)[: 5 + n % 20]
                    imported[f"soak-{tag}-{n}"] = ingest.ingest(Workspace(ws.root), files, f"soak-{tag}-{n}").imported
            except Exception as exc:  # noqa: BLE001
                import_failures += 1
                print(f"import {n} failed: {exc}", flush=True)
            if time.time() >= next_report:
                worker = next((j["pid"] for j in ws.store.running_jobs()), None)
                if counts["visits"]:  # from the first page on: the server before any session is not its baseline
                    memory.append((time.time() - t0, rss_mb(server.pid)))
                with lock:
                    print(f"{(time.time() - t0) / 60:6.1f}  {rss_mb(server.pid):9.0f}  {rss_mb(worker):9.0f}  "
                          f"{counts['visits']:6d}  {counts['failed']:6d}  {len(imported):7d}", flush=True)
                next_report += 60
            time.sleep(2)
        stop.set()
        for t in sessions:
            t.join(timeout=120)
        names = [d["name"] for d in ws.store.datasets()]
        lost = [name for name, k in imported.items()
                if name not in names or len(ws.store.images(ws.store.dataset(name)["id"])) != k]
        duplicated = len(names) - len(set(names))
        failed_jobs = [j["id"] for j in ws.store.jobs(statuses=["failed"]) if j["id"] in queued]
        for job_id in queued:  # its own: a run the user started beside the soak (the load it measures) goes on
            queue.cancel(ws, job_id)
        server.terminate()
        print(f"\n{counts['visits']} page visits by {args.sessions} signed-in sessions, {counts['failed']} failed; "
              f"{len(imported)} imports, {import_failures} failed, {len(lost)} lost, {duplicated} duplicated "
              f"dataset rows; {args.jobs} jobs queued and training throughout, {len(failed_jobs)} failed.", flush=True)
        print(f"a page shown in {_times(counts.get('seconds', []))}", flush=True)
        for path in PAGES:
            print(f"  /{path:<9} {_times(counts.get(f'/{path}', []))}", flush=True)
        print("slowest: " + "; ".join(f"{p} ({n}. visit by {who}) {t:.2f} s"
                                      for t, p, n, who in sorted(counts.get("visit", []), reverse=True)[:6]))
        first = [mb for t, mb in memory if t < 300]
        last = [mb for t, mb in memory if t > memory[-1][0] - 300] if memory else []
        if first and last:
            print(f"server memory: {sum(first) / len(first):.0f} MB in the first 5 minutes, "
                  f"{sum(last) / len(last):.0f} MB in the last 5", flush=True)
        for why in sorted(set(counts.get("why", [])))[:10]:
            print("failed visit:", why, flush=True)


if __name__ == "__main__":
    main()
