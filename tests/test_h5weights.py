"""icnn.h5weights: the reader never loads a filter plugin and bounds every attribute."""
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from deepdenoise1d.errors import InputError
from icnn.h5weights import MAX_ATTRIBUTE_BYTES, read_weights
from icnn.shipped import default_weights

REPO = Path(__file__).resolve().parents[1]


def _copy_shipped(tmp_path: Path) -> Path:
    path = tmp_path / "w.h5"
    shutil.copyfile(default_weights(".h5"), path)
    return path


PLUGIN_C = r"""
#include <stdio.h>
#include <stdlib.h>
typedef struct { int version; int id; unsigned encoder_present; unsigned decoder_present;
  const char *name; void *can_apply; void *set_local;
  size_t (*filter)(unsigned, size_t, const unsigned *, size_t, size_t *, void **); } filter_class;
static size_t identity(unsigned f, size_t n, const unsigned *c, size_t nbytes, size_t *s, void **b) { return nbytes; }
static const filter_class CLASS = {1, 32001, 1, 1, "identity", 0, 0, identity};
__attribute__((constructor)) static void mark(void) {
  const char *p = getenv("PLUGIN_MARK"); if (!p) return;
  FILE *f = fopen(p, "w"); if (f) { fputs("ran", f); fclose(f); } }
int H5PLget_plugin_type(void) { return 0; }
const void *H5PLget_plugin_info(void) { return &CLASS; }
"""

# Rewrites the first dataset of a weights file through filter 32001 (mandatory), which the plugin provides.
REWRITE = """
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    name = next(iter(f.keys()))
    data = f[name][()]
    del f[name]
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk(data.shape)
    dcpl.set_filter(32001, h5py.h5z.FLAG_MANDATORY, ())
    space = h5py.h5s.create_simple(data.shape)
    h5py.h5d.create(f.id, name.encode(), h5py.h5t.NATIVE_FLOAT, space, dcpl=dcpl).write(h5py.h5s.ALL, h5py.h5s.ALL, data)
print(name)
"""


def _plugin_env(plugins: Path, marker: Path) -> dict:
    return {"HDF5_PLUGIN_PATH": str(plugins), "PLUGIN_MARK": str(marker), "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO)}


def _filtered_weights(tmp_path: Path) -> tuple[Path, Path, str]:
    """A copy of the shipped weights whose first dataset needs a filter plugin with a marking constructor."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "identity.c").write_text(PLUGIN_C)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(plugins / "libidentity.so"), str(plugins / "identity.c")],
                   check=True)
    path = _copy_shipped(tmp_path)
    env = _plugin_env(plugins, tmp_path / "unused")
    name = subprocess.run([sys.executable, "-c", REWRITE, str(path)], env=env, capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip()
    return path, plugins, name


def test_shipped_weights_still_read(tmp_path):
    arrays, config, _ = read_weights(_copy_shipped(tmp_path))
    assert arrays and config


def test_variable_length_attribute_bounded(tmp_path):
    path = _copy_shipped(tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["note"] = "x" * (MAX_ATTRIBUTE_BYTES + 1)  # a variable-length string: stored out of line
    with pytest.raises(InputError, match="'note' is larger than"):
        read_weights(path)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build a filter plugin")
def test_filter_plugin_never_loaded(tmp_path):
    """A filter plugin in HDF5_PLUGIN_PATH whose constructor leaves a mark: the reader refuses the
    dataset in one line and the library is never loaded, while plain h5py does load it."""
    path, plugins, name = _filtered_weights(tmp_path)
    marker = tmp_path / "plugin-ran"
    env = _plugin_env(plugins, marker)
    code = ("import sys\nfrom icnn.h5weights import read_weights\nfrom deepdenoise1d.errors import InputError\n"
            "try:\n    read_weights(sys.argv[1])\nexcept InputError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True, timeout=120)
    assert f"{name!r} needs HDF5 filter 32001, refused" in out.stdout, out.stdout + out.stderr
    assert not marker.exists()
    probe = "import sys, h5py\nf = h5py.File(sys.argv[1], 'r')\nprint(f[sys.argv[2]][()].size)\n"
    control = subprocess.run([sys.executable, "-c", probe, str(path), name], env=env, capture_output=True, text=True,
                             timeout=120)
    assert control.returncode == 0 and marker.exists(), control.stderr  # the test can fail: HDF5 would load it


def test_filter_refused_in_process(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build a filter plugin")
    path, _, name = _filtered_weights(tmp_path)
    with pytest.raises(InputError, match=f"{name!r} needs HDF5 filter 32001, refused"):
        read_weights(path)
    assert h5py.h5pl.size() == 0  # the search path is empty once a weights file was opened
