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
