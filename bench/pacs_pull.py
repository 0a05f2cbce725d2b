"""Pulling from a real PACS: throughput, peak memory, and a pull killed halfway then resumed.

    python bench/pacs_pull.py [--instances 1000] [--studies 50]

Starts Debian's Orthanc (DICOMweb plugin) on a free loopback port, stores `--instances` small instances (64 to
256 px, several patients) over STOW-RS, then runs `pirl ingest --dicomweb` as its own process (so its peak
memory is its own) and prints:
  * instances/s with 1 request in flight and with 4 (the default), in one run;
  * peak resident memory of a pull of a quarter of the instances and of all of them (bounded: about equal);
  * a pull SIGKILLed halfway and run again: every instance imported once, none twice.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydicom.uid import generate_uid  # noqa: E402

from tests.dicom_files import make_dicom  # noqa: E402
from tests.orthanc import PASSWORD, USER, Orthanc, picture  # noqa: E402


def load(server: Orthanc, n: int, studies: int) -> list[str]:
    """`n` instances over `studies` studies (two per patient), sizes 64 to 256 px."""
    uids = [generate_uid() for _ in range(studies)]
    batch = []
    for i in range(n):
        size, k = (64, 128, 192, 256)[i % 4], i % studies
        batch.append(make_dicom(None, picture(i, size), patient=f"B{k // 2}", study=uids[k],
                                modality="CR" if k < studies // 4 else "US"))  # a quarter of the studies: CR
        if len(batch) == 50:
            server.store(batch)
            batch = []
    if batch:
        server.store(batch)
    return uids


def pull_cmd(ws: Path, server: Orthanc, query: str, name: str, workers: int) -> list[str]:
    return [sys.executable, "-m", "pirl_core.cli", "-w", str(ws), "ingest", "--dicomweb", server.url, "--query", query,
            "--name", name, "--workers", str(workers)]


def timed_pull(cmd: list[str], env: dict) -> tuple[dict, float, float]:
    """(report, seconds, peak RSS in MiB) of one pull in a process of its own (os.wait4: that child's own peak)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise SystemExit(err.read()[-3000:])
        return json.loads(out.read()), seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--studies", type=int, default=50)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pacs-bench-"))
    server = Orthanc(tmp / "orthanc")
    env = {**os.environ, "PIRL_PACS_USER": USER, "PIRL_PACS_PASSWORD": PASSWORD}
    env.pop("PIRL_PACS_CONFIG", None)
    try:
        t = time.perf_counter()
        load(server, args.instances, args.studies)
        print(f"stored {args.instances} instances in {args.studies} studies in {time.perf_counter() - t:.1f} s")
        everything = "StudyDate=19000101-21001231"
        rates = {}
        for workers in (1, 4):
            report, seconds, _ = timed_pull(pull_cmd(tmp / f"ws-w{workers}", server, everything, "all", workers),
                                            env)
            assert report["imported"] == args.instances, report
            rates[workers] = args.instances / seconds
            print(f"{workers} request(s) at once: {rates[workers]:.0f} instances/s end to end ({seconds:.1f} s); "
                  f"fetching alone {args.instances / report['download_s']:.0f} instances/s")
        print(f"4 at once vs 1: {rates[4] / rates[1]:.2f}x")

        # Peak memory in fresh processes: a quarter of the studies, then all of them.
        peaks = {}
        for label, query in (("quarter", "ModalitiesInStudy=CR"), ("all", everything)):
            report, _, peak = timed_pull(pull_cmd(tmp / f"ws-mem-{label}", server, query, label, 4), env)
            peaks[label] = (report["imported"], peak)
        (n_q, peak_q), (n_a, peak_a) = peaks["quarter"], peaks["all"]
        idle = timed_pull([sys.executable, "-m", "pirl_core.cli", "-w", str(tmp / "ws-idle"), "datasets"], env)[2]
        print(f"peak memory: {idle:.0f} MiB for `pirl datasets` (the imports alone); {peak_q:.0f} MiB pulling "
              f"{n_q} instances, {peak_a:.0f} MiB pulling {n_a} "
              f"({peak_a / peak_q:.2f}x for {n_a / max(n_q, 1):.1f}x the instances)")

        # Killed halfway, run again.
        ws = tmp / "ws-kill"
        cmd = pull_cmd(ws, server, everything, "killed", 4)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and len(list((ws / "uploads").rglob("*.dcm"))) < args.instances // 2:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        staged = len(list((ws / "uploads").rglob("*.dcm")))
        report, seconds, _ = timed_pull(cmd, env)
        print(f"killed with {staged} of {args.instances} staged; the rerun fetched {report['downloaded']}, reused "
              f"{report['reused']}, imported {report['imported']} ({len(report['duplicates'])} duplicates): "
              + ("every instance once" if report["imported"] == args.instances and not report["duplicates"]
                 and report["downloaded"] + report["reused"] == args.instances else "MISMATCH"))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
