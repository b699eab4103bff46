"""CIFAR-10 / ResNet-18: parameter count, the pickle pipeline with augmentation, a forward pass."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from algoperf import spec
from algoperf.random_utils import prng_key
from workloads import registry
from workloads.cifar import workload as cifar
from workloads.cifar.torch_workload import ResNet18


def write_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    with open(path, "wb") as f:
        pickle.dump({b"data": images.reshape(n, -1), b"labels": labels, b"batch_label": b"x"}, f)
    return images, labels


@pytest.fixture
def cifar_dir(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train = [write_batch(folder / f"data_batch_{i}", 10, i) for i in range(1, 6)]
    test = write_batch(folder / "test_batch", 8, 99)
    return tmp_path, train, test


def test_parameter_count_matches_the_reference():
    workload = registry.load("cifar", data="synthetic")
    model, _ = workload.init_model_fn(prng_key(0))
    assert sum(p.numel() for p in model.parameters()) == 11_173_962


def test_facts_are_the_references():
    info = registry.get("cifar")
    assert info.development and info.target_metric_name == "accuracy" and info.higher_is_better
    assert (info.validation_target, info.test_target) == (0.85, 0.85)
    assert (info.max_allowed_runtime_sec, info.step_hint, info.eval_period_time_sec) == (
        3600,
        4883,
        600,
    )
    assert (info.num_train_examples, info.num_validation_examples, info.num_test_examples) == (
        45_000,
        5_000,
        10_000,
    )
    # eval-train: 5,000 rounded up to whole eval batches of 1,024.
    assert info.eval_batch_size == 1024 and info.num_eval_train_examples == 5 * 1024
    assert info.loss_type == spec.LossType.SOFTMAX_CROSS_ENTROPY


def test_resnet18_is_importable_and_has_the_reference_tree():
    model = ResNet18(num_classes=10)
    names = [n for n, _ in model.named_parameters()]
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    assert names[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"] and names[-2:] == [
        "fc.weight",
        "fc.bias",
    ]
    assert [n for n in names if "downsample" in n and n.endswith("conv.weight")] == [
        f"layer{i}.0.downsample.conv.weight" for i in (2, 3, 4)
    ]
    assert model.conv1.weight.shape == (64, 3, 3, 3)  # the CIFAR stem: 3 x 3, stride 1


def test_initialisation_is_the_references():
    torch.manual_seed(0)
    model = ResNet18(num_classes=10)
    for i in range(1, 5):
        for block in getattr(model, f"layer{i}"):
            assert torch.all(block.bn2.weight == 0) and torch.all(block.bn1.weight == 1)
    assert torch.all(model.fc.bias == 0)
    assert model.fc.weight.std().item() == pytest.approx(0.01, rel=0.05)
    # LeCun normal: N(0, s^2) truncated at +-2 s, s = sqrt(1 / fan_in) / 0.8796, whose own std is
    # sqrt(1 / fan_in); here a 3 x 3 conv of 256 input channels.
    w = model.layer4[0].conv1.weight
    s = math.sqrt(1 / (256 * 9)) / 0.87962566103423978
    assert w.abs().max().item() <= 2 * s
    assert w.std().item() == pytest.approx(math.sqrt(1 / (256 * 9)), rel=0.02)


def test_splits_and_normalisation(cifar_dir):
    root, train, test = cifar_dir
    workload = registry.load("cifar", data="real", data_dir=str(root))
    all_images = np.concatenate([t[0] for t in train])  # (50, 3, 32, 32)
    val = workload.split_arrays("validation")
    assert len(workload.split_arrays("train")["inputs"]) == 45 and len(val["inputs"]) == 5
    expected = (
        all_images[45:].astype(np.float32) / 255.0 - cifar.MEAN[:, None, None]
    ) / cifar.STDDEV[:, None, None]
    np.testing.assert_allclose(val["inputs"], expected, rtol=1e-5)
    np.testing.assert_array_equal(workload.split_arrays("test")["targets"], test[1])
    assert val["inputs"].dtype == np.float32 and val["targets"].dtype == np.int64
    assert val["inputs"].shape == (5, 3, 32, 32)


def test_eval_train_is_a_seeded_subset_of_train(cifar_dir):
    root, _, _ = cifar_dir
    workload = registry.load("cifar", data="real", data_dir=str(root))
    train, eval_train = workload.split_arrays("train"), workload.split_arrays("eval_train")
    assert len(eval_train["inputs"]) == 45  # all 45 fixture images (fewer than 5,120), reordered
    rows = {x.tobytes() for x in train["inputs"]}
    assert all(x.tobytes() in rows for x in eval_train["inputs"])
    assert not np.array_equal(eval_train["inputs"], train["inputs"])
    again = registry.load("cifar", data="real", data_dir=str(root)).split_arrays("eval_train")
    np.testing.assert_array_equal(again["targets"], eval_train["targets"])


def test_augmentation_is_a_padded_crop_and_a_flip():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (64, 32, 32, 3), dtype=np.uint8)
    out = cifar.augment(images, np.random.default_rng(1))
    assert out.shape == images.shape and out.dtype == np.uint8
    flips, shifts = 0, set()
    for image, result in zip(images, out):
        padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
        found = [
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if np.array_equal(
                result,
                padded[dy : dy + 32, dx : dx + 32][:, ::-1]
                if flip
                else padded[dy : dy + 32, dx : dx + 32],
            )
        ]
        assert len(found) == 1  # exactly one crop position and flip gives it
        flips += found[0][2]
        shifts.add(found[0][:2])
    assert 16 < flips < 48 and len(shifts) > 20  # both flips occur, crops vary


def test_train_stream_is_deterministic_and_restores_its_position(cifar_dir):
    root, _, _ = cifar_dir
    workload = registry.load("cifar", data="real", data_dir=str(root))
    a, b = workload.train_batches(8, seed=1), workload.train_batches(8, seed=1)
    for _ in range(3):
        np.testing.assert_array_equal(next(a)["inputs"], next(b)["inputs"])
    state = a.state_dict()
    expected = [next(a)["inputs"] for _ in range(7)]
    c = workload.train_batches(8, seed=1)
    c.load_state_dict(state)
    for e in expected:
        np.testing.assert_array_equal(next(c)["inputs"], e)


@pytest.mark.slow
def test_forward_backward_and_eval_on_a_synthetic_batch():
    workload = registry.load("cifar", data="synthetic")
    workload.synthetic_sizes = {"train": 16, "eval_train": 8, "validation": 8, "test": 8}
    model, _ = workload.init_model_fn(prng_key(0))
    batch = next(workload.build_input_queue(prng_key(1), "train", None, 4))
    logits, _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.TRAIN, None, True)
    assert logits.shape == (4, 10)
    loss = workload.loss_fn(batch["targets"], logits)
    (loss["summed"] / loss["n_valid_examples"]).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # Eval in padded batches of 3 (8 = 3 + 3 + 2) equals the plain mean over the split.
    metrics = workload.eval_model(3, model, None, None, None, None, 0)
    val = workload.split_arrays("validation")
    model.eval()
    with torch.no_grad():
        direct = model(torch.from_numpy(val["inputs"]))
    targets = torch.from_numpy(val["targets"])
    accuracy = (direct.argmax(1) == targets).double().mean().item()
    mean_loss = torch.nn.functional.cross_entropy(direct, targets).item()
    assert metrics["validation/accuracy"] == pytest.approx(accuracy)
    assert metrics["validation/loss"] == pytest.approx(mean_loss, rel=1e-5)
    assert metrics["test/num_examples"] == 8
