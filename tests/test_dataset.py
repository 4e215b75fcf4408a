"""deepdenoise1d/dataset.py: the data/ + labels/ folder layout, the TestK samples and scripts/make_test_samples.py."""
from __future__ import annotations

import numpy as np

from conftest import REPO_ROOT, assert_one_line_error, load_script
from deepdenoise1d import dataset, io


def test_folder_dataset_pairs_by_file_name(tmp_path):
    names = ["10", "2", "0", "1"]
    for i, name in enumerate(names):
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "labels").mkdir(exist_ok=True)
        # The label of file N holds N everywhere; its data holds N + 0.5.
        io.write_txt(tmp_path / "data" / f"{name}.txt", np.full(20, int(name) + 0.5))
        io.write_txt(tmp_path / "labels" / f"{name}.txt", np.full(20, float(name)))
    noisy, clean = dataset.read_folder_dataset(tmp_path)
    np.testing.assert_array_equal(noisy - clean, 0.5)
    np.testing.assert_array_equal(clean[:, 0], [0, 1, 2, 10])  # numeric order


def test_unpaired_folder(run_call, tmp_path):
    for sub, name in [("data", "0"), ("data", "1"), ("labels", "0"), ("labels", "5")]:
        (tmp_path / sub).mkdir(exist_ok=True)
        io.write_txt(tmp_path / sub / f"{name}.txt", np.zeros(20))
    assert_one_line_error(*run_call(lambda: dataset.read_folder_dataset(tmp_path)), "do not pair up", "1.txt", "5.txt")


def test_labels_of_different_length_name_the_file(run_call, tmp_path):
    for i in range(3):
        io.write_txt(tmp_path / "data" / f"{i}.txt", np.zeros(50))
        io.write_txt(tmp_path / "labels" / f"{i}.txt", np.zeros(50 if i != 1 else 49))
    code, err = run_call(lambda: dataset.read_folder_dataset(tmp_path))
    assert_one_line_error(code, err, str(tmp_path / "labels" / "1.txt"), "length 49", "50")


def test_data_files_of_different_length_name_the_file(run_call, tmp_path):
    for i in range(3):
        io.write_txt(tmp_path / "data" / f"{i}.txt", np.zeros(50 if i != 2 else 60))
    code, err = run_call(lambda: dataset.read_folder_dataset(tmp_path, require_labels=False))
    assert_one_line_error(code, err, "2.txt", "length 60", "0.txt")


def test_committed_test_samples_match_the_generator(tmp_path):
    make_test_samples = load_script(REPO_ROOT / "scripts" / "make_test_samples.py", "make_test_samples_script")

    make_test_samples.main(["--output", str(tmp_path)])
    committed = dataset.read_test_samples(REPO_ROOT / "TestSamples")
    fresh = dataset.read_test_samples(tmp_path)
    assert [name for name, _, _ in committed] == [f"Test{k}" for k in range(6)]
    for (name, noisy, clean), (_, noisy2, clean2) in zip(committed, fresh):
        np.testing.assert_array_equal(noisy, noisy2)
        np.testing.assert_array_equal(clean, clean2)


def _pair_folder(root, names, length=100):
    for sub in ("data", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            (root / sub / name).write_text("".join(f"{v}\n" for v in np.linspace(-1, 1, length)))


def test_names_with_non_ascii_digits_sort_as_text_and_hidden_files_are_skipped(tmp_path):
    _pair_folder(tmp_path, ["2.txt", "10.txt", "\u00b2.txt"])
    for sub in ("data", "labels"):
        (tmp_path / sub / "._2.txt").write_bytes(b"\x00\x05\x16\x07Mac OS X")  # AppleDouble
    noisy, clean = dataset.read_folder_dataset(tmp_path)
    assert noisy.shape == clean.shape == (3, 100)
    assert dataset._txt_names(tmp_path / "data") == ["2.txt", "10.txt", "\u00b2.txt"]


def test_a_symlink_leading_outside_the_folder_is_refused_without_its_contents(run_call, tmp_path):
    root = tmp_path / "set"
    _pair_folder(root, ["0.txt", "1.txt"])
    secret = tmp_path / "secret.txt"
    secret.write_text("topsecret\n")
    (root / "data" / "1.txt").unlink()
    (root / "data" / "1.txt").symlink_to(secret)
    code, err = run_call(lambda: dataset.read_folder_dataset(root))
    assert_one_line_error(code, err, "1.txt", "symbolic link to outside")
    assert "topsecret" not in err
    (root / "data" / "1.txt").unlink()
    (root / "data" / "1.txt").symlink_to(root / "labels" / "1.txt")  # inside the folder: followed
    assert dataset.read_folder_dataset(root)[0].shape == (2, 100)


def test_make_test_samples_writes_a_tracked_folder_only_with_allow_tracked(tmp_path, monkeypatch, run_main):
    from deepdenoise1d import safewrite

    make_test_samples = load_script(REPO_ROOT / "scripts" / "make_test_samples.py", "make_test_samples_tracked")
    tracked = tmp_path / "TestSamples"  # stands in for the repository's tracked TestSamples/
    tracked.mkdir()
    (tracked / "Test0_data.txt").write_text("a committed sample\n")
    monkeypatch.setattr(safewrite, "tracked_folders", lambda: (tracked,))
    code, _, err = run_main(make_test_samples, ["--output", tracked])
    assert_one_line_error(code, err, "Test0_data.txt", "tracked files")
    assert sorted(p.name for p in tracked.iterdir()) == ["Test0_data.txt"]
    assert (tracked / "Test0_data.txt").read_text() == "a committed sample\n"
    code, out, err = run_main(make_test_samples, ["--output", tracked, "--allow-tracked"])
    assert code == 0, err
    assert [name for name, _, _ in dataset.read_test_samples(tracked)] == [f"Test{k}" for k in range(6)]
    code, _, err = run_main(make_test_samples, ["--output", tracked])  # the flag is needed every time
    assert_one_line_error(code, err, "tracked files")


def test_make_test_samples_reruns_over_its_own_files_only(tmp_path, run_main):
    make_test_samples = load_script(REPO_ROOT / "scripts" / "make_test_samples.py", "make_test_samples_rerun")
    out = tmp_path / "samples"
    for _ in range(2):
        code, _, err = run_main(make_test_samples, ["--output", out])
        assert code == 0, err
    (out / "Test3_label.txt").write_text("edited by hand\n")
    code, _, err = run_main(make_test_samples, ["--output", out])
    assert_one_line_error(code, err, "Test3_label.txt", "not written by this project")
    assert (out / "Test3_label.txt").read_text() == "edited by hand\n"
