"""ogbg-molpcba with a GraphNetwork GNN, and its three variants (WORKLOADS.md).

Data: the arrays `algoperf datasets prepare ogbg` writes (`nodes.npy`, ...), or else the OGB raw layout in `<data_dir>/ogbg_molpcba/` (or `<data_dir>`
itself), headerless CSVs:
`raw/edge.csv.gz` (one bond per row: two node indices local to the molecule),
`raw/node-feat.csv.gz` (9 integer atom features per node), `raw/edge-feat.csv.gz` (3 integer
bond features per bond), `raw/num-node-list.csv.gz` and `raw/num-edge-list.csv.gz` (one count per
molecule), `raw/graph-label.csv.gz` (128 binary tasks, an empty field = unknown) and
`split/scaffold/{train,valid,test}.csv.gz` (molecule indices).

Batches follow the reference (TFDS -> jraph): every bond becomes two directed edges (the molecule's
bonds first, then the same bonds reversed); molecules are packed greedily, in stream order, into a
batch of at most B graphs, 26 B nodes and 56 B edges (B = the per-device batch size; 26 and 56
are the dataset's average sizes, `jraph.dynamically_batch`), then padded as
`jraph.pad_with_graphs` pads: one padding graph holding the remaining 26 B + 1 - n nodes and
56 B - e edges (its edges connect its first node to itself), right after the real graphs, then
empty graphs up to B + 1 graphs. Unknown labels become 0 with weight 0; padding graphs have
weight 0 on every task.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from algoperf.spec import LossType
from workloads.input_pipeline import prepared_dir
from workloads.registry import WorkloadInfo

AVG_NODES_PER_GRAPH, AVG_EDGES_PER_GRAPH = 26, 56
NUM_TASKS = 128
NUM_NODE_FEATURES, NUM_EDGE_FEATURES = 9, 3
EVAL_TRAIN_SEED = 0  # the fixed draw of training molecules the eval-train split evaluates

BASE = WorkloadInfo(
    name="ogbg",
    dataset="ogbg-molpcba 350,343 / 43,793 / 43,793 (128 binary tasks)",
    model="GraphNetwork GNN: latent 256, hidden (256,), 5 message-passing steps",
    target_metric_name="mean_average_precision",
    higher_is_better=True,
    validation_target=0.28098,
    test_target=0.268729,
    max_allowed_runtime_sec=12_011,
    step_hint=52_000,
    eval_period_time_sec=240,
    eval_batch_size=32_768,
    num_train_examples=350_343,
    num_eval_train_examples=43_793,
    num_validation_examples=43_793,
    num_test_examples=43_793,
    loss_type=LossType.SIGMOID_CROSS_ENTROPY,
    default_dropout=0.1,
    n_params={"pytorch": 3_554_176, "jax": 3_554_176},
    implementations={
        "pytorch": "workloads.ogbg.torch_workload:OgbgWorkload",
        "jax": "workloads.ogbg.jax_workload:OgbgWorkload",
    },
    model_options={
        "activation": "relu",
        "latent_dim": 256,
        "hidden_dims": (256,),
        "num_message_passing_steps": 5,
    },
)

WORKLOADS = [
    BASE,
    BASE.variant(
        name="ogbg_gelu",
        change="GELU",
        validation_target=0.27771,
        test_target=0.262926,
        model_options={**BASE.model_options, "activation": "gelu"},
    ),
    BASE.variant(
        name="ogbg_silu",
        change="SiLU",
        validation_target=0.282178,
        test_target=0.272144,
        model_options={**BASE.model_options, "activation": "silu"},
    ),
    BASE.variant(
        name="ogbg_model_size",
        change="hidden (256, 256), latent 128, 3 message-passing steps",
        validation_target=0.269446,
        test_target=0.253051,
        model_options={
            **BASE.model_options,
            "hidden_dims": (256, 256),
            "latent_dim": 128,
            "num_message_passing_steps": 3,
        },
        n_params={"pytorch": 2_571_648, "jax": 2_571_648},
    ),
]


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of arange(s, s + n) for each (s, n), without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + np.arange(total) - offsets


class Graphs:
    """Molecules as flat arrays: nodes and bonds of molecule i at node_start[i], edge_start[i].

    `edge_index` holds each bond once, as OGB stores it, with node indices local to the molecule;
    `labels` has NaN for unknown labels.
    """

    def __init__(
        self,
        nodes: np.ndarray,
        edges: np.ndarray,
        edge_index: np.ndarray,
        n_node: np.ndarray,
        n_edge: np.ndarray,
        labels: np.ndarray,
    ) -> None:
        self.nodes = np.asarray(nodes, np.float32)
        self.edges = np.asarray(edges, np.float32)
        self.edge_index = np.asarray(edge_index, np.int64).reshape(-1, 2)
        self.n_node = np.asarray(n_node, np.int64)
        self.n_edge = np.asarray(n_edge, np.int64)
        self.labels = np.asarray(labels, np.float32)
        self.node_start = np.cumsum(self.n_node) - self.n_node
        self.edge_start = np.cumsum(self.n_edge) - self.n_edge
        if (
            len(self.nodes) != self.n_node.sum()
            or len(self.edges) != self.n_edge.sum()
            or len(self.edge_index) != len(self.edges)
            or len(self.labels) != len(self.n_node)
        ):
            raise ValueError(
                f"inconsistent molecules: {len(self.nodes)} node rows for {self.n_node.sum()} listed nodes, "
                f"{len(self.edges)} bond-feature rows and {len(self.edge_index)} bonds for "
                f"{self.n_edge.sum()} listed bonds, {len(self.labels)} label rows for {len(self.n_node)} "
                "molecules (the OGB files num-node-list / num-edge-list must match the other files)"
            )

    def __len__(self) -> int:
        return len(self.n_node)

    def subset(self, index: np.ndarray) -> Graphs:
        index = np.asarray(index, np.int64)
        nodes = _ranges(self.node_start[index], self.n_node[index])
        bonds = _ranges(self.edge_start[index], self.n_edge[index])
        return Graphs(
            self.nodes[nodes],
            self.edges[bonds],
            self.edge_index[bonds],
            self.n_node[index],
            self.n_edge[index],
            self.labels[index],
        )


# ---- the OGB raw files ------------------------------------------------------------------------
def _read_csv(path: Path, dtype: Any) -> np.ndarray:
    import pandas as pd  # fast CSV parsing of the 11M-row node file; not needed for synthetic data

    if not path.exists():
        raise FileNotFoundError(
            f"missing OGB file {path} (the ogbg-molpcba download unpacked as "
            "ogbg_molpcba/{raw,split/scaffold}/...), or run with --data synthetic"
        )
    frame = pd.read_csv(path, compression="gzip", header=None)
    return frame.to_numpy(dtype=dtype)


def ogb_folder(root: Path) -> Path:
    return root / "ogbg_molpcba" if (root / "ogbg_molpcba").is_dir() else root


# The prepared arrays (`algoperf datasets prepare ogbg`): name -> (Graphs attribute, stored dtype).
# Atom and bond features are small integers and labels 0, 1 or NaN: uint8 and float16 hold them
# exactly; `Graphs` turns them back into float32.
ARRAYS = {
    "nodes": np.uint8,
    "edges": np.uint8,
    "edge_index": np.int32,
    "n_node": np.int32,
    "n_edge": np.int32,
    "labels": np.float16,
}
SPLITS_FILES = {"train": "split_train.npy", "valid": "split_valid.npy", "test": "split_test.npy"}


def save_arrays(graphs: Graphs, splits: dict[str, np.ndarray], folder: Path) -> list[Path]:
    """Writes the molecules and the split indices as `.npy` files; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dtype in ARRAYS.items():
        values = getattr(graphs, name)
        if np.issubdtype(dtype, np.integer) and values.size and values.max() > np.iinfo(dtype).max:
            raise ValueError(f"{name} holds {values.max()}, more than {np.dtype(dtype).name} stores")
        np.save(folder / f"{name}.npy", values.astype(dtype))
        written.append(folder / f"{name}.npy")
    for name, file in SPLITS_FILES.items():
        np.save(folder / file, np.asarray(splits[name], np.int64))
        written.append(folder / file)
    return written


def has_arrays(folder: Path) -> bool:
    return all((folder / f"{n}.npy").exists() for n in ARRAYS)


def load_arrays(folder: Path) -> tuple[Graphs, dict[str, np.ndarray]]:
    graphs = Graphs(**{n: np.load(folder / f"{n}.npy") for n in ARRAYS})
    return graphs, {name: np.load(folder / file) for name, file in SPLITS_FILES.items()}


def load_ogb(root: Path) -> tuple[Graphs, dict[str, np.ndarray]]:
    """All molecules of the OGB raw files, and the scaffold split's molecule indices."""
    folder = ogb_folder(root)
    raw = folder / "raw"
    graphs = Graphs(
        nodes=_read_csv(raw / "node-feat.csv.gz", np.float32),
        edges=_read_csv(raw / "edge-feat.csv.gz", np.float32),
        edge_index=_read_csv(raw / "edge.csv.gz", np.int64),
        n_node=_read_csv(raw / "num-node-list.csv.gz", np.int64)[:, 0],
        n_edge=_read_csv(raw / "num-edge-list.csv.gz", np.int64)[:, 0],
        labels=_read_csv(raw / "graph-label.csv.gz", np.float32),  # empty fields -> NaN
    )
    if (
        graphs.nodes.shape[1] != NUM_NODE_FEATURES
        or graphs.edges.shape[1] != NUM_EDGE_FEATURES
        or graphs.labels.shape[1] != NUM_TASKS
    ):
        raise ValueError(
            f"{raw}: expected {NUM_NODE_FEATURES} atom features, {NUM_EDGE_FEATURES} bond "
            f"features and {NUM_TASKS} tasks, found {graphs.nodes.shape[1]}, "
            f"{graphs.edges.shape[1]} and {graphs.labels.shape[1]} (is this ogbg-molpcba?)"
        )
    split_dir = folder / "split" / "scaffold"
    splits = {
        name: _read_csv(split_dir / f"{name}.csv.gz", np.int64)[:, 0]
        for name in ("train", "valid", "test")
    }
    return graphs, splits


# ---- packing: jraph.dynamically_batch + pad_with_graphs ---------------------------------------
def budget(batch_size: int) -> tuple[int, int, int]:
    """(nodes, edges, graphs) of a padded batch of `batch_size` graphs, as the reference sizes it."""
    return AVG_NODES_PER_GRAPH * batch_size + 1, AVG_EDGES_PER_GRAPH * batch_size, batch_size + 1


def collate(graphs: Graphs, ids: np.ndarray, batch_size: int) -> dict[str, Any]:
    """Molecules `ids` (that fit) as one padded batch: {'inputs': graph arrays, 'targets', 'weights'}."""
    ids = np.asarray(ids, np.int64)
    max_nodes, max_edges, max_graphs = budget(batch_size)
    k = len(ids)
    nn_, nb = graphs.n_node[ids], graphs.n_edge[ids]
    n_nodes, n_edges = int(nn_.sum()), 2 * int(nb.sum())
    if k > max_graphs - 1 or n_nodes > max_nodes - 1 or n_edges > max_edges:
        raise ValueError(
            f"{k} graphs with {n_nodes} nodes and {n_edges} edges exceed the batch budget "
            f"({max_graphs - 1}, {max_nodes - 1}, {max_edges})"
        )
    nodes = np.zeros((max_nodes, NUM_NODE_FEATURES), np.float32)
    edges = np.zeros((max_edges, NUM_EDGE_FEATURES), np.float32)
    senders = np.full(max_edges, n_nodes, np.int64)  # padding edges: the padding graph's first node
    receivers = np.full(max_edges, n_nodes, np.int64)
    nodes[:n_nodes] = graphs.nodes[_ranges(graphs.node_start[ids], nn_)]
    bonds = _ranges(graphs.edge_start[ids], nb)
    node_offset = np.repeat(np.cumsum(nn_) - nn_, nb)
    # Each molecule's directed edges: its bonds, then the same bonds reversed (the reference's order).
    bond_first = np.repeat(np.cumsum(nb) - nb, nb)
    rank = np.arange(len(bonds)) - bond_first
    forward = 2 * bond_first + rank
    backward = forward + np.repeat(nb, nb)
    src = graphs.edge_index[bonds, 0] + node_offset
    dst = graphs.edge_index[bonds, 1] + node_offset
    edges[forward] = edges[backward] = graphs.edges[bonds]
    senders[forward], receivers[forward] = src, dst
    senders[backward], receivers[backward] = dst, src
    n_node = np.zeros(max_graphs, np.int64)
    n_edge = np.zeros(max_graphs, np.int64)
    n_node[:k], n_edge[:k] = nn_, 2 * nb
    n_node[k], n_edge[k] = max_nodes - n_nodes, max_edges - n_edges  # the padding graph
    labels = np.zeros((max_graphs, NUM_TASKS), np.float32)
    weights = np.zeros((max_graphs, NUM_TASKS), np.float32)
    known = graphs.labels[ids]
    labels[:k] = np.nan_to_num(known, nan=0.0)
    weights[:k] = ~np.isnan(known)
    inputs = {
        "nodes": nodes,
        "edges": edges,
        "senders": senders,
        "receivers": receivers,
        "n_node": n_node,
        "n_edge": n_edge,
    }
    return {"inputs": inputs, "targets": labels, "weights": weights}


def _fits(graphs: Graphs, g: int, batch_size: int) -> None:
    max_nodes, max_edges, _ = budget(batch_size)
    if graphs.n_node[g] > max_nodes - 1 or 2 * graphs.n_edge[g] > max_edges:
        raise ValueError(
            f"molecule {g} ({graphs.n_node[g]} nodes, {2 * graphs.n_edge[g]} directed edges) is larger than a "
            f"whole batch of {batch_size} graphs ({max_nodes - 1} nodes, {max_edges} edges: 26 and 56 per "
            "graph, as the reference budgets it); use a larger batch size"
        )


class Packer:
    """Greedy packing of a stream of molecule ids, as jraph.dynamically_batch packs it."""

    def __init__(self, graphs: Graphs, batch_size: int) -> None:
        self.graphs, self.batch_size = graphs, batch_size
        max_nodes, self.max_edges, max_graphs = budget(batch_size)
        self.max_nodes, self.max_graphs = max_nodes - 1, max_graphs - 1
        self.ids: list[int] = []
        self.nodes = self.edges = 0

    def offer(self, g: int) -> bool:
        """Adds molecule g if it fits; False (and nothing added) when the batch is full."""
        _fits(self.graphs, g, self.batch_size)
        nn_, ne = int(self.graphs.n_node[g]), 2 * int(self.graphs.n_edge[g])
        if self.ids and (
            len(self.ids) + 1 > self.max_graphs
            or self.nodes + nn_ > self.max_nodes
            or self.edges + ne > self.max_edges
        ):
            return False
        self.ids.append(g)
        self.nodes, self.edges = self.nodes + nn_, self.edges + ne
        return True

    def batch(self) -> dict[str, Any]:
        return collate(self.graphs, np.array(self.ids, np.int64), self.batch_size)


def stack_shards(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-device batches stacked on a leading device axis (each process takes its own)."""
    return {
        "inputs": {k: np.stack([s["inputs"][k] for s in shards]) for k in shards[0]["inputs"]},
        "targets": np.stack([s["targets"] for s in shards]),
        "weights": np.stack([s["weights"] for s in shards]),
    }


class GraphStream:
    """Endless packed training batches over per-epoch shuffles; the position is (epoch, cursor).

    As the reference's repeated stream, a batch may straddle two epochs. With `num_shards` > 1
    the batch is `num_shards` per-device batches of `batch_size // num_shards` graphs each, stacked
    (the reference builds its multi-device batch the same way).
    """

    def __init__(self, graphs: Graphs, batch_size: int, seed: int, num_shards: int = 1) -> None:
        if len(graphs) == 0:
            raise ValueError("the training split has no molecules")
        if batch_size // num_shards < 1:
            raise ValueError(
                f"batch size {batch_size} is smaller than the number of devices {num_shards}"
            )
        self.graphs, self.batch_size, self.seed, self.num_shards = (
            graphs,
            batch_size,
            seed,
            num_shards,
        )
        self.epoch, self.cursor = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.graphs))

    def __iter__(self) -> GraphStream:
        return self

    def _next_shard(self) -> dict[str, Any]:
        packer = Packer(self.graphs, self.batch_size // self.num_shards)
        while True:
            if self.cursor >= len(self._order):
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._permutation()
            if not packer.offer(int(self._order[self.cursor])):
                return packer.batch()
            self.cursor += 1

    def __next__(self) -> dict[str, Any]:
        if self.num_shards == 1:
            return self._next_shard()
        return stack_shards([self._next_shard() for _ in range(self.num_shards)])

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._permutation()


def eval_graph_batches(
    graphs: Graphs, batch_size: int, num_shards: int = 1
) -> Iterator[dict[str, Any]]:
    """Every molecule once, in order, packed as in training; shards padded with empty batches.

    (ours) The reference evaluates ceil(n / B) packed batches of a cycled iterator, which can
    miss or repeat molecules when packing stops short of B graphs; here every molecule counts once.
    """
    per_device = batch_size // num_shards
    shards: list[dict[str, Any]] = []
    packer = Packer(graphs, per_device)
    for g in range(len(graphs)):
        if not packer.offer(g):
            shards.append(packer.batch())
            packer = Packer(graphs, per_device)
            packer.offer(g)
        if len(shards) == num_shards:
            yield shards[0] if num_shards == 1 else stack_shards(shards)
            shards = []
    if packer.ids:
        shards.append(packer.batch())
    if shards:
        while len(shards) < num_shards:
            shards.append(collate(graphs, np.zeros(0, np.int64), per_device))
        yield shards[0] if num_shards == 1 else stack_shards(shards)


def real_graph_count(n_node: np.ndarray) -> int:
    """Graphs before the padding graph, as jraph.get_graph_padding_mask counts them.

    The padding graph and the empty graphs after it are the trailing zeros of n_node plus one.
    """
    rows = n_node.reshape(-1, n_node.shape[-1])
    nonzero = rows[:, ::-1] != 0
    trailing_zeros = np.argmax(nonzero, axis=1)
    return int(np.sum(rows.shape[1] - trailing_zeros - 1))


# ---- metrics (numpy, as the reference computes them) ------------------------------------------
def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def mean_average_precision(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float:
    """The reference's mAP: mean over tasks of sklearn's average precision on the known labels.

    As the reference, a task counts when the 0/1 label array (unknown and padding labels already
    replaced by 0) has at least one 1 and one 0 in that column; its AP is then taken over the rows
    whose label is known (mask 1). NaN when no task counts.
    """
    from sklearn.metrics import average_precision_score

    mask = mask.astype(bool)
    probs = sigmoid(logits)
    aps = []
    for task in range(labels.shape[1]):
        column = labels[:, task]
        if np.sum(column == 0) > 0 and np.sum(column == 1) > 0:
            known = mask[:, task]
            aps.append(average_precision_score(column[known], probs[known, task]))
    return float(np.mean(aps)) if aps else float("nan")


def eval_metrics(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The eval of a split from its collected (graphs, tasks) logits, labels and label mask.

    mAP over every row (padding rows included, masked, as the reference collects them); accuracy
    (logit > 0 equals the label) and sigmoid cross-entropy averaged over the known labels. Both
    frameworks' evals hand their numpy arrays to this function.
    """
    logits = np.asarray(logits).reshape(-1, NUM_TASKS)
    labels = np.asarray(labels).reshape(-1, NUM_TASKS)
    mask = np.asarray(mask).reshape(-1, NUM_TASKS)
    known, nan = mask.astype(bool), float("nan")
    losses = np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))
    return {
        "mean_average_precision": mean_average_precision(logits, labels, mask),
        "accuracy": float(((logits > 0) == (labels == 1))[known].mean()) if known.any() else nan,
        "loss": float(losses[known].mean()) if known.any() else nan,
    }


# ---- synthetic molecules ----------------------------------------------------------------------
# OGB atom features: atomic number - 1, chirality, degree, formal charge + 5, number of H,
# radical electrons, hybridisation, aromatic, in ring. Bond features: type, stereo, conjugated.
_ATOMS = np.array([5, 6, 7, 8, 15, 16, 34])  # C, N, O, F, S, Cl, Br
_ATOM_P = np.array([0.72, 0.1, 0.1, 0.03, 0.02, 0.02, 0.01])


def _synthetic_molecules(n: int, rng: np.random.Generator) -> Graphs:
    """Random molecules: a random tree plus a few ring bonds, 8-44 atoms (molpcba averages 26)."""
    n_node = np.clip(np.rint(rng.normal(26, 7, n)), 8, 44).astype(np.int64)
    index_parts, n_edge = [], np.zeros(n, np.int64)
    for i, k in enumerate(n_node):
        tree = np.stack([rng.integers(0, np.arange(1, k)), np.arange(1, k)], 1)
        rings = rng.integers(0, k, (int(rng.integers(0, 5)), 2))
        rings = rings[rings[:, 0] != rings[:, 1]]
        index_parts.append(np.concatenate([tree, rings]))
        n_edge[i] = len(index_parts[-1])
    edge_index = np.concatenate(index_parts)
    total_nodes, total_edges = int(n_node.sum()), int(n_edge.sum())
    nodes = np.zeros((total_nodes, NUM_NODE_FEATURES), np.float32)
    nodes[:, 0] = rng.choice(_ATOMS, total_nodes, p=_ATOM_P)
    nodes[:, 1] = rng.random(total_nodes) < 0.05
    starts = np.repeat(np.cumsum(n_node) - n_node, n_edge)
    degree = np.bincount(
        np.concatenate([edge_index[:, 0] + starts, edge_index[:, 1] + starts]),
        minlength=total_nodes,
    )
    nodes[:, 2] = np.minimum(degree, 10)
    nodes[:, 3] = 5 + (rng.random(total_nodes) < 0.02)
    nodes[:, 4] = np.clip(4 - degree - rng.integers(0, 2, total_nodes), 0, 3)
    nodes[:, 6] = rng.integers(1, 4, total_nodes)
    nodes[:, 7] = rng.random(total_nodes) < 0.3
    nodes[:, 8] = nodes[:, 7] + (rng.random(total_nodes) < 0.1) > 0
    edges = np.stack(
        [
            rng.choice(4, total_edges, p=[0.6, 0.1, 0.02, 0.28]),
            (rng.random(total_edges) < 0.03) * 2,
            rng.random(total_edges) < 0.4,
        ],
        1,
    )
    return Graphs(nodes, edges, edge_index, n_node, n_edge, np.zeros((n, NUM_TASKS), np.float32))


def _teacher_logits(graphs: Graphs) -> np.ndarray:
    """A fixed random one-step message-passing network, sum-pooled: 128 logits per molecule."""
    rng = np.random.default_rng(20_240_601)  # the teacher is the same for every split and seed
    table = rng.standard_normal((NUM_NODE_FEATURES, 64, 32)) / 3.0  # feature value -> embedding
    codes = np.clip(graphs.nodes.astype(np.int64), 0, 63)
    h = np.tanh(sum(table[f, codes[:, f]] for f in range(NUM_NODE_FEATURES)))
    starts = np.repeat(graphs.node_start, graphs.n_edge)
    a, b = graphs.edge_index[:, 0] + starts, graphs.edge_index[:, 1] + starts
    messages = np.zeros_like(h)
    np.add.at(messages, a, h[b])
    np.add.at(messages, b, h[a])
    w = rng.standard_normal((32, 32)) / np.sqrt(32)
    h = np.tanh(h + messages @ w)
    pooled = np.add.reduceat(h, graphs.node_start, axis=0) / np.sqrt(graphs.n_node)[:, None]
    head = rng.standard_normal((32, NUM_TASKS)) / np.sqrt(32)
    return pooled @ head


_TEACHER_THRESHOLDS: np.ndarray | None = None


def synthetic_graphs(n: int, seed: int, unknown_fraction: float = 0.2) -> Graphs:
    """Random molecules labelled by a fixed random teacher; a fraction of the labels unknown (NaN).

    Each task's threshold is a fixed quantile (between 60% and 90%) of the teacher's logits on a
    fixed calibration set, so every task has positives and negatives in any split.
    """
    global _TEACHER_THRESHOLDS
    if _TEACHER_THRESHOLDS is None:
        calibration = _teacher_logits(_synthetic_molecules(512, np.random.default_rng(7)))
        quantiles = np.random.default_rng(8).uniform(0.6, 0.9, NUM_TASKS)
        _TEACHER_THRESHOLDS = np.array(
            [np.quantile(calibration[:, t], q) for t, q in enumerate(quantiles)]
        )
    thresholds = _TEACHER_THRESHOLDS
    rng = np.random.default_rng(seed)
    graphs = _synthetic_molecules(n, rng)
    labels = (_teacher_logits(graphs) > thresholds).astype(np.float32)
    labels[rng.random(labels.shape) < unknown_fraction] = np.nan
    graphs.labels = labels
    return graphs


# ---- the data half of the workload ------------------------------------------------------------
class OgbgData:
    """Splits, training stream and eval batches (framework-free; the torch workload adds the model)."""

    data: str
    data_dir: str | None
    num_eval_train_examples: int
    synthetic_sizes: dict[str, int] = {"train": 64, "eval_train": 16, "validation": 16, "test": 16}
    _ogb: tuple[Graphs, dict[str, np.ndarray]] | None = None

    options: dict

    def num_shards(self) -> int:
        """Devices a batch is split over (the torch workload returns the world size)."""
        return 1

    def model_config(self) -> dict[str, Any]:
        """The GNN's activation and sizes for this variant (its `model_options`; the base's
        defaults otherwise), read the same way by both frameworks' models."""
        return {
            "activation": str(self.options.get("activation", "relu")),
            "latent_dim": int(self.options.get("latent_dim", 256)),
            "hidden_dims": tuple(int(d) for d in self.options.get("hidden_dims", (256,))),
            "num_message_passing_steps": int(self.options.get("num_message_passing_steps", 5)),
        }

    def split_graphs(self, split: str) -> Graphs:
        """The molecules of a split ('train', 'eval_train', 'validation', 'test'), built once."""
        cache = self.__dict__.setdefault("_graph_cache", {})
        if split not in cache:
            cache[split] = self._load_split_graphs(split)
        return cache[split]

    def _load_split_graphs(self, split: str) -> Graphs:
        if self.data == "synthetic":
            if split == "eval_train":
                return self.split_graphs("train").subset(
                    np.arange(self.synthetic_sizes["eval_train"])
                )
            seed = {"train": 900, "validation": 901, "test": 902}[split]
            return synthetic_graphs(self.synthetic_sizes[split], seed)
        if not self.data_dir:
            raise FileNotFoundError(
                "ogbg reads the OGB ogbg-molpcba raw files from --data-dir "
                "(ogbg_molpcba/raw/*.csv.gz, split/scaffold/*.csv.gz), or use --data synthetic"
            )
        if self._ogb is None:
            root = prepared_dir(self.data_dir, "ogbg")
            self._ogb = load_arrays(root) if has_arrays(root) else load_ogb(root)
        graphs, splits = self._ogb
        if split == "eval_train":
            # The reference evaluates a shuffled draw of the training set; here a fixed one.
            train = splits["train"]
            n = min(self.num_eval_train_examples, len(train))
            return graphs.subset(
                np.sort(np.random.default_rng(EVAL_TRAIN_SEED).permutation(train)[:n])
            )
        return graphs.subset(
            splits[{"train": "train", "validation": "valid", "test": "test"}[split]]
        )

    def train_batches(self, global_batch_size: int, seed: int) -> GraphStream:
        return GraphStream(self.split_graphs("train"), global_batch_size, seed, self.num_shards())

    def eval_split_batches(
        self, split: str, num_examples: int, batch_size: int
    ) -> Iterator[dict[str, Any]]:
        graphs = self.split_graphs(split)
        graphs = graphs.subset(np.arange(min(num_examples, len(graphs))))
        # A split smaller than the eval batch (a fixture) is packed with its own size as the
        # budget, not padded to 32,768 graphs; a real split is larger than the batch.
        batch_size = min(batch_size, max(len(graphs), self.num_shards()))
        return eval_graph_batches(graphs, batch_size, self.num_shards())
