"""How long resume planning takes when it checks every shard's footer.

Writes N shards (default 10,000: about FineGym's sub-action units at the default 60 s)
with the clip schema and a fingerprint into a local folder, then times what a rerun
does before any work: list clips/, then read each footer and compare its fingerprint
(``pipeline.verify_shards``). Run twice in a row: the second pass is the usual case of
a rerun soon after the first, with the footers in the page cache.

    python benchmarks/resume_planning.py [--shards 10000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

from finegym_ray.preprocess.clips import clip_schema, with_fingerprint
from finegym_ray.preprocess.config import PreprocessConfig, config_hash
from finegym_ray.preprocess.pipeline import existing_units, verify_shards
from finegym_ray.preprocess.units import Window, WorkUnit


def make_units(n: int) -> list[WorkUnit]:
    units = []
    for i in range(n):
        video = f"bench{i // 40:05d}xx"
        windows = tuple(Window(f"{video}_E_000010_000200_A_{j:04d}_{j + 1:04d}", video, 10.0 + j, 11.5 + j,
                               "E_000010_000200", 1) for j in range(40))
        units.append(WorkUnit(f"{video}-{i:012x}", video, windows))
    return units


def write_shards(folder: str, units: list[WorkUnit], settings: str) -> None:
    """One shard per unit with one small row: the footer, not the data, is what planning reads."""
    schema = clip_schema(with_flow=True)
    row = {f.name: None for f in schema}
    table = pa.Table.from_pylist([row], schema=schema)
    for u in units:
        pq.write_table(with_fingerprint(table, u.fingerprint(settings)), f"{folder}/clips/{u.unit_id}.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=10_000)
    parser.add_argument("--dir", help="folder to write into (default: a temp folder)")
    args = parser.parse_args()
    out = args.dir or tempfile.mkdtemp(prefix="resume_planning_")
    os.makedirs(f"{out}/clips", exist_ok=True)
    settings = config_hash(PreprocessConfig())
    units = make_units(args.shards)
    t0 = time.perf_counter()
    write_shards(out, units, settings)
    print(f"wrote {len(units)} shards into {out}/clips in {time.perf_counter() - t0:.1f} s")
    for attempt in (1, 2):
        t0 = time.perf_counter()
        existing = existing_units(out)
        t1 = time.perf_counter()
        done, redo = verify_shards(out, [u for u in units if u.unit_id in existing], settings)
        t2 = time.perf_counter()
        assert len(done) == len(units) and not redo, (len(done), redo)
        print(f"pass {attempt}: listing {t1 - t0:.2f} s, footer checks {t2 - t1:.2f} s "
              f"({(t2 - t1) / len(units) * 1e3:.3f} ms a shard), {len(done)} shards verified")
    if not args.dir:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
