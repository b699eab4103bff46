"""ImageNet input pipeline: ImageFolder and TFDS ArrayRecord sources, the reference's crops, streams."""

from __future__ import annotations

import io
import math
import pickle

import numpy as np
import pytest
from PIL import Image

from workloads import registry
from workloads.imagenet_resnet import input_pipeline as pipeline
from workloads.imagenet_resnet import records

MEAN = np.array([0.485, 0.456, 0.406]) * 255
STD = np.array([0.229, 0.224, 0.225]) * 255


def jpeg(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=95)
    return out.getvalue()


def write_tree(root, classes, per_class, rng, sizes=((48, 64), (64, 48), (40, 40))):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            h, w = sizes[i % len(sizes)]
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            (root / c / f"img{i}.JPEG").write_bytes(jpeg(pixels))


@pytest.fixture
def imagenet_dir(tmp_path):
    rng = np.random.default_rng(0)
    write_tree(tmp_path / "train", ["n02", "n01", "n03"], 2, rng)  # 6 images, classes sorted
    write_tree(tmp_path / "val", ["n01", "n02", "n03"], 1, rng)
    write_tree(tmp_path / "imagenet_v2", ["0", "2", "10"], 1, rng)  # numeric class folders
    return tmp_path


def load(data_dir, name="imagenet_resnet", **options):
    return registry.load(name, data="real", data_dir=str(data_dir), **options)


# ---- sources -------------------------------------------------------------------------------------
def test_imagefolder_classes_are_sorted_wnids_and_numeric_folders_are_their_numbers(imagenet_dir):
    train = pipeline.ImageFolderImages(imagenet_dir / "train")
    assert train.classes == ["n01", "n02", "n03"]
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    v2 = pipeline.ImageFolderImages(imagenet_dir / "imagenet_v2")
    assert v2.classes == ["0", "2", "10"] and v2.labels.tolist() == [0, 2, 10]


def test_a_missing_split_names_the_folder_and_the_expected_layouts(tmp_path):
    workload = load(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"train/<wnid>/\*\.JPEG.*array_record"):
        workload.source("train")
    with pytest.raises(FileNotFoundError, match="imagenet_v2_data_dir"):
        workload.source("test")


def test_tf_example_encoding_is_the_protobuf_wire_format():
    # Example{features{feature{key: "label", value{int64_list{value: [7]}}}}}, packed by hand.
    int64_list = b"\x0a\x01\x07"
    feature = b"\x1a\x03" + int64_list
    entry = b"\x0a\x05label" + b"\x12\x05" + feature
    features = b"\x0a\x0e" + entry
    assert records.encode_example({"label": 7}) == b"\x0a\x10" + features
    decoded = records.decode_example(
        records.encode_example({"image": b"\xff\xd8", "label": [3, 4]})
    )
    assert decoded == {"image": [b"\xff\xd8"], "label": [3, 4]}


def write_array_record(path, examples):
    from array_record.python.array_record_module import ArrayRecordWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = ArrayRecordWriter(str(path), "group_size:1")
    for data, label in examples:
        writer.write(
            records.encode_example({"image": data, "label": label, "file_name": b"x.JPEG"})
        )
    writer.close()


def test_tfds_array_record_gives_the_batches_of_the_same_images_in_a_folder(imagenet_dir, tmp_path):
    folder = pipeline.ImageFolderImages(imagenet_dir / "val")
    tfds_dir = tmp_path / "tfds"
    version = tfds_dir / "imagenet2012" / "5.1.0"
    examples = [folder[i] for i in range(len(folder))]
    write_array_record(
        version / "imagenet2012-validation.array_record-00000-of-00002", examples[:2]
    )
    write_array_record(
        version / "imagenet2012-validation.array_record-00001-of-00002", examples[2:]
    )
    from_records = next(load(tfds_dir).eval_split_batches("validation", 3, 3))
    from_folder = next(load(imagenet_dir).eval_split_batches("validation", 3, 3))
    for key in ("inputs", "targets", "weights"):
        np.testing.assert_array_equal(from_records[key], from_folder[key])


def test_imagenet_v2_array_record_is_the_test_split(imagenet_dir, tmp_path):
    v2 = pipeline.ImageFolderImages(imagenet_dir / "imagenet_v2")
    shard = "imagenet_v2/matched-frequency/3.0.0/imagenet_v2-test.array_record-00000-of-00001"
    write_array_record(tmp_path / "v2" / shard, [v2[i] for i in range(len(v2))])
    workload = load(imagenet_dir, imagenet_v2_data_dir=str(tmp_path / "v2"))
    assert isinstance(workload.source("test"), records.ArrayRecordImages)
    batches = list(workload.eval_split_batches("test", 3, 2))
    assert [b["targets"].tolist() for b in batches] == [[0, 2], [10, 0]]


# ---- image operations ----------------------------------------------------------------------------
def test_random_resized_crop_boxes_have_the_reference_area_and_aspect_ranges():
    rng = np.random.default_rng(0)
    for _ in range(300):
        left, top, w, h = pipeline.random_resized_crop_box(500, 375, rng)
        assert 0 <= left and left + w <= 500 and 0 <= top and top + h <= 375
        # Rounding the sides to whole pixels moves area and ratio by at most a pixel's worth.
        assert 0.08 * 500 * 375 * 0.97 <= w * h <= 500 * 375
        assert 0.75 * 0.97 <= w / h <= 4 / 3 * 1.03


def test_random_resized_crop_falls_back_to_the_central_crop_of_clamped_aspect():
    # A 1000 x 10 strip admits no crop of aspect <= 4/3 with 8% of the area: the fallback is the
    # central crop of height 10 and width round(10 * 4/3) = 13.
    assert pipeline.random_resized_crop_box(1000, 10, np.random.default_rng(0)) == (493, 0, 13, 10)


def test_eval_resize_keeps_the_aspect_with_the_short_side_256():
    img = Image.new("RGB", (512, 300))
    assert pipeline.resize_short_side(img).size == (int(256 * 512 / 300), 256)
    assert pipeline.resize_short_side(Image.new("RGB", (300, 512))).size == (
        256,
        int(256 * 512 / 300),
    )


def coordinate_image(width: int, height: int) -> Image.Image:
    """Red = x, green = y (mod 256), blue = 0: a pixel tells where it came from."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    pixels = np.stack([x % 256, y % 256, np.zeros_like(x)], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels)


def test_eval_center_crop_takes_the_central_224_square():
    # 256 x 300 (h x w) is already 256 on its short side; the crop starts at x = 38, y = 16.
    out = np.asarray(pipeline.center_crop(pipeline.resize_short_side(coordinate_image(300, 256))))
    assert out.shape == (224, 224, 3)
    np.testing.assert_array_equal(out[0, :, 0], np.arange(38, 262) % 256)
    np.testing.assert_array_equal(out[:, 0, 1], np.arange(16, 240))


def test_imagenet_v2_crop_is_the_central_square_of_224_256_of_the_short_side():
    # Short side 256: a 224 square at top (256 - 224 + 1) // 2 = 16, left (320 - 224 + 1) // 2 = 48.
    out = np.asarray(pipeline.padded_center_crop(coordinate_image(320, 256)))
    assert out.shape == (224, 224, 3)
    np.testing.assert_array_equal(out[0, :, 0], np.arange(48, 272) % 256)
    np.testing.assert_array_equal(out[:, 0, 1], np.arange(16, 240))


def test_normalisation_is_per_channel_mean_and_std_in_pixel_units():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    out = pipeline.normalize(pixels)
    assert out.shape == (2, 3, 4, 5) and out.dtype == np.float32
    expected = ((pixels - MEAN) / STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


# ---- eval batches ----------------------------------------------------------------------------------
def test_validation_batches_are_the_center_crops_normalised_in_order_and_padded(imagenet_dir):
    batches = list(load(imagenet_dir).eval_split_batches("validation", 3, 2))
    assert [b["inputs"].shape for b in batches] == [(2, 3, 224, 224)] * 2
    assert batches[0]["inputs"].dtype == np.float32
    assert np.concatenate([b["targets"] for b in batches]).tolist() == [0, 1, 2, 0]
    assert np.concatenate([b["weights"] for b in batches]).tolist() == [1, 1, 1, 0]
    first = sorted((imagenet_dir / "val" / "n01").iterdir())[0]
    with Image.open(first) as img:
        crop = np.asarray(pipeline.center_crop(pipeline.resize_short_side(img.convert("RGB"))))
    expected = ((crop - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_allclose(batches[0]["inputs"][0], expected, rtol=1e-4, atol=1e-4)
    assert not batches[1]["inputs"][1].any()


def test_eval_train_is_a_fixed_random_subset_of_distinct_training_images(imagenet_dir):
    workload = load(imagenet_dir)
    a = next(workload.eval_split_batches("eval_train", 4, 4))
    b = next(workload.eval_split_batches("eval_train", 4, 4))
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    indices = pipeline.eval_train_indices(6, 4)
    assert len(set(indices.tolist())) == 4 and set(indices.tolist()) <= set(range(6))
    assert a["targets"].tolist() == [[0, 0, 1, 1, 2, 2][i] for i in indices]


def test_the_test_split_is_imagenet_v2_with_its_numeric_labels(imagenet_dir):
    batches = list(load(imagenet_dir).eval_split_batches("test", 10, 2))
    assert [b["targets"].tolist() for b in batches] == [[0, 2], [10, 0]]
    assert [b["weights"].tolist() for b in batches] == [[1, 1], [1, 0]]


# ---- training stream -------------------------------------------------------------------------------
def test_train_batches_have_the_real_shapes_and_normalised_range(imagenet_dir):
    batch = next(load(imagenet_dir).train_batches(4, seed=0))
    assert batch["inputs"].shape == (4, 3, 224, 224) and batch["inputs"].dtype == np.float32
    assert batch["targets"].dtype == np.int64 and batch["targets"].shape == (4,)
    low, high = (0 - MEAN) / STD, (255 - MEAN) / STD
    for c in range(3):
        channel = batch["inputs"][:, c]
        assert low[c] - 1e-5 <= channel.min() and channel.max() <= high[c] + 1e-5


def test_an_epoch_visits_every_training_image_once(imagenet_dir):
    stream = load(imagenet_dir).train_batches(2, seed=3)
    labels = np.concatenate([next(stream)["targets"] for _ in range(3)])
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]


def test_train_stream_is_deterministic_under_a_seed(imagenet_dir):
    workload = load(imagenet_dir)
    a, b, c = (workload.train_batches(2, seed=s) for s in (5, 5, 6))
    for _ in range(2):
        x, y, z = next(a), next(b), next(c)
        np.testing.assert_array_equal(x["inputs"], y["inputs"])
        np.testing.assert_array_equal(x["targets"], y["targets"])
    assert not np.array_equal(x["inputs"], z["inputs"])


def test_a_restored_stream_continues_with_the_same_batches(imagenet_dir):
    workload = load(imagenet_dir)
    stream = workload.train_batches(2, seed=5)
    for _ in range(4):  # past the end of the first epoch
        next(stream)
    state = pickle.loads(pickle.dumps(stream.state_dict()))
    expected = [next(stream) for _ in range(3)]
    restored = workload.train_batches(2, seed=5)
    restored.load_state_dict(state)
    for e in expected:
        got = next(restored)
        np.testing.assert_array_equal(got["inputs"], e["inputs"])
        np.testing.assert_array_equal(got["targets"], e["targets"])


def test_train_crops_are_flipped_about_half_the_time():
    # A left-dark, right-bright image: a flip puts the bright half on the left.
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:, 32:] = 255
    preprocess = pipeline.train_example()
    rng = np.random.default_rng(0)
    flipped = kept = 0
    for _ in range(200):
        img, _ = preprocess((jpeg(pixels), 0), rng)
        left, right = img[:, :8].mean(), img[:, -8:].mean()
        flipped += int(left > right + 50)
        kept += int(right > left + 50)  # crops inside one half tell nothing and are skipped
    trials = flipped + kept
    assert trials > 100
    assert abs(flipped / trials - 0.5) < 4 * math.sqrt(0.25 / trials)


# ---- synthetic data --------------------------------------------------------------------------------
def test_synthetic_splits_are_tiny_real_shaped_and_consistently_labelled():
    workload = registry.load("imagenet_resnet", data="synthetic")
    train, eval_train = workload.split_arrays("train"), workload.split_arrays("eval_train")
    assert train["inputs"].shape == (32, 3, 224, 224) and train["inputs"].dtype == np.float32
    assert (
        workload.num_eval_train_examples == 8
        and len(workload.split_arrays("validation")["inputs"]) == 8
    )
    np.testing.assert_array_equal(eval_train["inputs"], train["inputs"][:8])
    np.testing.assert_array_equal(eval_train["targets"], train["targets"][:8])
    assert train["targets"].min() >= 0 and train["targets"].max() < 1000
