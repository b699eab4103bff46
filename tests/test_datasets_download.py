"""Downloads through a real HTTP server on 127.0.0.1: resume, retries, checksums, disk space."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from datasets_server import FileServer

from algoperf.datasets import DatasetUnavailableError, download, prepare
from algoperf.datasets.download import DownloadError, Expected
from algoperf.datasets.fixtures import write_mirror

SIZE = 300_000


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    payload = np.random.default_rng(0).integers(0, 256, SIZE, dtype=np.uint8).tobytes()
    (folder / "blob.bin").write_bytes(payload)
    with FileServer(folder) as server:
        yield server, payload


def expected(payload: bytes) -> Expected:
    return Expected(size=len(payload), sha256=hashlib.sha256(payload).hexdigest())


def no_sleep(seconds: float) -> None:
    pass


def test_an_interrupted_download_resumes_where_it_stopped(served, tmp_path):
    server, payload = served
    server.drop_after["blob.bin"] = 100_000
    dest = download.download(server.url + "blob.bin", tmp_path / "out" / "blob.bin", expected(payload), sleep=no_sleep)
    assert dest.read_bytes() == payload
    assert server.data_requests() == [("/blob.bin", None), ("/blob.bin", "bytes=100000-")]
    assert server.bytes_sent["blob.bin"] == SIZE  # nothing was fetched twice
    assert not (tmp_path / "out" / "blob.bin.part").exists()


def test_a_partial_file_left_by_an_earlier_run_is_continued(served, tmp_path):
    server, payload = served
    (tmp_path / "blob.bin.part").write_bytes(payload[:123_456])
    download.download(server.url + "blob.bin", tmp_path / "blob.bin", expected(payload), sleep=no_sleep)
    assert (tmp_path / "blob.bin").read_bytes() == payload
    assert server.data_requests() == [("/blob.bin", "bytes=123456-")]


def test_a_server_without_range_support_sends_the_whole_file_again(tmp_path):
    (tmp_path / "served").mkdir()
    payload = bytes(range(256)) * 1000
    (tmp_path / "served" / "blob.bin").write_bytes(payload)
    (tmp_path / "blob.bin.part").write_bytes(payload[:5000])
    with FileServer(tmp_path / "served", ranges=False) as server:
        download.download(server.url + "blob.bin", tmp_path / "blob.bin", expected(payload), sleep=no_sleep)
    assert (tmp_path / "blob.bin").read_bytes() == payload


def test_a_corrupted_transfer_fails_its_checksum_and_is_fetched_again(served, tmp_path):
    server, payload = served
    server.corrupt["blob.bin"] = 1
    download.download(server.url + "blob.bin", tmp_path / "blob.bin", expected(payload), sleep=no_sleep)
    assert (tmp_path / "blob.bin").read_bytes() == payload
    assert len(server.data_requests()) == 2


def test_a_file_that_never_matches_is_refused_and_nothing_is_saved(served, tmp_path):
    server, payload = served
    server.corrupt["blob.bin"] = 2
    with pytest.raises(DownloadError) as error:
        download.download(server.url + "blob.bin", tmp_path / "blob.bin", expected(payload), sleep=no_sleep)
    message = str(error.value)
    assert "SHA-256" in message and hashlib.sha256(payload).hexdigest() in message
    assert not (tmp_path / "blob.bin").exists() and not (tmp_path / "blob.bin.part").exists()


def test_network_errors_are_retried_with_exponential_backoff(tmp_path):
    waits: list[float] = []
    # Nothing listens on port 9 of the loopback: every attempt fails at once.
    with pytest.raises(DownloadError, match="after 4 attempts"):
        download.download("http://127.0.0.1:9/x.bin", tmp_path / "x.bin", Expected(), retries=4,
                          backoff=0.5, sleep=waits.append)
    assert waits == [0.5, 1.0, 2.0]


def test_a_full_disk_is_refused_before_any_download(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    write_mirror("mnist", mirror)
    monkeypatch.setattr(prepare, "free_bytes", lambda path: 1_000)
    with FileServer(mirror) as server:
        with pytest.raises(DatasetUnavailableError) as error:
            prepare.prepare(prepare_recipe("mnist"), tmp_path / "data", mirror=server.url)
        assert server.data_requests() == []
    message = str(error.value)
    assert "Not enough disk space for mnist" in message and "(1,000 bytes) is free" in message
    assert "of downloads" in message and "--data-dir" in message
    assert not list((tmp_path / "data").rglob("*.gz"))


def prepare_recipe(name: str):
    from algoperf.datasets import recipe

    return recipe(name)
