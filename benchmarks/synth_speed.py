"""How fast does SynthPeds generate? Images per second for a whole preset, files included.

    python benchmarks/synth_speed.py --preset default --num-workers 2

Writes the preset into a temporary folder (every layout, JPEG/PNG encoding and the meta file
included) and prints the wall-clock rate. The quickstart budget asks for the ``default`` preset
in about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from hf_reid.data.synthetic import generate_synthpeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="default", choices=["tiny", "default", "full"])
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate_synthpeds(
            tmp, args.preset, seed=args.seed, num_workers=args.num_workers, overwrite=True
        )
    print(
        f"SynthPeds generation ({args.preset} preset, {summary.num_images} images, {args.num_workers} worker(s), "
        f"{os.cpu_count()} CPUs): {summary.seconds:.1f} s, {summary.images_per_second:.0f} images/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
