#!/usr/bin/env python3
"""The stems chain 04 -> 05 -> 06 (separate, route, remix) on the CPU: time per stage, the
non-model overhead, and peak memory of a long song.

    flock /tmp/mp3restore-bench.lock python bench/bench_stems_chain.py               # 4 min, then 10 min
    python bench/bench_stems_chain.py --only chain --minutes 4
    python bench/bench_stems_chain.py --only long --long-minutes 10

One run of the real engine (`restore.engine.run.run`, in-process in a child) makes
04_stems, 05_stems_enhanced and 06_remixed of one MP3 (restore.examples.band, stereo
44.1 kHz, encoded at 192 kbps by lameenc; making it is not timed), with:
- separate: the FULL-SIZE published htdemucs architecture (tests.support.random_demucs.FULL,
  41.98 M parameters, 7.8 s segments) with random weights, read by demucs's own loader:
  compute and memory are those of the published model, the stems are noise;
- route: the default routes, with no neural weights present: vocals -> denoise
  (DeepFilterNet3) -> offline_restore, drums and other -> offline_restore, bass unchanged;
- remix: the stems + the residual, all at 44.1 kHz.

Each stage's `process` (and demucs's outermost `apply_model`, DeepFilterNet3's and the
offline restore's work inside the route, every FLAC write) is timed by wrapping it; what is
left of the run's wall time is the engine's own (plan, decode, markers, logs). A variant's
files are written on a thread beside the next variant's stages (engine/writebehind.py): the
writes' own time is printed, and what counts in the wall time is how long the run waited
for them. "Model" time
is apply_model + the denoiser + the offline restore's DSP (the bandwidth extension here);
the non-model overhead is everything else: the stages' own work around their models (Demucs
normalisation and residual, the route's levels and residual, the remix), the decode, the
writes and the engine. Target: <= 3 % of the chain.

Peak memory is the child's VmHWM (exec resets it). Benchmarks print figures; they never assert.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import add_common_args, load, machine_line, run_parts, say, vm_hwm_mib, work_folder  # noqa: E402

MiB = 1 << 20


# ---------------------------------------------------------------- child (imports torch)

def child_chain(work: Path, models: Path, minutes: float) -> dict:
    import numpy as np
    import torch

    import demucs.apply
    import restore.engine.song as song
    import restore.engine.writebehind as writebehind
    from restore.audio import Audio
    from restore.engine.config import RunConfig
    from restore.engine.run import run
    from restore.engine.variants import resolve_variants
    from restore.io.lame import encode_mp3
    from restore.stages.denoise.stage import DeepFilterStage
    from restore.stages.offline_restore.stage import OfflineRestoreStage
    from restore.stages.remix import RemixStage
    from restore.stages.route import RouteStage
    from restore.stages.separate import DemucsStage
    from tests.support.examples import band

    seconds = 60.0 * minutes
    pieces = [band(min(60.0, seconds - s), seed=int(s) % 7).samples for s in np.arange(0, seconds, 60.0)]
    mp3 = work / f"in-{minutes:g}" / "song.mp3"
    mp3.parent.mkdir(parents=True, exist_ok=True)
    mp3.write_bytes(encode_mp3(Audio(np.ascontiguousarray(np.concatenate(pieces, axis=1)), 44100), bitrate=192))
    del pieces
    before_mib = vm_hwm_mib()

    spent: dict[str, float] = {}
    counts: dict[str, int] = {}

    def timed(owner, attr: str, key: str, outermost: bool = False) -> None:
        real, depth = getattr(owner, attr), [0]

        def wrapper(*a, **kw):
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return real(*a, **kw)
            finally:
                depth[0] -= 1
                if not outermost or depth[0] == 0:
                    spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0
                    counts[key] = counts.get(key, 0) + 1
        setattr(owner, attr, wrapper)

    timed(demucs.apply, "apply_model", "demucs apply_model", outermost=True)
    for cls, key in ((DemucsStage, "separate"), (RouteStage, "route"), (RemixStage, "remix"),
                     (DeepFilterStage, "denoise"), (OfflineRestoreStage, "offline_restore")):
        timed(cls, "process", key)
    timed(DemucsStage, "load", "separate load")
    for cls in (DeepFilterStage, OfflineRestoreStage):  # loaded by the route, through the run's cache
        timed(cls, "load", "route loads")
    timed(song, "write_flac", "write FLAC")
    timed(writebehind.WriteBehind, "wait", "write wait")
    timed(song.SongRun, "_decode_once", "decode")
    out = work / f"out-{minutes:g}"
    t0 = time.perf_counter()
    summary = run(RunConfig(inputs=[str(mp3.parent)], out_dir=out, variants=resolve_variants("04,05,06"), device="cpu",
                            models_dir=models, report=False, stage_options={"separate": {"model": "htdemucs"}}))
    total = time.perf_counter() - t0
    facts = json.loads((out / "_done" / "06_remixed" / "song.mp3.json").read_text())["stage_facts"]
    return {"total": total, "spent": spent, "counts": counts, "results": [(r.variant, r.status, r.reason) for r in summary.results],
            "peak_mib": vm_hwm_mib(), "before_mib": before_mib, "threads": torch.get_num_threads(), "seconds": seconds,
            "song_mib": 2 * 4 * 44100 * seconds / MiB, "residual_db": facts.get("remix.residual_db"),
            "routes": {k: v for k, v in facts.items() if k.endswith(".route")}}


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        say("child", f"failed ({proc.returncode}): {proc.stderr[-3000:]}")
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- parts (this process: no torch)

def make_model(work: Path, size: str) -> Path:
    """htdemucs with random weights, FULL size (the published architecture) or TINY (the same
    class and segment, cheap compute: for the song-length buffers of a long song alone)."""
    code = ("import sys; from pathlib import Path; from tests.support.random_demucs import save_repo, FULL; "
            "save_repo(Path(sys.argv[1]) / 'demucs', 'htdemucs', **(FULL if sys.argv[2] == 'full' else {}))")
    subprocess.run([sys.executable, "-c", code, str(work / "models"), size], check=True, cwd=ROOT)
    files = sorted((work / "models" / "demucs").glob("*.th"))
    say("model", f"htdemucs {size} size: " + ", ".join(f"{p.name} {p.stat().st_size / MiB:.1f} MiB" for p in files))
    return work / "models"


def report(label: str, r: dict) -> None:
    if not r:
        return
    bad = [x for x in r["results"] if x[1] != "done"]
    if bad:
        say(label, f"not all done: {bad}")
    s, total, audio = r["spent"], r["total"], r["seconds"]
    model = s.get("demucs apply_model", 0) + s.get("denoise", 0) + s.get("offline_restore", 0)
    # The route loads its stages through the run's cache on first use: that load is not its own work.
    route_loads = s.get("route loads", 0)
    loads = s.get("separate load", 0) + route_loads
    route_own = s.get("route", 0) - s.get("denoise", 0) - s.get("offline_restore", 0) - route_loads
    separate_own = s.get("separate", 0) - s.get("demucs apply_model", 0)
    rows = [
        ("decode (once, for the three variants)", s.get("decode", 0)),
        ("load the models (Demucs's weights, DeepFilterNet3, once per run)", loads),
        ("separate: demucs apply_model (model)", s.get("demucs apply_model", 0)),
        ("separate: around it (normalise, resample checks, residual)", separate_own),
        ("route: denoise on vocals (model)", s.get("denoise", 0)),
        (f"route: offline_restore on {r['counts'].get('offline_restore', 0)} stems (bwe)", s.get("offline_restore", 0)),
        ("route: its own (levels, residual, checks)", route_own),
        ("remix (residual + 4 stems summed, peak)", s.get("remix", 0)),
        (f"waiting for {r['counts'].get('write FLAC', 0)} FLACs' writes (24-bit, hash, fsync; "
         f"{s.get('write FLAC', 0):.2f} s on the write thread)", s.get("write wait", s.get("write FLAC", 0))),
    ]
    engine = total - sum(v for _, v in rows)
    rows.append(("engine: plan, claims, markers, logs, shape checks", engine))
    say(label, f"{audio / 60:g} min stereo 44.1 kHz, torch threads {r['threads']}: whole run {total:.1f} s "
               f"(RTF {total / audio:.3f}); routes {r['routes']}")
    for what, sec in rows:
        say(label, f"  {what:<62} {sec:8.2f} s  {100 * sec / total:5.1f} %")
    non_model = total - model
    own = separate_own + route_own + s.get("remix", 0)
    say(label, f"model time {model:.1f} s; non-model overhead {non_model:.1f} s = {100 * non_model / total:.1f} % of the "
               f"chain (of which the separation's, route's and remix's own arithmetic {own:.2f} s = {100 * own / total:.2f} %, "
               f"the model loads {loads:.1f} s, the decode and the wait for writes "
               f"{s.get('decode', 0) + s.get('write wait', s.get('write FLAC', 0)):.1f} s)")
    say(label, f"peak RSS {r['peak_mib']:.0f} MiB (song as float32 {r['song_mib']:.0f} MiB; {r['before_mib']:.0f} MiB "
               f"before the run: imports and making the MP3); residual of the random stems {r['residual_db']} dB")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child_chain(Path(sys.argv[3]), Path(sys.argv[4]), float(sys.argv[5]))))  # argv[2]: the part
        return
    parts = ("chain", "long")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, parts)
    parser.add_argument("--minutes", type=float, default=4.0, help="length of the song in `chain`")
    parser.add_argument("--long-minutes", type=float, default=10.0, help="length of the song in `long`")
    parser.add_argument("--size", choices=("full", "tiny"), default="full",
                        help="htdemucs's size: full (the published architecture, default) or tiny (memory of long songs, fast)")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    with work_folder("bench-stems-chain-", args.work, args.keep) as work:
        models = make_model(work, args.size)
        run_parts([("chain", lambda: report("chain", run_child("chain", str(work), str(models), str(args.minutes)))),
                   ("long", lambda: report("long", run_child("long", str(work), str(models), str(args.long_minutes))))],
                  args.only or list(parts))
    say("done", load())


if __name__ == "__main__":
    main()
