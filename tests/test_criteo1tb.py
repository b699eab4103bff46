"""Criteo 1TB / DLRM-small: reference counts and tree, the model against plain torch, the TSV pipeline."""

from __future__ import annotations

import gc
import gzip
import math

import farmhash
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from algoperf import spec
from algoperf.backends import pytorch as backend
from algoperf.random_utils import prng_key
from workloads import registry
from workloads.criteo1tb import workload as criteo
from workloads.criteo1tb.torch_workload import Criteo1TbWorkload, DLRMResNet, DlrmSmall, build

EXPECTED = {
    "criteo1tb": 539_267_457,
    "criteo1tb_layernorm": 539_275_137,
    "criteo1tb_resnet": 538_121_473,
    "criteo1tb_embed_init": 539_267_457,
}
TARGETS = {
    "criteo1tb": (0.123735, 0.126041),
    "criteo1tb_layernorm": (0.123757, 0.126152),
    "criteo1tb_resnet": (0.12415, 0.12648),
    "criteo1tb_embed_init": (0.129657, 0.131967),
}


def meta_model(name: str) -> tuple[Criteo1TbWorkload, torch.nn.Module]:
    workload = registry.load(name, data="synthetic")
    with torch.device("meta"):
        model = workload.build_model()
    return workload, model


# ---- facts and model ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_count_matches_the_reference(name):
    workload, model = meta_model(name)
    assert isinstance(workload, Criteo1TbWorkload)
    count = sum(p.numel() for p in model.parameters())
    assert count == EXPECTED[name] == registry.get(name).n_params["pytorch"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_facts_are_the_references(name):
    info = registry.get(name)
    assert (info.validation_target, info.test_target) == TARGETS[name]
    assert info.target_metric_name == "loss" and not info.higher_is_better
    assert info.reached(TARGETS[name][0] - 1e-4) and not info.reached(TARGETS[name][0] + 1e-4)
    assert (info.max_allowed_runtime_sec, info.step_hint, info.eval_period_time_sec) == (
        7703,
        10_666,
        120,
    )
    assert info.num_train_examples == 4_195_197_692
    assert (info.num_validation_examples, info.num_test_examples) == (83_274_637, 95_000_000)
    # eval-train: the validation size rounded up to whole PyTorch eval batches of 8,192.
    assert info.eval_batch_size == 8192 and info.num_eval_train_examples == 10_166 * 8192
    assert info.loss_type == spec.LossType.SIGMOID_CROSS_ENTROPY and info.default_dropout == 0.0
    assert info.is_variant == (name != "criteo1tb")


def test_reference_tree_names_shapes_and_types():
    workload, model = meta_model("criteo1tb_layernorm")
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    names = list(shapes)
    assert names[:4] == [f"embedding_chunk_{i}" for i in range(4)]
    assert all(shapes[f"embedding_chunk_{i}"] == (1_048_576, 128) for i in range(4))
    assert names[4:7] == [
        "bot_mlp.0.weight",
        "bot_mlp.0.bias",
        "bot_mlp.2.weight",
    ]  # LayerNorm at 2
    assert names[-2:] == ["embed_ln.weight", "embed_ln.bias"]
    assert shapes["top_mlp.0.weight"] == (1024, 506)  # 128 + 27 * 28 / 2
    types = backend.param_types(model)
    assert types["embedding_chunk_0"] == spec.ParameterType.EMBEDDING
    assert types["embed_ln.weight"] == spec.ParameterType.LAYER_NORM_SCALE
    workload._param_shapes = shapes
    outputs = [n for n in names if workload.is_output_params(n)]
    assert outputs == ["top_mlp.13.weight", "top_mlp.13.bias"] and shapes[outputs[0]] == (1, 256)


def test_resnet_variant_tree():
    _, model = meta_model("criteo1tb_resnet")
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["bot_mlp.0.module.0.weight"] == (256, 13)
    assert shapes["top_mlp.0.module.0.weight"] == (256, 26 * 128 + 256)
    assert shapes["top_mlp.4.module.0.weight"] == (1, 256)


def small_input(batch: int, vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dense = torch.rand(batch, 13, generator=g) * 3
    ids = torch.randint(0, 10 * vocab, (batch, 26), generator=g).float()  # reduced mod vocab
    return torch.cat([dense, ids], 1)


def test_dlrm_small_equals_plain_torch():
    torch.manual_seed(0)
    model = DlrmSmall(vocab_size=64).eval()
    x = small_input(5, 64)
    table = torch.cat([getattr(model, f"embedding_chunk_{i}") for i in range(4)])
    emb = table[x[:, 13:].long() % 64]  # (5, 26, 128)
    h = x[:, :13]
    for layer in (0, 2, 4):
        h = F.relu(F.linear(h, model.bot_mlp[layer].weight, model.bot_mlp[layer].bias))
    z = torch.cat([h[:, None], emb], 1)  # (5, 27, 128)
    dots = [z[:, i] @ z[:, j].T for i in range(27) for j in range(i, 27)]
    dots = torch.stack([torch.diagonal(d) for d in dots], 1)  # (5, 378)
    t = torch.cat([h, dots], 1)
    linears = [m for m in model.top_mlp if isinstance(m, torch.nn.Linear)]
    for i, linear in enumerate(linears):
        t = linear(t) if i == 4 else F.relu(linear(t))
    torch.testing.assert_close(model(x), t, rtol=1e-5, atol=1e-6)


def test_resnet_equals_plain_torch():
    torch.manual_seed(0)
    model = DLRMResNet(vocab_size=64).eval()
    x = small_input(4, 64)
    table = torch.cat([getattr(model, f"embedding_chunk_{i}") for i in range(4)])
    lin = [m for m in model.bot_mlp.modules() if isinstance(m, torch.nn.Linear)]
    h = F.relu(lin[0](x[:, :13]))
    h = F.relu(lin[1](h)) + h
    h = F.relu(lin[2](h)) + h
    t = torch.cat([h, table[x[:, 13:].long() % 64].reshape(4, -1)], 1)
    top = [m for m in model.top_mlp.modules() if isinstance(m, torch.nn.Linear)]
    t = F.relu(top[0](t))
    for i in (1, 2, 3):
        t = F.relu(top[i](t)) + t
    torch.testing.assert_close(model(x), top[4](t), rtol=1e-5, atol=1e-6)


def test_chunked_lookup_has_the_gradient_of_the_concatenated_table():
    torch.manual_seed(0)
    model = DlrmSmall(vocab_size=64)
    x = small_input(6, 64, seed=3)
    model(x).sum().backward()
    chunks = [getattr(model, f"embedding_chunk_{i}") for i in range(4)]
    grads = [c.grad.clone() for c in chunks]
    for c in chunks:
        c.grad = None
    for p in model.parameters():
        p.grad = None
    # The reference's way: one concatenated table, indexed.
    original = model.embed

    def concatenated(sparse):
        table = torch.cat(chunks)
        return table[sparse.long().reshape(-1) % 64].reshape(*sparse.shape, 128)

    model.embed = concatenated
    model(x).sum().backward()
    model.embed = original
    for g, c in zip(grads, chunks):
        torch.testing.assert_close(g, c.grad)
    assert any(g.abs().sum() > 0 for g in grads)


def test_initialisation_is_the_references():
    torch.manual_seed(0)
    model = DlrmSmall(vocab_size=4096)
    table = torch.cat([getattr(model, f"embedding_chunk_{i}") for i in range(4)])
    assert table.min() >= 0 and table.max() <= 1 / 64  # uniform(0, 1) / sqrt(4096)
    assert table.mean().item() == pytest.approx(0.5 / 64, rel=0.01)
    big = build({"embedding_init_multiplier": 1.0}, vocab_size=4096)
    assert (
        big.embedding_chunk_0.max() <= 1
        and big.embedding_chunk_0.mean().item() == pytest.approx(0.5, rel=0.01)
    )
    first = model.bot_mlp[0]
    assert first.weight.abs().max() <= math.sqrt(6 / (13 + 512))
    assert first.weight.std().item() == pytest.approx(
        math.sqrt(6 / (13 + 512)) / math.sqrt(3), rel=0.05
    )
    top = model.top_mlp[0]
    assert top.weight.std().item() == pytest.approx(math.sqrt(2 / (506 + 1024)), rel=0.02)
    assert top.bias.std().item() == pytest.approx(math.sqrt(1 / 1024), rel=0.1)


def test_dropout_is_given_at_call_time():
    torch.manual_seed(0)
    model = build({"use_layer_norm": True}, vocab_size=64)
    x = small_input(8, 64)
    model.train()
    a, b = model(x, dropout_rate=0.5), model(x, dropout_rate=0.5)
    assert not torch.equal(a, b)
    torch.testing.assert_close(model(x, dropout_rate=0.0), model.eval()(x, dropout_rate=0.5))


def test_loss_is_sigmoid_cross_entropy_with_mask():
    workload = registry.load("criteo1tb", data="synthetic")
    logits = torch.tensor([[0.3], [-1.2], [2.0]])
    labels = torch.tensor([1.0, 0.0, 0.0])
    out = workload.loss_fn(labels, logits, torch.tensor([1.0, 1.0, 0.0]))
    expected = [math.log(1 + math.exp(-0.3)), math.log(1 + math.exp(-1.2))]
    assert out["summed"].item() == pytest.approx(sum(expected), rel=1e-6)
    assert out["n_valid_examples"].item() == 2 and out["per_example"][2] == 0


@pytest.fixture(scope="module")
def real_size():
    """The full-size DLRM-small (2 GB), built once for this module and freed after."""
    workload = registry.load("criteo1tb", data="synthetic")
    workload.synthetic_sizes = {"train": 16, "eval_train": 8, "validation": 8, "test": 8}
    model, _ = workload.init_model_fn(prng_key(0))
    yield workload, model
    del model, workload
    gc.collect()


@pytest.mark.slow
def test_real_size_forward_backward(real_size):
    workload, model = real_size
    batch = next(workload.build_input_queue(prng_key(1), "train", None, 4))
    logits, _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.TRAIN, None, True, 0.1)
    assert logits.shape == (4, 1)
    loss = workload.loss_fn(batch["targets"], logits)
    (loss["summed"] / loss["n_valid_examples"]).backward()
    ids = batch["inputs"][:, 13:].long().reshape(-1) % criteo.VOCAB_SIZE
    rows = model.embedding_chunk_0.grad.abs().sum(1).nonzero().squeeze(1)
    assert set(rows.tolist()) <= set(ids[ids < 1_048_576].tolist()) and len(rows) > 0
    assert model.top_mlp[9].weight.grad is not None
    for p in model.parameters():
        p.grad = None


@pytest.mark.slow
def test_real_size_eval_is_the_mean_loss(real_size):
    workload, model = real_size
    metrics = workload.eval_model(3, model, None, None, None, None, 0)  # 8 = 3 + 3 + 2 (padded)
    val = workload.split_arrays("validation")
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(val["inputs"])).reshape(-1)
    expected = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(val["targets"])).item()
    assert metrics["validation/loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["validation/num_examples"] == 8 and math.isfinite(metrics["train/loss"])


def test_synthetic_data_has_the_real_layout_and_teacher_clicks():
    workload = registry.load("criteo1tb", data="synthetic")
    train = workload.split_arrays("train")
    assert train["inputs"].shape == (256, 39) and train["inputs"].dtype == np.float32
    ids = train["inputs"][:, 13:]
    assert np.all(ids == np.round(ids)) and np.all(ids < np.array(criteo.RAW_VOCAB_SIZES))
    assert set(np.unique(train["targets"])) == {0.0, 1.0} and 0.2 < train["targets"].mean() < 0.3
    again = registry.load("criteo1tb", data="synthetic").split_arrays("train")
    np.testing.assert_array_equal(again["targets"], train["targets"])


# ---- hashing and parsing ------------------------------------------------------------------------
M64 = (1 << 64) - 1


def plain_fingerprint64(data: bytes) -> int:
    """FarmHash Fingerprint64 of an 8-16 byte string, in plain Python integers (farmhashna)."""
    k2 = 0x9AE16A3B2F90404F
    n = len(data)
    assert 8 <= n <= 16

    def rot(v, s):
        return ((v >> s) | (v << (64 - s))) & M64

    mul = (k2 + 2 * n) & M64
    a = (int.from_bytes(data[:8], "little") + k2) & M64
    b = int.from_bytes(data[-8:], "little")
    c = (rot(b, 37) * mul + a) & M64
    d = ((rot(a, 25) + b) * mul) & M64
    x = ((c ^ d) * mul) & M64
    x ^= x >> 47
    y = ((d ^ x) * mul) & M64
    y ^= y >> 47
    return (y * mul) & M64


def test_fingerprint_is_tensorflows():
    # tf.strings.to_hash_bucket_fast(["Hello", "TensorFlow", "2.x"], 3) == [0, 2, 2] (TF docs).
    h = criteo.fingerprint64(np.array([b"Hello", b"TensorFlow", b"2.x"]))
    assert (h % np.uint64(3)).tolist() == [0, 2, 2]
    rng = np.random.default_rng(0)
    values = [
        bytes(rng.integers(33, 127, rng.integers(0, 40)).astype(np.uint8)) for _ in range(500)
    ]
    got = criteo.fingerprint64(np.array(values, dtype=np.bytes_))
    assert [int(v) for v in got] == [farmhash.fingerprint64(v) for v in values]


def make_fields(rng: np.random.Generator) -> list[str]:
    dense = []
    for v in rng.integers(-3, 5000, criteo.NUM_DENSE):
        r = rng.random()
        dense.append("" if r < 0.15 else "-1" if r < 0.25 else str(int(v)))
    cats = []
    for v in rng.integers(0, 2**32, criteo.NUM_SPARSE):
        r = rng.random()
        cats.append("" if r < 0.1 else "-1" if r < 0.15 else f"{int(v):08x}")
    return [str(int(rng.random() < 0.3)), *dense, *cats]


def make_lines(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["\t".join(make_fields(rng)) + "\n" for _ in range(n)]


def test_lines_are_parsed_as_the_reference_does():
    lines = make_lines(20, seed=1)
    parsed = criteo.parse_lines(lines)
    assert parsed["inputs"].shape == (20, 39) and parsed["inputs"].dtype == np.float32
    assert parsed["targets"].dtype == np.float32
    for row, line in zip(parsed["inputs"], lines):
        fields = line.rstrip("\n").split("\t")
        # Dense: missing ("" or "-1") -> 0; negative -> 0; then log(x + 1).
        dense = np.array([0.0 if v in ("", "-1") else max(float(v), 0.0) for v in fields[1:14]])
        np.testing.assert_allclose(row[:13], np.log(dense + 1.0), rtol=1e-6)
        for j, v in enumerate(fields[14:]):
            key = (v if v not in ("", "-1") else "00000000") + str(j)
            expected = plain_fingerprint64(key.encode()) % criteo.RAW_VOCAB_SIZES[j]
            assert expected == farmhash.fingerprint64(key) % criteo.RAW_VOCAB_SIZES[j]
            assert 0 <= expected < criteo.RAW_VOCAB_SIZES[j]
            assert row[13 + j] == np.float32(expected)  # the reference casts the ids to float32
    np.testing.assert_array_equal(parsed["targets"], [float(line.split("\t")[0]) for line in lines])


def test_a_malformed_line_names_the_problem():
    with pytest.raises(ValueError, match="40 tab-separated fields"):
        criteo.parse_lines(["1\t2\t3\n"])


# ---- files and streams --------------------------------------------------------------------------
def write_day(path, lines, gz):
    data = "".join(lines).encode()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.fixture
def criteo_dir(tmp_path):
    for day in range(3):  # 10 lines each; day_0 and day_2 gzipped, day_1 plain
        write_day(
            tmp_path / (f"day_{day}.gz" if day != 1 else f"day_{day}"),
            make_lines(10, day),
            day != 1,
        )
    write_day(tmp_path / "day_23", make_lines(8, 23), gz=False)
    return tmp_path


def test_gz_and_plain_files_read_alike(tmp_path):
    lines = make_lines(6, seed=5)
    write_day(tmp_path / "day_0.gz", lines, gz=True)
    write_day(tmp_path / "day_1", lines, gz=False)
    a = criteo.LineReader([criteo.Source(tmp_path / "day_0.gz")]).read(100)
    b = criteo.LineReader([criteo.Source(tmp_path / "day_1")]).read(100)
    assert a == b == [line.encode() for line in lines]


def test_day_23_parts_split_as_the_reference(tmp_path):
    for part in range(36):
        write_day(tmp_path / f"day_23_{part:02d}", make_lines(1, 100 + part), gz=False)
    write_day(tmp_path / "day_0_00", make_lines(1, 0), gz=False)
    test = [s.path.name for s in criteo.split_sources(tmp_path, "test")]
    validation = [s.path.name for s in criteo.split_sources(tmp_path, "validation")]
    assert test == [f"day_23_{p:02d}" for p in range(19)]
    assert validation == [f"day_23_{p:02d}" for p in range(19, 36)]
    assert [s.path.name for s in criteo.split_sources(tmp_path, "train")] == ["day_0_00"]


def test_single_day_23_is_cut_where_the_reference_cuts(criteo_dir):
    workload = registry.load("criteo1tb", data="real", data_dir=str(criteo_dir))
    test, val = workload.split_arrays("test"), workload.split_arrays("validation")
    # 95,000,000 of 178,274,637 lines are test: 4 of 8.
    assert (
        len(test["inputs"]) == round(8 * 95_000_000 / 178_274_637) == 4 and len(val["inputs"]) == 4
    )
    whole = criteo.parse_lines((criteo_dir / "day_23").read_bytes().splitlines(keepends=True))
    np.testing.assert_array_equal(np.concatenate([test["inputs"], val["inputs"]]), whole["inputs"])


def test_eval_batches_stream_in_order_with_padding(criteo_dir):
    workload = registry.load("criteo1tb", data="real", data_dir=str(criteo_dir))
    batches = list(workload.eval_split_batches("validation", 10**9, 3))
    assert [b["weights"].tolist() for b in batches] == [[1, 1, 1], [1, 0, 0]]
    inputs = np.concatenate([b["inputs"] for b in batches])[:4]
    np.testing.assert_array_equal(inputs, workload.split_arrays("validation")["inputs"])
    assert np.all(batches[-1]["inputs"][1:] == 0)
    limited = list(workload.eval_split_batches("eval_train", 5, 4))
    assert [int(b["weights"].sum()) for b in limited] == [4, 1]


def test_train_stream_is_deterministic_and_drops_the_epoch_remainder(criteo_dir):
    workload = registry.load("criteo1tb", data="real", data_dir=str(criteo_dir))
    a, b = workload.train_batches(4, seed=3), workload.train_batches(4, seed=3)
    first = [next(a) for _ in range(7)]  # 30 lines per epoch: 7 batches of 4, 2 lines dropped
    for batch in first:
        np.testing.assert_array_equal(batch["inputs"], next(b)["inputs"])
        assert batch["inputs"].shape == (4, 39) and batch["targets"].shape == (4,)
    rows = {r.tobytes() for batch in first for r in batch["inputs"]}
    assert len(rows) == 28
    epoch_2 = next(a)
    assert a.state_dict()["epoch"] == 1
    starts = {
        criteo.parse_lines(criteo.LineReader([s]).read(1))["inputs"][0].tobytes()
        for s in criteo.split_sources(criteo_dir, "train")
    }
    assert epoch_2["inputs"][0].tobytes() in starts  # a new epoch starts at a file's first line
    other = workload.train_batches(4, seed=4)
    assert not all(np.array_equal(next(other)["inputs"], f["inputs"]) for f in first[:3])


@pytest.mark.parametrize(
    "skip", [1, 3, 6]
)  # inside a gz file, inside the plain file, across epochs
def test_train_stream_restores_its_position(criteo_dir, skip):
    workload = registry.load("criteo1tb", data="real", data_dir=str(criteo_dir))
    a = workload.train_batches(4, seed=3)
    for _ in range(skip):
        next(a)
    state = a.state_dict()
    expected = [next(a)["inputs"] for _ in range(5)]
    c = workload.train_batches(4, seed=3)
    c.load_state_dict(dict(state))
    for e in expected:
        np.testing.assert_array_equal(next(c)["inputs"], e)


def test_missing_files_say_what_is_expected(tmp_path):
    workload = registry.load("criteo1tb", data="real", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="day_0 ... day_22"):
        workload.train_batches(4, seed=0)
