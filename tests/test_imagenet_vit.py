"""ImageNet ViT-S/16: facts, parameter counts, blocks against their formulas, mixup, RandAugment."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from algoperf import spec
from algoperf.random_utils import prng_key
from workloads import registry
from workloads.imagenet_vit import randaugment as ra
from workloads.imagenet_vit import workload as vit
from workloads.imagenet_vit.torch_workload import MAPHead, MlpBlock, ViT, posemb_sincos_2d

# WORKLOADS.md: name -> (validation target, test target, PyTorch parameters)
TABLE = {
    "imagenet_vit": (0.77309, 0.6519, 22_122_472),
    "imagenet_vit_glu": (0.75738, 0.6359, 50_452_456),
    "imagenet_vit_post_ln": (0.75312, 0.6286, 22_121_704),
    "imagenet_vit_map": (0.77113, 0.6523, 23_896_552),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_facts_are_the_table_s(name):
    info = registry.get(name)
    assert (info.validation_target, info.test_target) == TABLE[name][:2]
    assert (info.max_allowed_runtime_sec, info.step_hint, info.eval_period_time_sec) == (
        69_768,
        167_999,
        420,
    )
    # The reference rounds the validation size up to whole eval batches of 2,048.
    assert info.eval_batch_size == 2048 and info.num_eval_train_examples == 25 * 2048
    assert info.default_dropout == 0.0 and info.n_params["pytorch"] == TABLE[name][2]


@pytest.mark.parametrize("name", sorted(TABLE))
def test_parameter_count_is_the_table_s(name):
    with torch.device("meta"):
        model = registry.load(name, data="synthetic").build_model()
    assert sum(p.numel() for p in model.parameters()) == TABLE[name][2]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ViT()


def test_module_tree_has_the_reference_names(model):
    names = [n for n, _ in model.named_parameters()]
    assert names[:4] == [
        "pre_logits.weight",
        "pre_logits.bias",
        "conv_patch_extract.weight",
        "conv_patch_extract.bias",
    ]
    assert "encoder.net.11.mlp3.linear2.bias" in names and "encoder.encoder_norm.weight" in names
    assert "encoder.net.0.self_attention1.query.weight" in names


def test_initialisation_is_the_reference_s(model):
    assert not model.head.weight.any() and not model.head.bias.any()
    w = model.conv_patch_extract.weight.detach()
    assert float(w.std()) == pytest.approx(math.sqrt(1 / (3 * 16 * 16)), rel=0.03)
    attention = model.encoder.net[0].self_attention1
    assert not attention.query.bias.any()
    bound = math.sqrt(6 / (384 + 384))  # Xavier-uniform
    assert float(attention.key.weight.abs().max()) <= bound
    mlp_bias = model.encoder.net[0].mlp3.linear1.bias.detach()
    assert mlp_bias.any() and float(mlp_bias.abs().max()) < 1e-5  # N(0, 1e-6^2)


def test_posemb_is_the_2d_sincos_table():
    pe = posemb_sincos_2d(2, 3, 8)[0]  # rows in (y, x) order; omega_k = 1 / 10000^(k / (8/4 - 1))
    omega = 1.0 / 10_000 ** np.array([0.0, 1.0])
    for y in range(2):
        for x in range(3):
            expected = np.concatenate(
                [np.sin(x * omega), np.cos(x * omega), np.sin(y * omega), np.cos(y * omega)]
            )
            np.testing.assert_allclose(pe[y * 3 + x].numpy(), expected, rtol=1e-6, atol=1e-7)


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def numpy_linear(layer, x):
    return x @ layer.weight.detach().numpy().T + layer.bias.detach().numpy()


def test_glu_mlp_multiplies_the_activations_by_their_projection():
    torch.manual_seed(0)
    mlp = MlpBlock(6, 10, use_glu=True).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 6)).astype(np.float32)
    h = gelu_tanh(numpy_linear(mlp.linear1, x))
    expected = numpy_linear(mlp.linear2, h * numpy_linear(mlp.glu_linear, h))
    np.testing.assert_allclose(
        mlp(torch.from_numpy(x), 0.0).detach().numpy(), expected, rtol=1e-4, atol=1e-5
    )


def test_map_head_is_a_learned_probe_attending_over_the_tokens():
    torch.manual_seed(0)
    head = MAPHead(width=8, mlp_dim=16, num_heads=2).eval()
    x = np.random.default_rng(1).standard_normal((3, 5, 8)).astype(np.float32)
    mha = head.mha
    q = numpy_linear(mha.q_proj, head.probe.detach().numpy())  # (1, 1, 8)
    kv = numpy_linear(mha.kv_proj, x)
    k, v = kv[..., :8], kv[..., 8:]
    out = np.zeros((3, 1, 8), np.float32)
    for h in range(2):
        s = slice(4 * h, 4 * h + 4)
        logits = np.einsum("qd,nkd->nqk", q[0][:, s], k[..., s]) / math.sqrt(4)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[..., s] = p @ v[..., s]
    y = numpy_linear(mha.out_proj, out)
    ln = head.layer_norm
    normed = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-6)
    normed = normed * ln.weight.detach().numpy() + ln.bias.detach().numpy()
    mlp = head.mlp
    expected = (y + numpy_linear(mlp.linear2, gelu_tanh(numpy_linear(mlp.linear1, normed))))[:, 0]
    np.testing.assert_allclose(
        head(torch.from_numpy(x), 0.0).detach().numpy(), expected, rtol=1e-4, atol=1e-5
    )


def test_post_ln_blocks_end_normalised_and_drop_the_final_norm():
    torch.manual_seed(0)
    small = ViT(
        num_classes=5,
        patch_size=8,
        width=16,
        depth=2,
        mlp_dim=32,
        num_heads=2,
        use_post_layer_norm=True,
    )
    assert small.encoder.encoder_norm is None
    tokens = small.encoder(torch.randn(2, 4, 16), 0.0)
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens.var(-1, unbiased=False), torch.ones(2, 4), atol=1e-3, rtol=0)


def test_dropout_is_passed_at_call_time_and_off_in_eval():
    torch.manual_seed(0)
    small = ViT(num_classes=5, patch_size=8, width=16, depth=1, mlp_dim=32, num_heads=2)
    torch.nn.init.normal_(small.head.weight)
    x = torch.randn(2, 3, 16, 16)
    small.train()
    torch.testing.assert_close(small(x, dropout_rate=0.0), small(x, dropout_rate=0.0))
    assert not torch.allclose(small(x, dropout_rate=0.5), small(x, dropout_rate=0.0))
    small.eval()
    torch.testing.assert_close(small(x, dropout_rate=0.5), small(x, dropout_rate=0.0))


# ---- mixup ---------------------------------------------------------------------------------------
def test_mixup_is_the_convex_combination_with_the_batch_rolled_by_one():
    rng = np.random.default_rng(0)
    batch = {
        "inputs": rng.standard_normal((4, 3, 2, 2)).astype(np.float32),
        "targets": np.array([0, 1, 2, 999]),
    }
    mixed = vit.mixup(batch, np.random.default_rng(1))
    w = np.random.default_rng(1).beta(0.2, 0.2)
    rolled = batch["inputs"][[3, 0, 1, 2]]
    np.testing.assert_allclose(
        mixed["inputs"], w * batch["inputs"] + (1 - w) * rolled, rtol=1e-5, atol=1e-6
    )
    assert mixed["targets"].shape == (4, 1000) and mixed["targets"].dtype == np.float32
    np.testing.assert_allclose(mixed["targets"].sum(axis=1), 1.0, rtol=1e-6)
    assert mixed["targets"][1, 1] == pytest.approx(w, rel=1e-5)
    assert mixed["targets"][1, 0] == pytest.approx(1 - w, rel=1e-5)
    assert mixed["targets"][0, 999] == pytest.approx(1 - w, rel=1e-5)


def test_mixup_weights_follow_beta_0_2():
    batch = {"inputs": np.zeros((2, 1), np.float32), "targets": np.array([0, 1])}
    weights = np.array(
        [vit.mixup(batch, np.random.default_rng(s))["targets"][0, 0] for s in range(2000)]
    )
    # Beta(0.2, 0.2): mean 1/2, variance a^2 / ((2a)^2 (2a + 1)) = 1 / (4 * 1.4).
    assert weights.mean() == pytest.approx(0.5, abs=0.03)
    assert weights.var() == pytest.approx(1 / 5.6, rel=0.08)


# ---- RandAugment ----------------------------------------------------------------------------------
def random_image(h=32, w=40, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_randaugment_is_seeded_and_keeps_the_image_size():
    img = random_image()
    a = np.asarray(ra.randaugment(img, np.random.default_rng(3)))
    b = np.asarray(ra.randaugment(img, np.random.default_rng(3)))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (32, 40, 3) and a.dtype == np.uint8


def test_randaugment_draws_two_of_the_sixteen_reference_ops_uniformly():
    assert len(ra.OPS) == 16 and ra.NUM_OPS == 2
    assert ra.OPS["TranslateX"] == (100.0, True) and ra.OPS["Brightness"] == (1.9, False)
    rng = np.random.default_rng(0)
    drawn = [op for _ in range(800) for op in ra.sample_ops(rng)]
    assert len(drawn) == 1600
    counts = {name: sum(n == name for n, _ in drawn) for name in ra.OPS}
    assert all(abs(c - 100) < 4 * math.sqrt(100) for c in counts.values())  # 1600 / 16 each
    rotations = [m for n, m in drawn if n == "Rotate"]
    assert set(rotations) == {30.0, -30.0}
    assert all(m == 1.9 for n, m in drawn if n == "Contrast")


def test_translate_moves_the_content_and_fills_with_grey():
    img = random_image(20, 120)
    out = np.asarray(ra.apply_op(img, "TranslateX", 100.0, np.random.default_rng(0)))
    np.testing.assert_array_equal(out[:, 100:], np.asarray(img)[:, :20])
    assert (out[:, :100] == 128).all()


def test_shear_x_samples_the_input_at_x_plus_m_y():
    img = random_image(10, 10)
    out = np.asarray(ra.apply_op(img, "ShearX", 0.3, np.random.default_rng(0)))
    src = np.asarray(img)
    for y in range(10):
        for x in range(10):
            # Nearest neighbour of the pixel centre (x + 0.5) + 0.3 (y + 0.5).
            sx = math.floor(x + 0.5 + 0.3 * (y + 0.5))
            expected = src[y, sx] if sx < 10 else np.full(3, 128)
            np.testing.assert_array_equal(out[y, x], expected)


def test_pixel_ops_match_their_formulas():
    img = random_image()
    x = np.asarray(img).astype(np.int64)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(np.asarray(ra.apply_op(img, "Invert", 0.0, rng)), 255 - x)
    np.testing.assert_array_equal(np.asarray(ra.apply_op(img, "Posterize", 4.0, rng)), x & 0xF0)
    # The reference's threshold of 256 keeps every pixel.
    np.testing.assert_array_equal(np.asarray(ra.apply_op(img, "Solarize", 256.0, rng)), x)
    added = np.where(x < 128, np.minimum(x + 110, 255), x)
    np.testing.assert_array_equal(np.asarray(ra.apply_op(img, "SolarizeAdd", 110.0, rng)), added)


def test_cutout_paints_a_grey_square_of_side_at_most_81():
    img = Image.new("RGB", (200, 200), (0, 0, 0))
    for seed in range(20):
        out = np.asarray(ra.apply_op(img, "Cutout", 40.0, np.random.default_rng(seed)))
        ys, xs = np.nonzero((out == 128).all(-1))
        assert len(ys) > 0 and (out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] == 128).all()
        assert ys.max() - ys.min() + 1 <= 81 and xs.max() - xs.min() + 1 <= 81


def test_vit_training_batches_are_mixed_up_with_soft_labels(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("n01", "n02"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(2):
            out = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(
                out, format="JPEG"
            )
            (tmp_path / "train" / c / f"{i}.JPEG").write_bytes(out.getvalue())
    workload = registry.load("imagenet_vit", data="real", data_dir=str(tmp_path))
    stream = workload.train_batches(4, seed=0)
    batch = next(stream)
    assert batch["inputs"].shape == (4, 3, 224, 224) and batch["targets"].shape == (4, 1000)
    np.testing.assert_allclose(batch["targets"].sum(1), 1.0, rtol=1e-6)
    assert set(np.nonzero(batch["targets"].sum(0))[0].tolist()) <= {0, 1}
    state = stream.state_dict()
    expected = next(stream)
    restored = workload.train_batches(4, seed=0)
    restored.load_state_dict(state)
    np.testing.assert_array_equal(next(restored)["targets"], expected["targets"])


# ---- model on synthetic data ---------------------------------------------------------------------------
TINY = {"train": 4, "eval_train": 2, "validation": 2, "test": 2}


@pytest.mark.slow
def test_forward_backward_with_soft_labels_and_eval():
    workload = registry.load("imagenet_vit", data="synthetic")
    workload.synthetic_sizes = TINY
    model, _ = workload.init_model_fn(prng_key(0))
    batch = next(workload.build_input_queue(prng_key(1), "train", None, 2))
    assert batch["targets"].shape == (2, 1000)  # mixed up, as real training batches
    logits, _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.TRAIN, None, True, 0.1)
    assert logits.shape == (2, 1000)
    loss = workload.loss_fn(batch["targets"], logits, label_smoothing=0.1)
    # Zero-initialised head: uniform logits, so the loss is log(1000) whatever the labels.
    assert float(loss["summed"] / loss["n_valid_examples"]) == pytest.approx(
        math.log(1000), rel=1e-5
    )
    (loss["summed"] / loss["n_valid_examples"]).backward()
    assert model.head.weight.grad.abs().sum() > 0
    metrics = workload.eval_model(8, model, None, None, None, None, 0)
    assert metrics["validation/num_examples"] == 2 and 0.0 <= metrics["validation/accuracy"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["imagenet_vit_glu", "imagenet_vit_post_ln", "imagenet_vit_map"])
def test_variant_forward_pass(name):
    workload = registry.load(name, data="synthetic")
    workload.synthetic_sizes = TINY
    model, _ = workload.init_model_fn(prng_key(0))
    torch.nn.init.normal_(model.head.weight)
    batch = workload.device_batch(
        {k: v[:2] for k, v in workload.split_arrays("validation").items()}
    )
    logits, _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.EVAL, None, False)
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()
    assert not torch.allclose(logits[0], logits[1])


def test_output_params_are_the_head():
    workload = registry.load("imagenet_vit", data="synthetic")
    assert workload.is_output_params("head.weight") and not workload.is_output_params(
        "pre_logits.weight"
    )
