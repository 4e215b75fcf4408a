"""Draw a few examples of each family of the broad prior (deepdenoise1d.broad_prior) in one figure.

    .venv/bin/python scripts/prior_gallery.py                       # runs/prior_gallery.png
    .venv/bin/python scripts/prior_gallery.py --seed 7 --length 1024 --output /tmp/gallery.png

One row per family, three examples per row: the noisy draw (grey) under the clean signal
(black), each titled with its mean, σ and SNR. An existing --output is refused unless --overwrite. Example ``j`` of family ``i`` is
``draw_noisy`` with generator ``default_rng([seed, i, j])``, restricted to that family.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from deepdenoise1d.broad_prior import FAMILIES, MIN_LENGTH, draw_noisy
from deepdenoise1d.budget import check_memory
from deepdenoise1d.cli import add_seed_arg, output_file, positive_int
from deepdenoise1d.errors import InputError, run_cli, show_path
from deepdenoise1d.safewrite import guard_output, write_policy

EXAMPLES = 3
MAX_LENGTH = 2**20  # a figure of longer signals is a black smear; far below what breaks
# Memory per sample of a panel (clean and noisy drawn, both plotted, the figure rendered): 126 bytes measured at
# 65536 samples per panel, most of it matplotlib's paths and Agg's rendering. A panel per family and example.
GALLERY_BYTES_PER_SAMPLE = 160


def signal_length(text: str) -> int:
    """argparse type: samples per signal, from :data:`MIN_LENGTH` to :data:`MAX_LENGTH`."""
    value = positive_int(text)
    if not MIN_LENGTH <= value <= MAX_LENGTH:
        raise argparse.ArgumentTypeError(f"expected a length from {MIN_LENGTH} to {MAX_LENGTH}, got {text!r}")
    return value


def check_budget(args: argparse.Namespace) -> None:
    """Refuse, in one line and before any work, a --length whose figure cannot be drawn in memory."""
    panels = len(FAMILIES) * EXAMPLES
    check_memory(panels * args.length * GALLERY_BYTES_PER_SAMPLE, f"--length {args.length} ({panels} panels)",
                 "use a smaller --length")


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=output_file, default=Path("runs") / "prior_gallery.png", metavar="PATH",
                   help="the PNG to write (default %(default)s)")
    add_seed_arg(p)
    p.add_argument("--length", type=signal_length, default=512, metavar="L",
                   help="samples per signal (default %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --output (a PNG only); without it any existing file is refused, "
                   "even this script's own earlier gallery")
    return p.parse_args(argv)


def gallery(seed: int, length: int):
    """The figure: one row per family of :data:`FAMILIES`, :data:`EXAMPLES` panels per row."""
    from matplotlib.figure import Figure  # no pyplot: no backend, no global state; Agg renders the PNG

    from deepdenoise1d import plots

    fig = Figure(figsize=(4.2 * EXAMPLES, 1.9 * len(FAMILIES)), layout="constrained")  # leaves room for suptitle
    axes = fig.subplots(len(FAMILIES), EXAMPLES, squeeze=False)
    t = np.arange(length)
    for i, name in enumerate(FAMILIES):
        for j in range(EXAMPLES):
            rng = np.random.default_rng([seed, i, j])
            clean, noisy, sigma, _ = draw_noisy(rng, length, families=[name])
            ax = axes[i, j]
            ax.plot(t, noisy, color="0.7", lw=0.6)
            ax.plot(t, clean, color="black", lw=0.9)
            snr = np.std(clean) / sigma
            ax.set_title(f"mean {np.mean(clean):.3g}, σ {sigma:.3g}, SNR {snr:.3g}", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.margins(x=0)
        axes[i, 0].set_ylabel(name, fontsize=9)
    fig.suptitle(plots.fit_title(f"broad prior: {EXAMPLES} draws per family, length {length}, seed {seed} "
                                 "(clean black, noisy grey)", 4.2 * EXAMPLES, 11), fontsize=11)
    return fig


def main(argv=None) -> Path:
    args = get_args(argv)
    check_budget(args)
    with write_policy(overwrite=args.overwrite):  # deepdenoise1d.safewrite's policy for --output
        if os.path.lexists(args.output) and not args.overwrite:  # stricter than the manifest, as asked of this script
            raise InputError(f"{show_path(args.output)}: exists; pass --overwrite to replace it")
        guard_output(args.output, kind="png")  # refuse before the work, not after
        from deepdenoise1d import plots

        path = plots.save_figure(gallery(args.seed, args.length), args.output)  # temp file, then os.replace
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run_cli(main, "prior_gallery.py")
