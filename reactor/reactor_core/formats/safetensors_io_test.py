import sys

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

from reactor_core.formats import safetensors_io


def test_round_trip_including_bfloat16(tmp_path):
    tensors = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.linspace(-1, 1, 6).astype(ml_dtypes.bfloat16).reshape(2, 3),
        "c": np.array([1, 2], np.int64),
    }
    path = str(tmp_path / "x.safetensors")
    safetensors_io.save(tensors, path)
    back = safetensors_io.load(path)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k], v)


def test_reads_files_written_by_the_safetensors_package(tmp_path):
    path = str(tmp_path / "y.safetensors")
    safetensors.numpy.save_file({"w": np.ones((2, 2), np.float16)}, path)
    np.testing.assert_array_equal(safetensors_io.load(path)["w"], np.ones((2, 2), np.float16))


def test_our_files_open_in_the_safetensors_package(tmp_path):
    path = str(tmp_path / "z.safetensors")
    safetensors_io.save({"w": np.eye(3, dtype=np.float32)}, path)
    np.testing.assert_array_equal(safetensors.numpy.load_file(path)["w"], np.eye(3))


def test_truncated_file_names_file_and_tensor(tmp_path):
    path = str(tmp_path / "t.safetensors")
    safetensors_io.save({"first": np.ones(4, np.float32), "second": np.ones(100, np.float32)}, path)
    with open(path, "r+b") as f:
        f.truncate(f.seek(0, 2) - 10)
    with pytest.raises(safetensors_io.SafetensorsError, match=r"t\.safetensors.*'second'"):
        safetensors_io.load(path)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
