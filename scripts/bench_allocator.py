"""Whole processes with the allocator setting of ``briarpatch/_memory.py`` against glibc's defaults.

Each round runs, for both settings in turn, a short training (`briarpatch train`, the default
recipe with fewer steps) and an evaluation of the patch it wrote (the main protocol and two
channels, nothing cached), as separate processes, and reads
their wall, user and system seconds and peak memory (``wait4``). "glibc defaults" sets
``MALLOC_PERTURB_=0`` (which changes nothing in glibc), and any ``MALLOC_*`` variable makes
briarpatch leave the allocator as it is.

    python scripts/bench_allocator.py                      # 2 rounds, 96 patch steps
    python scripts/bench_allocator.py --rounds 1 --patch-steps 8 -- experiment=smoke
Arguments after ``--`` are overrides for both commands' runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {"kept (briarpatch's)": {}, "glibc defaults": {"MALLOC_PERTURB_": "0"}}


def _run(cmd: list[str], env: dict) -> dict:
    """Wall, user, system seconds and peak resident memory (MiB) of one child process."""
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a chatty child cannot fill it and stall
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        if proc.returncode:
            log.seek(0)
            sys.exit(f"briarpatch {cmd[3]} failed ({proc.returncode}):\n{log.read().decode(errors='replace')[-2000:]}")
    return {"wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024}


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--patch-steps", type=int, default=96)
    args = p.parse_args(argv)
    cli = [sys.executable, "-m", "briarpatch.cli"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    work = Path(tempfile.mkdtemp(prefix="bench_allocator_"))
    results = {name: {"train": [], "evaluate": []} for name in SETTINGS}
    try:
        for r in range(args.rounds):
            for i, (name, env_extra) in enumerate(SETTINGS.items()):
                run = work / f"round{r}_setting{i}"
                env = {**base, **env_extra}
                train = [*cli, "train", f"patch_steps={args.patch_steps}",
                         f"adversary.warmup_steps={max(1, args.patch_steps // 3)}", "evaluate_after_train=false",
                         f"hydra.run.dir={run}", *extra]
                results[name]["train"].append(_run(train, env))
                # The main protocol and two of the report's channels, with nothing cached.
                evaluate = [*cli, "evaluate", f"patch={run}", "eval.cache_dir=null", "eval.n_boot=0",
                            "eval.baselines=false", "eval.robustness=[identity,jpeg:75]", "eval.robustness_size=1024",
                            f"hydra.run.dir={run}/eval", *extra]
                results[name]["evaluate"].append(_run(evaluate, env))
                print(f"round {r + 1}, {name}: train {results[name]['train'][-1]['wall']:.1f} s, "
                      f"evaluate {results[name]['evaluate'][-1]['wall']:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    kept, default = SETTINGS
    print(f"\nmedians over {args.rounds} round(s), processes alternated; ratio = kept / glibc defaults")
    print(f"{'':10s} {'':6s} {kept:>20s} {default:>16s} {'ratio':>7s}")
    for stage in ("train", "evaluate"):
        for key, unit in (("wall", "s"), ("user", "s"), ("sys", "s"), ("rss_mib", "MiB")):
            a = statistics.median(x[key] for x in results[kept][stage])
            b = statistics.median(x[key] for x in results[default][stage])
            print(f"{stage:10s} {key:6s} {a:17.1f} {unit:>3s} {b:12.1f} {unit:>3s} {a / b:7.2f}")


if __name__ == "__main__":
    main()
