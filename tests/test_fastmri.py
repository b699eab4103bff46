"""fastMRI / U-Net: parameter counts, model, L1 loss, SSIM against scikit-image, the HDF5 pipeline."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity as skimage_ssim

from algoperf import spec
from algoperf.random_utils import prng_key
from workloads import registry
from workloads.fastmri import workload as fastmri
from workloads.fastmri.ssim import ssim, structural_similarity
from workloads.fastmri.torch_workload import UNet

# WORKLOADS.md, "Parameter counts of the reference models".
EXPECTED = {
    "fastmri": 7_756_097,
    "fastmri_model_size": 7_692_929,
    "fastmri_tanh": 7_756_097,
    "fastmri_layernorm": 7_761_985,
}


# ---- metadata and model ------------------------------------------------------------------------


def test_the_base_and_its_three_variants_are_registered_with_their_targets():
    infos = {name: registry.get(name) for name in EXPECTED}
    base = infos["fastmri"]
    assert (base.target_metric_name, base.higher_is_better, base.loss_type) == (
        "ssim",
        True,
        spec.LossType.MEAN_ABSOLUTE_ERROR,
    )
    splits = (base.num_train_examples, base.num_eval_train_examples, base.num_validation_examples)
    assert splits + (base.num_test_examples,) == (34_742, 3_584, 3_554, 3_581)
    assert (
        base.max_allowed_runtime_sec,
        base.step_hint,
        base.eval_period_time_sec,
        base.eval_batch_size,
    ) == (4430, 18_094, 80, 256)
    assert base.default_dropout == 0.0
    targets = {name: (i.validation_target, i.test_target) for name, i in infos.items()}
    assert targets == {
        "fastmri": (0.723653, 0.740633),
        "fastmri_model_size": (0.723559, 0.740726),
        "fastmri_tanh": (0.717840, 0.734505),
        "fastmri_layernorm": (0.723284, 0.739996),
    }
    for name, info in infos.items():
        assert info.n_params["pytorch"] == EXPECTED[name]
        if name != "fastmri":
            assert info.base == "fastmri" and info.step_hint == base.step_hint


@pytest.fixture(scope="module")
def models():
    """Each variant's model on the meta device: shapes and structure without the cost of an init."""
    with torch.device("meta"):
        return {name: registry.load(name, data="synthetic").build_model() for name in EXPECTED}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_count_matches_the_reference(models, name):
    assert sum(p.numel() for p in models[name].parameters()) == EXPECTED[name]


def test_variants_change_what_they_say(models):
    def kinds(name):
        return {type(m).__name__ for m in models[name].modules()}

    assert "LeakyReLU" in kinds("fastmri") and "Tanh" not in kinds("fastmri")
    assert "Tanh" in kinds("fastmri_tanh") and "LeakyReLU" not in kinds("fastmri_tanh")
    assert "GroupNorm" in kinds("fastmri_layernorm") and "GroupNorm" not in kinds("fastmri")
    small = models["fastmri_model_size"]
    assert (
        len(small.down_sample_layers) == 3
        and small.down_sample_layers[0].conv_layers[0].out_channels == 64
    )


@pytest.mark.slow
def test_convolutions_get_the_truncated_lecun_normal_init():
    torch.manual_seed(0)
    model = UNet()
    w = model.conv.conv_layers[0].weight  # 256 -> 512 channels, 3 x 3: fan_in 2304, 1.2M weights
    std = (1 / 2304) ** 0.5
    assert w.abs().max().item() <= 2 * std / 0.87962566103423978 + 1e-7
    assert w.std().item() == pytest.approx(std, rel=0.01)
    # A transposed convolution's fan_in is torch's: weight dim 1 (out channels) x kernel area.
    t = model.up_transpose_conv[0].layers[0].weight  # 512 -> 256, 2 x 2: fan_in 256 * 4
    assert t.std().item() == pytest.approx((1 / 1024) ** 0.5, rel=0.01)
    assert torch.all(model.up_conv[3][1].bias == 0)


def test_output_params_are_the_final_convolution(models):
    for name, last in (("fastmri", 3), ("fastmri_model_size", 2)):
        workload = registry.load(name, data="synthetic")
        outputs = [n for n, _ in models[name].named_parameters() if workload.is_output_params(n)]
        assert outputs == [f"up_conv.{last}.1.weight", f"up_conv.{last}.1.bias"]


def test_dropout_rate_is_taken_at_call_time():
    torch.manual_seed(0)
    model = UNet(num_channels=4, num_pool_layers=2).train()
    x = torch.randn(2, 1, 16, 16)
    torch.manual_seed(1)
    a = model(x, dropout_rate=0.0)
    torch.manual_seed(1)
    b = model(x, dropout_rate=0.0)
    torch.manual_seed(1)
    c = model(x, dropout_rate=0.5)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.equal(model.eval()(x, dropout_rate=0.5), model(x, dropout_rate=0.0))


def test_odd_sizes_are_padded_back_to_the_input_size():
    assert UNet(num_channels=2, num_pool_layers=2)(torch.randn(1, 1, 13, 11)).shape == (
        1,
        1,
        13,
        11,
    )


@pytest.mark.slow
def test_forward_backward_and_eval_on_a_synthetic_batch():
    workload = registry.load("fastmri", data="synthetic")
    workload.synthetic_sizes = {"train": 2, "eval_train": 1, "validation": 2, "test": 1}
    model, _ = workload.init_model_fn(prng_key(0))
    batch = next(workload.build_input_queue(prng_key(1), "train", None, 1))
    assert batch["inputs"].shape == (1, 320, 320) and batch["targets"].shape == (1, 320, 320)
    out, _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.TRAIN, None, True, 0.1)
    assert out.shape == (1, 320, 320)
    loss = workload.loss_fn(batch["targets"], out)
    (loss["summed"] / loss["n_valid_examples"]).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    metrics = workload.eval_model(2, model, None, None, None, None, 0)
    assert set(metrics) >= {"train/ssim", "train/loss", "validation/ssim", "test/ssim", "test/loss"}
    assert -1.0 <= metrics["validation/ssim"] <= 1.0 and metrics["validation/num_examples"] == 2


# ---- loss and SSIM -----------------------------------------------------------------------------


def test_l1_loss_is_the_masked_mean_absolute_error_per_example():
    workload = registry.load("fastmri", data="synthetic")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 8, 8)), rng.standard_normal((3, 8, 8))
    out = workload.loss_fn(
        torch.from_numpy(a), torch.from_numpy(b), torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    )
    per = np.abs(b - a).reshape(3, -1).mean(1)
    np.testing.assert_allclose(out["per_example"].numpy(), per * [1, 1, 0], rtol=1e-12)
    assert out["summed"].item() == pytest.approx(per[:2].sum(), rel=1e-12)
    assert out["n_valid_examples"].item() == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_equals_scikit_image(seed):
    # The reference's SSIM is skimage's with its defaults: win_size=7, gaussian_weights=False
    # (uniform window), use_sample_covariance=True, K1=0.01, K2=0.03, uniform_filter's mirror
    # padding, and the mean over the image cropped by (win_size - 1) // 2; data_range is explicit.
    rng = np.random.default_rng(seed)
    x = rng.random((2, 40, 48))
    y = x + 0.3 * rng.standard_normal((2, 40, 48))
    data_range = np.array([1.5, 3.0])
    ours = structural_similarity(x, y, data_range)
    expected = [
        skimage_ssim(
            x[i],
            y[i],
            data_range=data_range[i],
            win_size=7,
            gaussian_weights=False,
            use_sample_covariance=True,
            K1=0.01,
            K2=0.03,
        )
        for i in range(2)
    ]
    np.testing.assert_allclose(ours, expected, rtol=1e-10)


def test_workload_ssim_denormalises_and_uses_the_volume_max():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((2, 32, 32)), rng.standard_normal((2, 32, 32))
    mean, std, vmax = np.array([5.0, 0.5]), np.array([2.0, 0.1]), np.array([12.0, 0.0])
    got = ssim(x, y, mean, std, vmax)
    # A padded example has volume_max 0: the reference scores it with data range 1.
    expected = [
        skimage_ssim(x[i] * std[i] + mean[i], y[i] * std[i] + mean[i], data_range=[12.0, 1.0][i])
        for i in range(2)
    ]
    np.testing.assert_allclose(got, np.clip(expected, -1, 1), rtol=1e-10)


def test_ssim_of_an_image_with_itself_is_one():
    x = np.random.default_rng(0).random((1, 20, 20))
    assert structural_similarity(x, x, np.array([1.0]))[0] == pytest.approx(1.0)


# ---- the HDF5 pipeline -------------------------------------------------------------------------

H, W, CROP = 32, 26, 16  # k-space 32 x 26 (the real 640 x W), targets 16 x 16 (the real 320 x 320)


def write_volume(path, slices, seed):
    """A volume in the fastMRI single-coil layout: complex64 kspace, float32 target, attrs."""
    rng = np.random.default_rng(seed)
    kspace = (
        rng.standard_normal((slices, H, W)) + 1j * rng.standard_normal((slices, H, W))
    ).astype(np.complex64)
    target = rng.random((slices, CROP, CROP)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace)
        f.create_dataset("reconstruction_esc", data=target)
        f.attrs["max"] = float(target.max())
        f.attrs["norm"] = float(np.linalg.norm(target))
        f.attrs["acquisition"] = "CORPD_FBK"
    return kspace, target


@pytest.fixture
def fastmri_dir(tmp_path):
    (tmp_path / fastmri.TRAIN_DIR).mkdir()
    (tmp_path / fastmri.VAL_DIR).mkdir()
    train = [write_volume(tmp_path / fastmri.TRAIN_DIR / f"file{i}.h5", 3, i) for i in range(2)]
    # 102 one-slice validation volumes: the first 100 by name are validation, the last 2 test.
    val = [
        write_volume(tmp_path / fastmri.VAL_DIR / f"file_val{i:03d}.h5", 1, 10 + i)
        for i in range(102)
    ]
    return tmp_path, train, val


def numpy_example(kspace, target, mask):
    """Plain numpy: masked k-space -> centred orthonormal iFFT -> crop -> |.| -> normalise, clip."""
    image = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace * mask, axes=(0, 1))), axes=(0, 1))
    image = image * np.sqrt(kspace.shape[0] * kspace.shape[1])
    top, left = (H - CROP) // 2, (W - CROP) // 2
    magnitude = np.abs(image[top : top + CROP, left : left + CROP])
    mean, std = magnitude.mean(), np.sqrt(((magnitude - magnitude.mean()) ** 2).mean())
    return (
        np.clip((magnitude - mean) / std, -6, 6),
        np.clip((target - mean) / std, -6, 6),
        mean,
        std,
    )


def test_undersampling_mask_keeps_the_centre_and_samples_a_quarter():
    num_cols = 368  # a real knee width: 29 central columns (int(368 * 0.08))
    masks = np.stack(
        [fastmri.undersampling_mask(num_cols, np.random.default_rng(s)) for s in range(200)]
    )
    start = (num_cols - 29 + 1) // 2
    assert np.all(masks[:, start : start + 29] == 1)
    assert set(np.unique(masks)) == {0.0, 1.0}
    assert masks.mean() == pytest.approx(1 / 4, abs=0.005)  # 4x acceleration on average


def test_validation_batches_match_the_numpy_preprocessing(fastmri_dir):
    root, _, val = fastmri_dir
    workload = registry.load("fastmri", data="real", data_dir=str(root))
    batches = list(workload.eval_split_batches("validation", 4, 3))
    assert [b["inputs"].shape for b in batches] == [(3, CROP, CROP)] * 2
    batch = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    assert {k: v.dtype for k, v in batch.items()} == {
        k: np.dtype(np.float32)
        for k in ("inputs", "targets", "mean", "std", "volume_max", "weights")
    }
    assert batch["weights"].tolist() == [1, 1, 1, 1, 0, 0]  # 4 examples asked for, then padding
    mask = fastmri.undersampling_mask(W, np.random.default_rng(fastmri.EVAL_SEED))
    for j in range(4):
        kspace, target = val[j]
        inputs, targets, mean, std = numpy_example(kspace[0], target[0], mask)
        np.testing.assert_allclose(batch["inputs"][j], inputs, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(batch["targets"][j], targets, rtol=1e-4, atol=1e-4)
        assert batch["mean"][j] == pytest.approx(mean, rel=1e-5) and batch["std"][
            j
        ] == pytest.approx(std, rel=1e-5)
        assert batch["volume_max"][j] == pytest.approx(target.max())
    assert np.all(batch["inputs"][4:] == 0) and np.all(batch["volume_max"][4:] == 0)


def test_test_split_is_the_validation_files_after_the_first_100(fastmri_dir):
    root, _, val = fastmri_dir
    workload = registry.load("fastmri", data="real", data_dir=str(root))
    batch = next(workload.eval_split_batches("test", 10, 4))
    assert batch["weights"].tolist() == [1, 1]  # a split smaller than a batch: no padding
    assert batch["volume_max"][:2].tolist() == pytest.approx([val[100][1].max(), val[101][1].max()])


def test_eval_train_is_a_fixed_subset_of_the_training_slices(fastmri_dir):
    root, train, _ = fastmri_dir
    originals = [t for _, target in train for t in target]
    workload = registry.load("fastmri", data="real", data_dir=str(root))
    first = list(workload.eval_split_batches("eval_train", 4, 3))
    again = list(workload.eval_split_batches("eval_train", 4, 3))
    assert [b["weights"].tolist() for b in first] == [[1, 1, 1], [1, 0, 0]]
    ids = _slice_ids(first[0], originals) + _slice_ids(first[1], originals)[:1]
    assert len(set(ids)) == 4  # four distinct training slices
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_train_batches_are_deterministic_under_a_seed(fastmri_dir):
    root, _, _ = fastmri_dir
    workload = registry.load("fastmri", data="real", data_dir=str(root))
    a, b, c = (workload.train_batches(2, seed=s) for s in (4, 4, 5))
    first_a = [next(a)["inputs"] for _ in range(4)]
    first_b = [next(b)["inputs"] for _ in range(4)]
    first_c = [next(c)["inputs"] for _ in range(4)]
    for x, y in zip(first_a, first_b):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(first_a, first_c))


def _slice_ids(batch, originals):
    """Which original slice each example is: its de-normalised target matched to the originals."""
    restored = batch["targets"] * batch["std"][:, None, None] + batch["mean"][:, None, None]
    return [int(np.argmin([np.abs(r - o).max() for o in originals])) for r in restored]


def test_each_epoch_covers_every_slice_once_and_a_slice_keeps_its_mask(fastmri_dir):
    root, train, _ = fastmri_dir
    originals = [t for _, target in train for t in target]  # 6 slices
    workload = registry.load("fastmri", data="real", data_dir=str(root))
    stream = workload.train_batches(3, seed=0)
    epochs = []
    for _ in range(2):
        batches = [next(stream) for _ in range(2)]
        ids = sum((_slice_ids(b, originals) for b in batches), [])
        inputs = np.concatenate([b["inputs"] for b in batches])
        epochs.append(dict(zip(ids, inputs)))
        assert sorted(ids) == list(range(6))
    # Reshuffled, but every slice's undersampling mask is the same in both epochs (reference).
    for i in range(6):
        np.testing.assert_array_equal(epochs[0][i], epochs[1][i])


def test_train_stream_restores_its_position(fastmri_dir):
    root, _, _ = fastmri_dir
    workload = registry.load("fastmri", data="real", data_dir=str(root))
    a = workload.train_batches(2, seed=4)
    for _ in range(2):
        next(a)
    state = a.state_dict()
    expected = [next(a) for _ in range(4)]  # crosses an epoch boundary (6 slices, batch 2)
    b = workload.train_batches(2, seed=4)
    b.load_state_dict(state)
    for e in expected:
        got = next(b)
        for key in e:
            np.testing.assert_array_equal(got[key], e[key])


def test_missing_data_dir_names_the_expected_folders(tmp_path):
    workload = registry.load("fastmri", data="real", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=fastmri.TRAIN_DIR):
        workload.train_batches(2, seed=0)
