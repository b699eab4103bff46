"""Input pipelines: background prefetching that keeps positions exact, sharding over processes,
and Criteo's prepared shards read as the reference reads its day files."""

from __future__ import annotations

import gzip
import threading
import time

import numpy as np
import pytest
import torch

from algoperf.datasets import fixtures
from workloads import input_pipeline
from workloads.criteo1tb import workload as criteo
from workloads.input_pipeline import ArrayBatchStream, Prefetcher, shard
from workloads.ogbg import workload as ogbg
from workloads.torch_base import TorchInputQueue
from workloads.wmt import input_pipeline as wmt_pipeline


def arrays(n: int = 40) -> dict[str, np.ndarray]:
    return {"x": np.arange(n * 3, dtype=np.float32).reshape(n, 3), "y": np.arange(n)}


class CountingStream(ArrayBatchStream):
    """An ArrayBatchStream that counts the batches it has made (from any thread)."""

    made = 0

    def __next__(self):
        batch = super().__next__()
        self.made += 1
        return batch


def take(stream, k: int) -> list[np.ndarray]:
    return [next(stream)["y"] for _ in range(k)]


# ---- the prefetcher -------------------------------------------------------------------------------
def test_prefetched_batches_are_the_streams_batches():
    bare = ArrayBatchStream(arrays(), 8, seed=3)
    ahead = Prefetcher(ArrayBatchStream(arrays(), 8, seed=3))
    for a, b in zip(take(bare, 12), take(ahead, 12)):  # 12 batches: across two epochs
        np.testing.assert_array_equal(a, b)


def test_batches_are_made_ahead_in_the_background():
    stream = CountingStream(arrays(), 8, seed=0)
    ahead = Prefetcher(stream, buffer_size=3)
    next(ahead)
    # 1 handed out + 3 in the buffer + 1 made and waiting for room: then production stops.
    deadline = time.monotonic() + 30
    while stream.made < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert stream.made == 5


def test_the_state_is_the_position_after_the_last_batch_handed_out():
    stream = CountingStream(arrays(), 8, seed=1)
    ahead = Prefetcher(stream, buffer_size=3)
    take(ahead, 3)
    state = ahead.state_dict()
    bare = ArrayBatchStream(arrays(), 8, seed=1)
    take(bare, 3)
    assert state == bare.state_dict()
    resumed = Prefetcher(ArrayBatchStream(arrays(), 8, seed=1))
    resumed.load_state_dict(state)
    for a, b in zip(take(bare, 6), take(resumed, 6)):
        np.testing.assert_array_equal(a, b)


def test_restoring_a_running_prefetcher_drops_what_it_made_ahead():
    ahead = Prefetcher(ArrayBatchStream(arrays(), 8, seed=2), buffer_size=2)
    start = ahead.state_dict()
    first = take(ahead, 4)
    ahead.load_state_dict(start)
    for a, b in zip(first, take(ahead, 4)):
        np.testing.assert_array_equal(a, b)


def test_an_error_in_the_stream_reaches_the_consumer():
    class Broken:
        def __init__(self) -> None:
            self.n = 0

        def __next__(self):
            self.n += 1
            if self.n == 3:
                raise ValueError("a malformed record in shard 7")
            return {"y": np.array([self.n])}

        def state_dict(self):
            return {"n": self.n}

        def load_state_dict(self, state):
            self.n = state["n"]

    ahead = Prefetcher(Broken())
    take(ahead, 2)
    with pytest.raises(ValueError, match="shard 7"):
        next(ahead)


def test_torch_queue_converts_in_its_background_thread():
    threads = []

    def convert(batch):
        threads.append(threading.current_thread())
        return {k: torch.from_numpy(v) for k, v in batch.items()}

    queue = TorchInputQueue(ArrayBatchStream(arrays(), 8, seed=0), torch.device("cpu"), convert)
    batch = next(queue)
    assert isinstance(batch["x"], torch.Tensor) and batch["x"].shape == (8, 3)
    assert threads and all(t is not threading.main_thread() for t in threads)
    bare = ArrayBatchStream(arrays(), 8, seed=0)
    next(bare)
    assert queue.state_dict() == bare.state_dict()


# ---- sharding over processes -----------------------------------------------------------------------
def test_rows_are_split_into_consecutive_equal_shares():
    batch = {"x": np.arange(12).reshape(6, 2), "nested": {"z": np.arange(6)}, "tag": "keep"}
    parts = [shard(batch, r, 3) for r in range(3)]
    assert [p["nested"]["z"].tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]]
    np.testing.assert_array_equal(np.concatenate([p["x"] for p in parts]), batch["x"])
    assert parts[2]["tag"] == "keep"


def test_uneven_rows_are_padded_with_zero_weight_rows_when_the_batch_is_weighted():
    batch = {"x": np.arange(5.0), "weights": np.ones(5)}
    parts = [shard(batch, r, 2) for r in range(2)]
    assert [p["x"].tolist() for p in parts] == [[0, 1, 2], [3, 4, 0]]
    assert [p["weights"].tolist() for p in parts] == [[1, 1, 1], [1, 1, 0]]


def test_uneven_rows_without_weights_are_an_error_naming_the_sizes():
    with pytest.raises(ValueError, match="5 rows cannot be split evenly over 2 processes"):
        shard({"x": np.arange(5)}, 0, 2)


def test_packed_wmt_rows_are_sharded_by_rows():
    rng = np.random.default_rng(0)
    pairs = wmt_pipeline.TokenizedPairs.from_lists(
        [(rng.integers(3, 30, rng.integers(2, 9)), rng.integers(3, 30, rng.integers(2, 9))) for _ in range(300)]
    )
    batch = next(wmt_pipeline.PackedTrainStream(pairs, 4, seed=0, max_length=16))
    parts = [shard(batch, r, 2) for r in range(2)]
    for key in batch:
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), batch[key])
    assert parts[0]["inputs"].shape == (2, 16)
    # Every packed example stays whole on one process: segment ids restart at 1 in each row.
    for part in parts:
        assert (part["targets_segmentation"][:, 0] == 1).all()


def test_ogbg_batches_are_sharded_by_graphs_each_process_its_own_packed_batch():
    graphs = ogbg.synthetic_graphs(64, seed=5)
    world = 2
    batch = next(ogbg.GraphStream(graphs, 16, seed=0, num_shards=world))
    parts = [shard(batch, r, world, layout="devices") for r in range(world)]
    order = np.random.default_rng([0, 0]).permutation(len(graphs))
    taken = 0
    for part in parts:
        # Each process gets a whole padded batch of 16 / 2 graphs' budget, holding whole molecules.
        assert part["inputs"]["nodes"].shape == (8 * 26 + 1, 9) and part["targets"].shape == (9, 128)
        count = ogbg.real_graph_count(part["inputs"]["n_node"])
        ids = order[taken : taken + count]
        np.testing.assert_array_equal(part["inputs"]["n_node"][:count], graphs.n_node[ids])
        taken += count
    assert taken == ogbg.real_graph_count(batch["inputs"]["n_node"])  # no graph twice, none lost
    with pytest.raises(ValueError, match="one batch per process"):
        shard(batch, 0, 4, layout="devices")


# ---- Criteo: prepared shards ------------------------------------------------------------------------
@pytest.fixture
def criteo_days(tmp_path):
    """Three training days and day 23, as gzipped TSV; and the same converted to shards."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for day, n in ((0, 23), (1, 17), (2, 30), (23, 40)):
        with gzip.open(raw / f"day_{day}.gz", "wb") as f:
            f.writelines(fixtures.criteo_lines(n, day))
    out = tmp_path / "prepared"
    for day in (0, 1, 2, 23):
        criteo.convert_day(raw / f"day_{day}.gz", day, out, shard_rows=10)
    return raw, out


def test_shards_split_days_into_parts_of_the_shard_size(criteo_days):
    _, out = criteo_days
    names = [p.name for p in criteo.prepared_shards(out, "train")]
    assert names == ["day_0_00", "day_0_01", "day_0_02", "day_1_00", "day_1_01",
                     "day_2_00", "day_2_01", "day_2_02"]
    sizes = [len(np.load(criteo.shard_files(p)["labels"])) for p in criteo.prepared_shards(out, "train")]
    assert sizes == [10, 10, 3, 10, 7, 10, 10, 10]


def test_shard_batches_equal_the_parsed_lines_in_the_references_order(criteo_days):
    raw, out = criteo_days
    shards = criteo.prepared_shards(out, "train")
    stream = criteo.ShardStream(shards, 16, seed=4)
    lines = {p.name: None for p in shards}
    for day in (0, 1, 2):
        day_lines = fixtures.criteo_lines({0: 23, 1: 17, 2: 30}[day], day)
        for part in range(0, len(day_lines), 10):
            lines[f"day_{day}_{part // 10:02d}"] = day_lines[part : part + 10]
    order = np.random.default_rng([4, 0]).permutation(len(shards))
    epoch = [line for i in order for line in lines[shards[i].name]]
    for k in range(len(epoch) // 16):  # 70 rows: 4 batches, the last 6 rows dropped
        expected = criteo.parse_lines(epoch[16 * k : 16 * (k + 1)])
        batch = next(stream)
        np.testing.assert_array_equal(batch["inputs"], expected["inputs"])
        np.testing.assert_array_equal(batch["targets"], expected["targets"])
    assert stream.epoch == 0
    next(stream)
    assert stream.epoch == 1


def test_shard_stream_restores_its_position_exactly(criteo_days):
    _, out = criteo_days
    shards = criteo.prepared_shards(out, "train")
    a = criteo.ShardStream(shards, 12, seed=9)
    for _ in range(7):
        next(a)
    b = criteo.ShardStream(shards, 12, seed=9)
    b.load_state_dict(a.state_dict())
    for _ in range(5):
        np.testing.assert_array_equal(next(a)["inputs"], next(b)["inputs"])


def test_prepared_eval_splits_are_day_23_cut_where_the_reference_cuts(criteo_days):
    raw, out = criteo_days
    test = criteo.ShardReader(criteo.prepared_shards(out, "test")).read(1000)
    validation = criteo.ShardReader(criteo.prepared_shards(out, "validation")).read(1000)
    cut = round(40 * criteo.NUM_TEST / criteo.DAY_23_LINES)
    day23 = criteo.parse_columns(fixtures.criteo_lines(40, 23))
    assert len(test[0]) == cut and len(validation[0]) == 40 - cut
    np.testing.assert_array_equal(np.concatenate([test[2], validation[2]]), day23[2])


def test_the_workload_reads_prepared_shards_before_tsv_files(criteo_days, tmp_path):
    raw, out = criteo_days
    (out / input_pipeline.PREPARED_MANIFEST).write_text("{}")
    workload = criteo.CriteoData()
    workload.data, workload.data_dir = "real", str(tmp_path)  # the parent of <dir>/criteo1tb
    (tmp_path / "prepared").rename(tmp_path / "criteo1tb")
    assert isinstance(workload.train_batches(8, seed=0), criteo.ShardStream)
    batches = list(workload.eval_split_batches("validation", 100, 8))
    assert sum(b["weights"].sum() for b in batches) == 40 - round(40 * criteo.NUM_TEST / criteo.DAY_23_LINES)
