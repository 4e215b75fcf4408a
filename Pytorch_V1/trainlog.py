"""A training run's log: train_log.csv (one row per validation), the progress and validation text,
and the curve and summary at the end of a run."""
from __future__ import annotations

import csv
import io
import math
import os
import sys
from pathlib import Path

from icnn.spec import BN_MODES
from deepdenoise1d.plots import save_figure, training_curve
from deepdenoise1d.safewrite import atomic_write, is_recorded, record_outputs, tracked_folder_of

REPO = Path(__file__).resolve().parent.parent

LOG_COLUMNS = ["step", "loss", "lr", "val_rmse_fixed", "val_rmse_unfixed", "val_root_mse_fixed",
               "val_sure_root_mse_fixed", "seconds"]


def start_log(path: Path, step: int) -> None:
    """A fresh log (header only) at step 0; on resume, keep the rows up to ``step`` (a killed run
    may have logged past its last checkpoint) and recreate the header if the log is missing."""
    rows = read_log(path) if step > 0 and path.is_file() else []
    kept = [r for r in rows if r.get("step", "").isdigit() and 0 <= int(r["step"]) <= step]  # step 0: an --init run's start
    text = io.StringIO()
    writer = csv.DictWriter(text, LOG_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept)
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))


def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if None not in r.values()]  # a row cut short by a kill has Nones


def append_log(path: Path, state, lr: float, seconds: float) -> None:
    """One row: ``state`` (checkpoint.TrainState) gives the step, the mean loss since the last row and the validation."""
    v = lambda key: f"{state.val.get(key, math.nan):.5f}"  # noqa: E731
    loss = state.loss_sum / state.loss_count if state.loss_count else math.nan  # nan: the start, before any step
    row = [state.step, f"{loss:.6f}", f"{lr:.3e}", v("fixed"), v("unfixed"),
           v("root_mse_fixed"), v("sure_fixed"), f"{seconds:.1f}"]
    own = is_recorded(path)
    with open(path, "a", newline="") as f:
        csv.writer(f, lineterminator="\n").writerow(row)
    if own:  # still this project's output after the append: the next start_log may replace it
        record_outputs([path], durable=False)


def progress_text(state, val) -> str:
    """The progress bar's postfix: last loss and validation (``val``: data.Validation)."""
    return f"loss {state.last_loss:.3f}; validation {validation_text(state.val)}{bayes_text(val)}"


def bayes_text(val) -> str:
    return f" (Bayes {val.bayes:.4f})" if val.bayes is not None else ""


def validation_text(result: dict) -> str:
    """``RMSE fixed …, unfixed …; √(mean SURE) fixed …`` (SURE only in label-free runs, RMSE only with labels)."""
    parts = []
    for label, prefix in (("RMSE", ""), ("√(mean SURE)", "sure_")):
        values = ", ".join(f"{m} {result[prefix + m]:.4f}" for m in BN_MODES if prefix + m in result)
        if values:
            parts.append(f"{label} {values}")
    if "unsure_sigma" in result:
        parts.append(f"learned σ {result['unsure_sigma']:.4f}")
    return "; ".join(parts)


def finish(run, val, state, data: str | None = None, broad: bool = False, adapted: bool = False,
           record: bool = False) -> None:
    """Draw the curve, print the result and the commands that test, convert and evaluate this run.

    ``data`` is the run's ``--data`` folder: then the model is evaluated on the user's own
    held-out signals, not on fresh synthetic ones; ``broad`` (a broad-prior run): on the field table;
    ``adapted`` (a model adapted to ``data``): the commands denoise ``data`` itself with it;
    ``record`` (``data`` is one record, trained on its crops, with or without --init): they denoise
    the record with the new model and compare it with every candidate on it.
    The commands never write into the repository's tracked folders.
    """
    title = f"{run.path.name}: validation on {val.description}"
    save_figure(training_curve(read_log(run.file("train_log.csv")), val.bayes, title), run.file("train_curve.png"))
    print(f"done: step {state.step}; validation on {val.description}: {validation_text(state.val)}{bayes_text(val)}; "
          f"best {state.best:.4f} ({state.bn_mode} BN, step {state.best_step}) -> {run.file('ckpt_best.pth')}")
    for line in next_steps(run, data, broad, adapted, record):
        print(line)


def next_steps(run, data: str | None, broad: bool = False, adapted: bool = False, record: bool = False) -> list[str]:
    """The commands that test, convert and evaluate the run's ckpt_best (the shipped ckpt/ is left alone)."""
    best, h5, py = run.file("ckpt_best.pth"), run.file("ckpt_best.h5"), interpreter()
    if record:  # the record is all the user has: denoise it with the new model, then score it beside every candidate
        return record_next_steps(run, data, py)
    if adapted:  # the record is what the model was adapted to: denoise it, alone or scored beside the classical methods
        test = f"{py} {script('Pytorch_V1/test.py')} --weights {best} --input {data}"
        return ["next (the shipped models stay as they are; pass --weights to use this one):",
                f"  denoise:  {test} --output {run.file('denoised.npy')} --method net",
                f"  compare:  {test} --output {run.file('denoised_auto.npy')}   (auto: scored by SURE beside "
                f"the classical methods)",
                f"  convert:  {py} {script('pth2h5.py')} {best} {h5}"]
    numpy_test = f"{py} {script('Numpy_V2/Numpy_test.py')} --weights {h5}"
    # a broad-prior model is tried on a record, a spike model on the benchmark's draw
    test_mode = "--input RECORD.npy --output DENOISED.npy --method net" if broad else "--random"
    lines = ["next (the shipped models stay as they are; pass --weights to use this one):",
             f"  test:     {py} {script('Pytorch_V1/test.py')} --weights {best} {test_mode}",
             f"  convert:  {py} {script('pth2h5.py')} {best} {h5}"]
    if broad:
        lines.append(f"  evaluate: {py} {script('scripts/field_table.py')} --models {h5} --output {run.file('field.md')}")
    elif data is not None:
        lines.append(f"  evaluate: {numpy_test} --input HELD_OUT.npy --output {run.file('denoised.npy')}"
                     f"   (HELD_OUT.npy: your signals that are not in {data})")
    else:
        lines.append(f"  evaluate: {numpy_test} --random")
    return lines


def record_next_steps(run, record: str, py: str) -> list[str]:
    """A one-record run: convert ckpt_best, denoise the record with it (Numpy_test.py --method net), and score it
    beside every classical candidate by SURE on the record (--method auto). The outputs go beside the record
    (REC_denoised.npy, REC_auto.npy), or into the run folder when the record lies in a tracked folder."""
    best, h5 = run.file("ckpt_best.pth"), run.file("ckpt_best.h5")
    stem = Path(record).stem
    folder = run.path if tracked_folder_of(record) is not None else Path(record).parent
    test = f"{py} {script('Numpy_V2/Numpy_test.py')} --input {record}"
    return ["next (the shipped models stay as they are; pass --weights to use this one):",
            f"  convert:  {py} {script('pth2h5.py')} {best} {h5}",
            f"  denoise:  {test} --output {folder / f'{stem}_denoised.npy'} --weights {h5} --method net",
            f"  compare:  {test} --output {folder / f'{stem}_auto.npy'} --weights {h5} --method auto"
            "   (every candidate, this model one of them, scored by SURE on the record; the best one's output)"]


def interpreter() -> str:
    """The repository's interpreter (``.venv/bin/python``) as the user can type it; else the running one."""
    venv = REPO / ".venv" / "bin" / "python"
    return script(".venv/bin/python") if venv.exists() else sys.executable


def script(relative: str) -> str:
    """A repository path as the user can type it from the current directory."""
    path = os.path.relpath(REPO / relative)
    return path if not path.startswith("..") else str(REPO / relative)
