"""Artifacts, export and import (DESIGN.md section 9), measured on real processes.

- Export and import of a project whose document is about 20 MB: wall time and peak RSS
  of the `blackboard export` / `blackboard import` process (embedded SQLite, the
  server stopped so it is not measured with them).
- Artifact upload and download through a Blackboard server: MB/s of a 200 MB body
  streamed by one client, against the data-dir folder and against an S3 server process
  (moto's standalone server, in-memory and in Python: it stands in for MinIO here and is
  likely the slower part), with the server's RSS growth.

    python -m bench.objects            # about a minute
    python -m bench.objects --write    # also puts it in bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from pycrdt import Map

from bench.procstat import rss_bytes
from blackboard.sync.client import BlackboardClient
from tests.support.s3_server import S3ServerProcess
from tests.support.server import ROOT, ServerProcess

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
START = "<!-- objects:start -->"
END = "<!-- objects:end -->"
MB = 1024 * 1024
SHOT_TEXT = 10_000  # characters of description per shot
SHOTS_PER_UPDATE = 80  # ~800 KB, under the 1 MiB message limit


async def _fill(server: ServerProcess, project: str, target_bytes: int) -> int:
    """Shots with long descriptions until the document is `target_bytes`; its size."""
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as http:
        body = {"project_id": project, "title": project, "budget_total": 1000}
        assert (await http.post("/api/projects", json=body)).status_code == 201
        async with BlackboardClient(server.ws, project) as client:
            shots = client.doc.get("shots", type=Map)
            n = 0
            while len(client.doc.get_update()) < target_bytes:
                with client.doc.transaction():
                    for _ in range(SHOTS_PER_UPDATE):
                        text = os.urandom(SHOT_TEXT // 2).hex()
                        shots[f"S{n:05d}"] = Map({"title": f"shot {n}", "description": text})
                        n += 1
                await client.flushed()
            return len(client.doc.get_update())


def _timed_cli(*args: str) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, peak RSS bytes) of one `blackboard` command, which
    must succeed."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "blackboard.web.cli", *args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        # wait4: this child's own resource usage (its peak RSS), not all children's.
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"blackboard {args[0]} failed: {errors.read().decode()}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024  # KiB on Linux


async def export_import(work: Path, target_bytes: int) -> dict[str, float]:
    server = await ServerProcess(work / "data").start()
    try:
        size = await _fill(server, "film", target_bytes)
    finally:
        await server.stop()
    data = ["--data-dir", str(work / "data")]
    archive = work / "film.zip"
    export_s, export_cpu, export_rss = _timed_cli("export", "film", "--out", str(archive), *data)
    import_s, import_cpu, import_rss = _timed_cli(
        "import", str(archive), "--as", "film-copy", *data
    )
    return {
        "load": os.getloadavg()[0],
        "export_cpu_s": export_cpu,
        "import_cpu_s": import_cpu,
        "doc_mb": size / 1e6,
        "archive_mb": archive.stat().st_size / 1e6,
        "export_s": export_s,
        "export_rss_mb": export_rss / MB,
        "import_s": import_s,
        "import_rss_mb": import_rss / MB,
    }


async def transfer(server: ServerProcess, size_mb: int) -> dict[str, float]:
    block = os.urandom(MB)
    assert server.proc is not None
    pid = server.proc.pid

    peak = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal peak
        for n in range(size_mb):
            if n % 10 == 0:
                peak = max(peak, rss_bytes(pid))
            yield block

    async with httpx.AsyncClient(base_url=server.http, timeout=300) as http:
        body_json = {"project_id": "film", "title": "film", "budget_total": 1000}
        assert (await http.post("/api/projects", json=body_json)).status_code == 201
        before = rss_bytes(pid)
        started = time.perf_counter()
        put = await http.put("/api/projects/film/artifacts/clip", content=body())
        upload_s = time.perf_counter() - started
        assert put.status_code == 201, put.text
        received = 0
        started = time.perf_counter()
        async with http.stream("GET", "/api/projects/film/artifacts/clip") as response:
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if received % (10 * MB) < len(chunk):
                    peak = max(peak, rss_bytes(pid))
        download_s = time.perf_counter() - started
        assert received == size_mb * MB
        peak = max(peak, rss_bytes(pid))
    return {
        "upload_mb_s": size_mb * MB / 1e6 / upload_s,
        "download_mb_s": size_mb * MB / 1e6 / download_s,
        "rss_growth_mb": (peak - before) / MB,
        "rss_after_mb": (rss_bytes(pid) - before) / MB,
    }


async def transfers(work: Path, size_mb: int) -> dict[str, dict[str, float]]:
    results = {}
    env = {"BLACKBOARD_MAX_ARTIFACT_BYTES": str((size_mb + 1) * MB)}
    server = await ServerProcess(work / "folder", env).start()
    try:
        results["data-dir folder"] = await transfer(server, size_mb)
    finally:
        await server.close()
    s3 = await asyncio.to_thread(S3ServerProcess(work).start)  # its wait blocks
    try:
        server = await ServerProcess(work / "s3", {**env, **s3.env(s3.config())}).start()
        try:
            results["S3 (moto server)"] = await transfer(server, size_mb)
        finally:
            await server.close()
    finally:
        await asyncio.to_thread(s3.close)
    return results


def section(doc: dict[str, float], moved: dict[str, dict[str, float]], size_mb: int) -> str:
    machine = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    lines = [
        START,
        "## Artifacts, export and import",
        "",
        f"`python -m bench.objects` ({time.strftime('%Y-%m-%d')}; {machine}; the machine was",
        "shared with other engineers' test runs while this ran, so expect ±30 % or worse).",
        "",
        f"Export and import of a project whose document is {doc['doc_mb']:.1f} MB (shots with",
        "long descriptions; embedded SQLite; wall time, CPU time and peak RSS of the",
        "`blackboard` process, which starts Python and opens the database too; load average",
        f"{doc['load']:.1f} on the 2 cores when measured, so wall time is inflated and CPU",
        "time is the steadier figure):",
        "",
        "| | wall s | CPU s | peak RSS MB |",
        "|---|---:|---:|---:|",
        f"| `blackboard export` ({doc['archive_mb']:.1f} MB archive) | {doc['export_s']:.2f}"
        f" | {doc['export_cpu_s']:.2f} | {doc['export_rss_mb']:.0f} |",
        f"| `blackboard import --as` | {doc['import_s']:.2f} | {doc['import_cpu_s']:.2f}"
        f" | {doc['import_rss_mb']:.0f} |",
        "",
        f"Artifact transfer through the server, one client streaming {size_mb} MB (random",
        "bytes) up, then down; the server process's RSS above where it started, at its",
        "peak (sampled every 10 MB) and once both were done:",
        "",
        "| object store | upload MB/s | download MB/s | RSS peak / after MB |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {r['upload_mb_s']:.0f} | {r['download_mb_s']:.0f}"
            f" | {r['rss_growth_mb']:.0f} / {r['rss_after_mb']:.0f} |"
            for name, r in moved.items()
        ),
        "",
        "The S3 row measures moto, an in-memory Python server standing in for MinIO (which",
        "cannot be installed here): most of its time is moto's. Memory stays flat either",
        "way: bodies stream in 1 MiB chunks; an S3 upload holds a 5 MiB part (a few copies",
        "of it at once, in minio), freed once sent (`web/malloc_tuning.py`).",
        END,
    ]
    return "\n".join(lines)


def write(text: str) -> None:
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if START in current and END in current:
        before, rest = current.split(START, 1)
        updated = before + text + rest.split(END, 1)[1]
    else:
        updated = current.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.objects", description=__doc__)
    parser.add_argument("--doc-mb", type=float, default=20.0)
    parser.add_argument("--artifact-mb", type=int, default=200)
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()

    async def run() -> str:
        with tempfile.TemporaryDirectory(prefix="bench-objects-") as tmp:
            doc = await export_import(Path(tmp) / "doc", int(args.doc_mb * 1e6))
            moved = await transfers(Path(tmp) / "moved", args.artifact_mb)
        return section(doc, moved, args.artifact_mb)

    text = asyncio.run(run())
    print(text)
    if args.write:
        write(text)


if __name__ == "__main__":
    main()
