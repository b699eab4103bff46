"""MNIST from IDX files: parsing, download from a mirror with checksums, and the offline error."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from algoperf.datasets import DatasetUnavailableError
from workloads import registry
from workloads.mnist import workload as mnist

from conftest import read_eval_rows, read_summary, run_cli, trial_path

NUM_IMAGES, NUM_TEST = 120, 30


def write_idx(path: Path, array: np.ndarray) -> None:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def make_fixture(folder: Path) -> dict[str, np.ndarray]:
    """IDX files whose digits are a bright bar at a row that encodes the label (learnable)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", NUM_IMAGES), ("t10k", NUM_TEST)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 30, (n, 28, 28)).astype(np.uint8)
        for i, y in enumerate(labels):
            images[i, 2 + 2 * y : 4 + 2 * y, :] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
        arrays[prefix] = images
        arrays[prefix + "_labels"] = labels
    sums = "".join(
        f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.name}\n" for p in sorted(folder.glob("*.gz"))
    )
    (folder / "MD5SUMS").write_text(sums)
    return arrays


def test_read_idx_round_trip(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    write_idx(tmp_path / "x.gz", images)
    np.testing.assert_array_equal(mnist.read_idx(tmp_path / "x.gz"), images)


def test_truncated_idx_is_rejected(tmp_path):
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 3, 28, 28)
    with gzip.open(tmp_path / "t.gz", "wb") as f:
        f.write(header + images.tobytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        mnist.read_idx(tmp_path / "t.gz")


def test_splits_and_normalisation_from_a_folder_mirror(tmp_path, monkeypatch):
    arrays = make_fixture(tmp_path / "mirror")
    monkeypatch.setenv("ALGOPERF_DATASET_MIRROR", str(tmp_path / "mirror"))
    workload = registry.load("mnist", data="real", data_dir=str(tmp_path / "data"))
    train, val, test = (workload.split_arrays(s) for s in ("train", "validation", "test"))
    assert len(train["inputs"]) == 100 and len(val["inputs"]) == 20 and len(test["inputs"]) == NUM_TEST
    expected = (arrays["train"][:100].astype(np.float32) / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(train["inputs"][:, 0], expected, rtol=1e-6)
    np.testing.assert_array_equal(val["targets"], arrays["train_labels"][100:])
    assert (tmp_path / "data" / "train-images-idx3-ubyte.gz").exists()


def test_a_corrupt_download_is_rejected_and_not_saved(tmp_path, monkeypatch):
    make_fixture(tmp_path / "mirror")
    with gzip.open(tmp_path / "mirror" / "t10k-labels-idx1-ubyte.gz", "ab") as f:
        f.write(b"garbage")
    monkeypatch.setenv("ALGOPERF_DATASET_MIRROR", str(tmp_path / "mirror"))
    workload = registry.load("mnist", data="real", data_dir=str(tmp_path / "data"))
    with pytest.raises(DatasetUnavailableError, match="MD5"):
        workload.split_arrays("test")
    assert not (tmp_path / "data" / "t10k-labels-idx1-ubyte.gz").exists()


def test_offline_without_a_mirror_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("ALGOPERF_DATASET_MIRROR", raising=False)
    # Nothing listens on port 9 of the loopback: the download fails at once, as offline.
    monkeypatch.setattr(mnist, "CANONICAL_URL", "http://127.0.0.1:9/mnist/")
    workload = registry.load("mnist", data="real", data_dir=str(tmp_path / "data"))
    with pytest.raises(DatasetUnavailableError) as e:
        workload.split_arrays("train")
    message = str(e.value)
    assert "ALGOPERF_DATASET_MIRROR" in message and str(tmp_path / "data") in message
    assert "--data synthetic" in message


@pytest.mark.slow
def test_algoperf_run_mnist_from_an_http_mirror(tmp_path):
    make_fixture(tmp_path / "mirror")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "mirror"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        out = run_cli(
            "run", "-w", "mnist", "-s", "adamw", "--data-dir", str(tmp_path / "data"),
            "--experiment-dir", str(tmp_path / "exp"), "--name", "m", "--max-steps", "30",
            "--batch-size", "16", env={"ALGOPERF_DATASET_MIRROR": url},
        )
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stderr
    trial = trial_path(tmp_path / "exp", "m", workload="mnist")
    assert read_summary(trial)["status"] in ("max_steps", "reached")
    rows = read_eval_rows(trial)
    assert rows[0]["validation/num_examples"] == "20"
    assert rows[0]["test/num_examples"] == str(NUM_TEST)


def test_datasets_prepare_downloads_from_a_mirror(tmp_path, capsys):
    from algoperf import cli

    make_fixture(tmp_path / "mirror")
    args = ["datasets", "prepare", "mnist", "--data-dir", str(tmp_path / "d"), "--mirror", str(tmp_path / "mirror")]
    assert cli.main(args) == 0
    assert sorted(p.name for p in (tmp_path / "d" / "mnist").glob("*.gz")) == sorted(mnist.FILES)
    assert "mnist: ready in" in capsys.readouterr().out
