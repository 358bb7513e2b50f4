#!/usr/bin/env python3
"""Runs every command block of README.md and docs/*.md marked as runnable, in order.

A block is runnable when its fence reads ```sh runnable. Each block runs in bash with
`set -euo pipefail` (so every command in it must succeed), in one scratch directory shared by
all blocks, laid out as a checkout after scripts/run-worker.sh: build/release/bin/worker is the
worker under test, build/release/plugins/ holds the shipped plugins, and `worker` is on PATH.
The worker talks to a private redis-server started here and to the test PostgreSQL
(WK_TEST_PG_*). README.md comes first, then docs/*.md by name. The test fails on the first
block that exits non-zero, naming the file and line and showing its output.

Usage: runnable_docs_test.py --root REPO --worker BINARY --plugins DIR [--list]
"""
import argparse
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

FENCE = re.compile(r"^```sh runnable\s*$")
BLOCK_TIMEOUT_S = 120  # under the ctest timeout, so that a hang is reported here, by block


def runnable_blocks(root: pathlib.Path):
    files = [root / "README.md"] + sorted((root / "docs").glob("*.md"))
    for path in files:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            if FENCE.match(lines[i]):
                start = i + 1
                end = start
                while end < len(lines) and not lines[end].startswith("```"):
                    end += 1
                if end == len(lines):
                    raise SystemExit(f"{path.relative_to(root)}:{start}: runnable block never closed")
                yield path.relative_to(root), start + 1, "\n".join(lines[start:end])
                i = end
            i += 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(work: pathlib.Path):
    port = free_port()
    data = work / "redis"
    data.mkdir()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("could not start redis-server")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--plugins", required=True)
    ap.add_argument("--list", action="store_true", help="print the blocks instead of running them")
    args = ap.parse_args()
    root = pathlib.Path(args.root).resolve()
    blocks = list(runnable_blocks(root))
    if args.list:
        for path, line, text in blocks:
            print(f"--- {path}:{line}\n{text}")
        return 0
    if not blocks:
        print("no runnable blocks found", file=sys.stderr)
        return 1

    work = pathlib.Path(tempfile.mkdtemp(prefix="wk-docs-"))
    redis = None
    try:
        checkout = work / "checkout"
        (checkout / "build/release/bin").mkdir(parents=True)
        (checkout / "build/release/bin/worker").symlink_to(pathlib.Path(args.worker).resolve())
        plugins = checkout / "build/release/plugins"
        plugins.mkdir(mode=0o700)
        for so in sorted(pathlib.Path(args.plugins).glob("*.so")):
            shutil.copy(so, plugins / so.name)
            (plugins / so.name).chmod(0o644)
        bin_dir = work / "bin"
        bin_dir.mkdir()
        (bin_dir / "worker").symlink_to(pathlib.Path(args.worker).resolve())
        redis, port = start_redis(work)
        env = dict(os.environ)
        env.update({
            "PATH": f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
            "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(port), "REDIS_DB": "0",
            "DB_HOST": env.get("WK_TEST_PG_HOST", "127.0.0.1"), "DB_PORT": env.get("WK_TEST_PG_PORT", "5432"),
            "DB_USERNAME": env.get("WK_TEST_PG_USER", "postgres"), "DB_NAME": env.get("WK_TEST_PG_DB", "autodevs"),
            "WORKER_METRICS_ADDR": "", "WORKTREE_BASE_DIR": str(work / "worktrees"),
        })
        # Only what a reader's fresh shell would have: no settings of this machine's own.
        for key in list(env):
            if key.startswith(("REDIS_", "DB_", "WORKER_", "LOG_", "AI_", "WORKTREE_")) and key not in (
                    "REDIS_HOST", "REDIS_PORT", "REDIS_DB", "DB_HOST", "DB_PORT", "DB_USERNAME", "DB_NAME",
                    "WORKER_METRICS_ADDR", "WORKTREE_BASE_DIR"):
                del env[key]
        for path, line, text in blocks:
            print(f"=== {path}:{line}", flush=True)
            try:
                result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + text], cwd=checkout, env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, timeout=BLOCK_TIMEOUT_S)
            except subprocess.TimeoutExpired as e:
                out = e.output.decode(errors="replace") if isinstance(e.output, bytes) else (e.output or "")
                print(out, end="")
                print(f"FAIL: the runnable block at {path}:{line} ran over {BLOCK_TIMEOUT_S} s", file=sys.stderr)
                return 1
            print(result.stdout, end="", flush=True)
            if result.returncode != 0:
                print(f"FAIL: the runnable block at {path}:{line} exited with {result.returncode}", file=sys.stderr)
                return 1
        print(f"OK: {len(blocks)} runnable blocks")
        return 0
    finally:
        if redis is not None:
            redis.kill()
            redis.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
