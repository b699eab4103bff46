"""OGBG data: packing and padding as jraph does, the OGB raw files, the checkpointable stream,
eval batches, synthetic molecules."""

from __future__ import annotations

import gzip
import math
import pickle

import numpy as np
import pytest

from workloads import registry
from workloads.ogbg import workload as ogbg


def two_molecules() -> ogbg.Graphs:
    # Molecule 0: 3 atoms, bonds 0-1 and 1-2. Molecule 1: 2 atoms, bond 0-1, task 0 unknown.
    labels = np.zeros((2, ogbg.NUM_TASKS), np.float32)
    labels[0, 0], labels[1, 0], labels[1, 1] = 1, np.nan, 1
    return ogbg.Graphs(
        nodes=np.arange(5 * 9, dtype=np.float32).reshape(5, 9),
        edges=np.array([[0, 0, 1], [1, 0, 0], [3, 0, 1]], np.float32),
        edge_index=np.array([[0, 1], [1, 2], [0, 1]]),
        n_node=np.array([3, 2]),
        n_edge=np.array([2, 1]),
        labels=labels,
    )


def test_collate_by_hand():
    batch = ogbg.collate(two_molecules(), np.array([0, 1]), batch_size=3)
    g = batch["inputs"]
    # Budget of 3 graphs: 26 * 3 + 1 nodes, 56 * 3 edges, 3 + 1 graphs.
    assert (
        g["nodes"].shape == (79, 9) and g["edges"].shape == (168, 3) and g["n_node"].shape == (4,)
    )
    # Real graphs, then the padding graph with the rest of the nodes and edges, then an empty graph.
    assert g["n_node"].tolist() == [3, 2, 79 - 5, 0] and g["n_edge"].tolist() == [4, 2, 168 - 6, 0]
    # Each molecule's bonds, then the same bonds reversed; molecule 1's nodes are offset by 3.
    assert g["senders"][:6].tolist() == [0, 1, 1, 2, 3, 4]
    assert g["receivers"][:6].tolist() == [1, 2, 0, 1, 4, 3]
    np.testing.assert_array_equal(
        g["edges"][:6], [[0, 0, 1], [1, 0, 0], [0, 0, 1], [1, 0, 0], [3, 0, 1], [3, 0, 1]]
    )
    # Padding edges join the padding graph's first node (node 5) to itself; padding is zero.
    assert set(g["senders"][6:]) == {5} and set(g["receivers"][6:]) == {5}
    np.testing.assert_array_equal(g["nodes"][:5], two_molecules().nodes)
    assert not g["nodes"][5:].any() and not g["edges"][6:].any()
    # Unknown labels -> 0 with weight 0; padding and empty graphs weigh 0.
    assert (
        batch["targets"][1, 0] == 0 and batch["weights"][1, 0] == 0 and batch["weights"][1, 1] == 1
    )
    assert batch["weights"][0].sum() == 128 and batch["weights"][2:].sum() == 0
    assert ogbg.real_graph_count(g["n_node"]) == 2


def molecules_of_sizes(n_node: list[int]) -> ogbg.Graphs:
    """Chain molecules (n - 1 bonds) with the given atom counts."""
    index = np.concatenate([np.stack([np.arange(n - 1), np.arange(1, n)], 1) for n in n_node])
    return ogbg.Graphs(
        np.zeros((sum(n_node), 9)),
        np.zeros((len(index), 3)),
        index,
        np.array(n_node),
        np.array(n_node) - 1,
        np.zeros((len(n_node), ogbg.NUM_TASKS)),
    )


def test_packing_stops_at_the_node_budget_and_keeps_the_next_molecule():
    # Batch size 2: at most 2 graphs, 52 nodes, 112 edges. 30 + 30 atoms exceed 52 nodes, so each
    # 30-atom molecule opens a new batch; 10 + 20 fit with the next one only by graph count.
    graphs = molecules_of_sizes([30, 30, 10, 20, 5])
    batches = list(ogbg.eval_graph_batches(graphs, batch_size=2))
    assert [b["inputs"]["n_node"][:2].tolist() for b in batches] == [
        [30, 53 - 30],
        [30, 10],
        [20, 5],
    ]
    assert [ogbg.real_graph_count(b["inputs"]["n_node"]) for b in batches] == [1, 2, 2]


def test_packing_stops_at_the_edge_budget():
    # Batch size 2 holds 112 directed edges: a ring-rich 25-atom molecule with 40 bonds (80 edges)
    # and a 20-atom one with 19 bonds (38 edges) do not fit together although 45 atoms do.
    ring = np.array([[i, (i + k) % 25] for k in (1, 2) for i in range(20)])
    chain = np.stack([np.arange(19), np.arange(1, 20)], 1)
    graphs = ogbg.Graphs(
        np.zeros((45, 9)),
        np.zeros((59, 3)),
        np.concatenate([ring, chain]),
        np.array([25, 20]),
        np.array([40, 19]),
        np.zeros((2, ogbg.NUM_TASKS)),
    )
    assert [
        ogbg.real_graph_count(b["inputs"]["n_node"]) for b in ogbg.eval_graph_batches(graphs, 2)
    ] == [1, 1]


def test_a_molecule_larger_than_the_batch_budget_is_an_error_naming_the_fix():
    with pytest.raises(ValueError, match="larger batch size"):
        list(ogbg.eval_graph_batches(molecules_of_sizes([27]), batch_size=1))


def test_sharded_batches_stack_one_padded_batch_per_device():
    graphs = molecules_of_sizes([5] * 9)
    stream = ogbg.GraphStream(graphs, batch_size=4, seed=0, num_shards=2)
    batch = next(stream)
    assert batch["inputs"]["nodes"].shape == (2, 2 * 26 + 1, 9) and batch["targets"].shape == (
        2,
        3,
        128,
    )
    assert ogbg.real_graph_count(batch["inputs"]["n_node"]) == 4
    last = list(ogbg.eval_graph_batches(graphs, batch_size=4, num_shards=2))[-1]
    assert (
        ogbg.real_graph_count(last["inputs"]["n_node"]) == 1
    )  # 9 = 4 + 4 + 1; the 2nd shard is empty
    assert last["weights"][1].sum() == 0


# ---- the OGB raw files ------------------------------------------------------------------------
def write_ogb(root, graphs: ogbg.Graphs, splits: dict[str, list[int]]) -> None:
    """The ogbg-molpcba download layout: headerless gzipped CSVs, empty fields for unknown labels."""
    folder = root / "ogbg_molpcba"
    for sub in ("raw", "split/scaffold", "mapping"):
        (folder / sub).mkdir(parents=True)

    def put(path, rows):
        with gzip.open(folder / path, "wt") as f:
            f.write("".join(",".join(str(v) for v in r) + "\n" for r in rows))

    put("raw/edge.csv.gz", graphs.edge_index.tolist())
    put("raw/node-feat.csv.gz", graphs.nodes.astype(int).tolist())
    put("raw/edge-feat.csv.gz", graphs.edges.astype(int).tolist())
    put("raw/num-node-list.csv.gz", [[n] for n in graphs.n_node])
    put("raw/num-edge-list.csv.gz", [[n] for n in graphs.n_edge])
    put(
        "raw/graph-label.csv.gz",
        [["" if math.isnan(v) else int(v) for v in r] for r in graphs.labels],
    )
    for name, ids in splits.items():
        put(f"split/scaffold/{name}.csv.gz", [[i] for i in ids])
    put("mapping/mol.csv.gz", [["smiles", "mol_id"]] + [["C", i] for i in range(len(graphs))])


@pytest.fixture
def ogb_dir(tmp_path):
    graphs = ogbg.synthetic_graphs(14, seed=3)
    write_ogb(tmp_path, graphs, {"train": list(range(10)), "valid": [10, 11], "test": [12, 13]})
    return tmp_path, graphs


def test_ogb_files_load_as_written(ogb_dir):
    root, graphs = ogb_dir
    loaded, splits = ogbg.load_ogb(root)
    np.testing.assert_array_equal(loaded.nodes, graphs.nodes)
    np.testing.assert_array_equal(loaded.edge_index, graphs.edge_index)
    np.testing.assert_array_equal(loaded.labels, graphs.labels)  # NaN where the field was empty
    assert np.isnan(loaded.labels).any()
    assert splits["valid"].tolist() == [10, 11]
    workload = registry.load("ogbg", data="real", data_dir=str(root))
    test = workload.split_graphs("test")
    np.testing.assert_array_equal(test.n_node, graphs.n_node[12:])
    np.testing.assert_array_equal(test.nodes, graphs.nodes[graphs.node_start[12] :])


def test_missing_ogb_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="node-feat.csv.gz"):
        ogbg.load_ogb(tmp_path)


def test_train_stream_is_deterministic_under_a_seed(ogb_dir):
    workload = registry.load("ogbg", data="real", data_dir=str(ogb_dir[0]))
    a, b, c = (workload.train_batches(3, seed=s) for s in (1, 1, 2))
    for _ in range(6):
        x, y = next(a), next(b)
        np.testing.assert_array_equal(x["inputs"]["nodes"], y["inputs"]["nodes"])
        np.testing.assert_array_equal(x["targets"], y["targets"])
    firsts = [
        next(workload.train_batches(3, seed=s))["inputs"]["n_node"].tolist() for s in range(5)
    ]
    assert len({tuple(f) for f in firsts}) > 1 and next(c) is not None


def test_train_stream_restores_from_a_pickled_position_across_epochs(ogb_dir):
    workload = registry.load("ogbg", data="real", data_dir=str(ogb_dir[0]))
    stream = workload.train_batches(3, seed=7)
    for _ in range(3):
        next(stream)
    state = pickle.loads(pickle.dumps(stream.state_dict()))
    expected = [next(stream) for _ in range(6)]  # 10 training molecules: this crosses epochs
    assert stream.epoch >= 1
    restored = workload.train_batches(3, seed=7)
    restored.load_state_dict(state)
    for want in expected:
        got = next(restored)
        for key in want["inputs"]:
            np.testing.assert_array_equal(got["inputs"][key], want["inputs"][key])
        np.testing.assert_array_equal(got["weights"], want["weights"])


def test_every_epoch_serves_each_training_molecule_once(ogb_dir):
    graphs = ogbg.load_ogb(ogb_dir[0])[0].subset(np.arange(10))
    stream = ogbg.GraphStream(graphs, batch_size=4, seed=0)
    seen = 0
    while stream.epoch == 0:
        seen += ogbg.real_graph_count(next(stream)["inputs"]["n_node"])
    assert seen - stream.cursor == 10  # the last batch may already hold molecules of epoch 1


def test_eval_batches_hold_each_molecule_once_in_order(ogb_dir):
    root, graphs = ogb_dir
    workload = registry.load("ogbg", data="real", data_dir=str(root))
    batches = list(workload.eval_split_batches("train", 10, batch_size=4))
    counts = [ogbg.real_graph_count(b["inputs"]["n_node"]) for b in batches]
    assert sum(counts) == 10
    n_node = np.concatenate([b["inputs"]["n_node"][:k] for b, k in zip(batches, counts)])
    np.testing.assert_array_equal(n_node, graphs.n_node[:10])


def test_eval_train_is_a_fixed_draw_from_the_training_split(ogb_dir):
    root, graphs = ogb_dir
    workload = registry.load("ogbg", data="real", data_dir=str(root))
    first = workload.split_graphs("eval_train")
    again = registry.load("ogbg", data="real", data_dir=str(root)).split_graphs("eval_train")
    np.testing.assert_array_equal(first.nodes, again.nodes)
    assert (
        len(first) == 10
    )  # num_eval_train_examples (43,793) is capped at the split's 10 molecules


# ---- synthetic molecules ----------------------------------------------------------------------
def test_synthetic_molecules_are_realistic_and_labelled_by_a_fixed_teacher():
    graphs = ogbg.synthetic_graphs(200, seed=5)
    assert 20 < graphs.n_node.mean() < 32 and graphs.n_node.max() <= 44  # molpcba averages 26 atoms
    assert (graphs.n_edge >= graphs.n_node - 1).all()  # connected: a spanning tree at least
    local = graphs.edge_index
    assert (local >= 0).all() and (local < np.repeat(graphs.n_node, graphs.n_edge)[:, None]).all()
    unknown = np.isnan(graphs.labels)
    assert 0.1 < unknown.mean() < 0.3
    positives = np.nansum(graphs.labels, 0)
    assert (positives > 0).mean() > 0.9 and (positives < (~unknown).sum(0)).all()
    again = ogbg.synthetic_graphs(200, seed=5)
    np.testing.assert_array_equal(graphs.nodes, again.nodes)
    np.testing.assert_array_equal(graphs.labels, again.labels)
    other = ogbg.synthetic_graphs(200, seed=6)
    assert not np.array_equal(np.nan_to_num(other.labels), np.nan_to_num(graphs.labels))
