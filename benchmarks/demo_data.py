"""Wall time of generating the built-in demo data at scale 1 (target: under 4 s).

python -m benchmarks.demo_data [--scale 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

from scdrugmap.data.demo import generate_demo_datasets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times = []
    for seed in range(args.repeats):
        started = time.perf_counter()
        datasets = generate_demo_datasets(seed=seed, scale=args.scale)
        times.append(time.perf_counter() - started)
    n_cells = sum(d.adata.n_obs for d in datasets)
    print(
        f"demo data, scale {args.scale:g} ({len(datasets)} data sets, {n_cells:,} cells): "
        f"best {min(times):.2f} s, worst {max(times):.2f} s of {args.repeats}"
    )


if __name__ == "__main__":
    main()
