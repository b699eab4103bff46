"""`algoperf datasets prepare|verify` for every dataset, from fixture archives in the real formats
served by a real HTTP server on 127.0.0.1 (licensed ones from a --source folder)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from datasets_server import FileServer

from algoperf import cli
from algoperf.datasets import DatasetUnavailableError, fixtures, recipe
from algoperf.datasets import prepare as prep
from algoperf.datasets.imagenet import read_lines, tfds_label_file
from workloads import registry

from conftest import read_summary, run_cli, trial_path

DATASETS = ("mnist", "cifar", "ogbg", "wmt", "criteo1tb", "librispeech", "imagenet", "fastmri")
LICENSED = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


@dataclass
class Prepared:
    data: Path
    mirror: Path
    licensed: Path
    server: FileServer
    log: list[str] = field(default_factory=list)


def imagenet_fixture(licensed: Path, mirror: Path) -> tuple[list[str], list[str]]:
    """ILSVRC tars in the licensed folder (with their own SHA256SUMS), ImageNet-v2 on the mirror."""
    all_wnids = read_lines(tfds_label_file("labels.txt"))
    val_wnids = read_lines(tfds_label_file("validation_labels.txt"))[:6]
    wnids = sorted(set(all_wnids[:3]) | set(val_wnids))
    fixtures.write_imagenet(licensed, wnids, train_per_class=2, val_labels=val_wnids)
    (mirror / "imagenet").mkdir(parents=True)
    shutil.move(licensed / fixtures.IMAGENET_V2_ARCHIVE, mirror / "imagenet" / fixtures.IMAGENET_V2_ARCHIVE)
    fixtures.write_sha256sums(mirror / "imagenet")
    return wnids, val_wnids


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    mirror, licensed, data = root / "mirror", root / "licensed", root / "data"
    for name in ("mnist", "cifar", "ogbg", "wmt", "criteo1tb", "librispeech"):
        fixtures.write_mirror(name, mirror)
    imagenet_fixture(licensed, mirror)
    fixtures.write_fastmri(licensed)
    fixtures.write_sha256sums(licensed)
    with FileServer(mirror) as server:
        state = Prepared(data, mirror, licensed, server)
        for name in DATASETS:
            prep.prepare(recipe(name), data, mirror=server.url, source=licensed, say=state.log.append)
        yield state


def test_every_dataset_prepares_from_the_local_server_and_verifies(prepared):
    for name in DATASETS:
        manifest = json.loads((prepared.data / name / prep.MANIFEST_FILE).read_text())
        assert manifest["complete"] and manifest["dataset"] == name
        assert prep.verify(name, prepared.data).problems == []
    fetched = sorted(path for path, _ in prepared.server.data_requests())
    served = sorted(
        f"/{p.parent.name}/{p.name}" for p in prepared.mirror.glob("*/*") if p.name not in ("SHA256SUMS", "FIXTURE.json")
    )
    assert fetched == served  # every file once, nothing else


def test_a_second_prepare_does_nothing(prepared):
    before = len(prepared.server.requests)
    prep.prepare(recipe("wmt"), prepared.data, mirror=prepared.server.url, say=prepared.log.append)
    assert prepared.log[-1].startswith("wmt: already prepared")
    assert len(prepared.server.requests) == before


def test_a_rerun_redoes_only_the_missing_unit(prepared):
    out = prepared.data / "criteo1tb"
    (out / "train" / "day_5_00.ids.npy").unlink()
    others = {p: p.stat().st_mtime_ns for p in (out / "train").glob("*.npy") if not p.name.startswith("day_5_")}
    prep.prepare(recipe("criteo1tb"), prepared.data, say=prepared.log.append)
    assert (out / "train" / "day_5_00.ids.npy").exists()
    assert {p: p.stat().st_mtime_ns for p in others} == others  # the other days untouched
    assert prep.verify("criteo1tb", prepared.data).problems == []


def test_verify_reports_a_changed_file(prepared, tmp_path):
    shutil.copytree(prepared.data / "cifar", tmp_path / "cifar")
    path = tmp_path / "cifar" / "test_labels.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert prep.verify("cifar", tmp_path, quick=True).problems == []  # same size
    problems = prep.verify("cifar", tmp_path).problems
    assert len(problems) == 1 and "test_labels.npy" in problems[0] and "SHA-256" in problems[0]


def test_cli_verify_all(prepared, capsys):
    assert cli.main(["datasets", "verify", "all", "--data-dir", str(prepared.data)]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: " in out for name in DATASETS) and "match the manifest" in out


def test_a_licensed_dataset_without_its_files_says_which_and_where(tmp_path):
    with pytest.raises(DatasetUnavailableError) as error:
        prep.prepare(recipe("imagenet_resnet"), tmp_path)
    message = str(error.value)
    assert all(name in message for name in LICENSED) and "--source" in message and "image-net.org" in message


# ---- what each conversion wrote ----------------------------------------------------------------
def test_mnist_files_are_the_served_files(prepared):
    for name in fixtures.MNIST_FILES:
        assert (prepared.data / "mnist" / name).read_bytes() == (prepared.mirror / "mnist" / name).read_bytes()


def test_cifar_arrays_are_the_binary_records_decoded(prepared):
    images = np.load(prepared.data / "cifar" / "train_images.npy")
    labels = np.load(prepared.data / "cifar" / "train_labels.npy")
    expected = [fixtures.cifar_examples(20, i) for i in range(1, 6)]  # write_cifar's batches
    np.testing.assert_array_equal(images, np.concatenate([e[0] for e in expected]))
    np.testing.assert_array_equal(labels, np.concatenate([e[1] for e in expected]))


def test_criteo_shards_hold_the_parsed_days_and_day_23_is_cut_as_the_reference(prepared):
    from workloads.criteo1tb import workload as criteo

    out = prepared.data / "criteo1tb"
    lines = fixtures.criteo_lines(64, 7)  # write_criteo: day d uses seed d
    labels, dense, ids = criteo.parse_columns(lines)
    shard = criteo.shard_files(out / "train" / "day_7_00")
    np.testing.assert_array_equal(np.load(shard["labels"]), labels.astype(np.uint8))
    np.testing.assert_array_equal(np.load(shard["dense"]), dense)
    np.testing.assert_array_equal(np.load(shard["ids"]), ids.astype(np.int32))
    # 95,000,000 of day 23's 178,274,637 lines are the test split: 34 of a 64-line fixture.
    test = np.load(criteo.shard_files(out / "test" / "day_23_00")["labels"])
    validation = np.load(criteo.shard_files(out / "validation" / "day_23_00")["labels"])
    day23 = criteo.parse_columns(fixtures.criteo_lines(64, 23))[0].astype(np.uint8)
    assert len(test) == 34 and len(validation) == 30
    np.testing.assert_array_equal(np.concatenate([test, validation]), day23)


def test_imagenet_records_carry_tfds_labels(prepared):
    import grain

    from workloads.imagenet_resnet.records import array_record_files, decode_example

    classes = {w: i for i, w in enumerate(read_lines(tfds_label_file("labels.txt")))}
    val_wnids = read_lines(tfds_label_file("validation_labels.txt"))[:6]
    files = array_record_files(prepared.data / "imagenet", "imagenet2012", "validation")
    source = grain.sources.ArrayRecordDataSource([str(f) for f in files])
    got = {bytes(r["file_name"][0]).decode(): r["label"][0] for r in map(decode_example, source)}
    assert got == {f"ILSVRC2012_val_{i + 1:08d}.JPEG": classes[w] for i, w in enumerate(val_wnids)}
    with tarfile.open(prepared.licensed / fixtures.IMAGENET_VAL_TAR) as tar:
        first = tar.extractfile("ILSVRC2012_val_00000001.JPEG").read()
    assert any(bytes(decode_example(r)["image"][0]) == first for r in source)


def test_wmt_pairs_are_the_tfds_splits(prepared):
    from workloads.wmt.workload import read_pairs

    train = list(read_pairs(prepared.data / "wmt" / "train.tsv"))
    expected = [p for k in range(4) for p in fixtures.wmt_pairs(40, k)]  # empty sides dropped
    assert sorted(train) == sorted(expected) and train != expected  # a seeded shuffle
    assert list(read_pairs(prepared.data / "wmt" / "validation.tsv")) == fixtures.wmt_pairs(6, 10)
    assert list(read_pairs(prepared.data / "wmt" / "test.tsv")) == fixtures.wmt_pairs(6, 11)


def test_librispeech_utterances_are_the_flac_samples_and_tokens(prepared):
    import soundfile

    from workloads.librispeech.tokenizer import Tokenizer

    out = prepared.data / "librispeech"
    with tarfile.open(prepared.mirror / "librispeech" / "dev-other.tar.gz") as tar:
        names = {Path(m.name).name: m for m in tar if m.isfile()}
        flac = tar.extractfile(names["104-204-0001.flac"]).read()
        transcript = tar.extractfile(names["104-204.trans.txt"]).read().decode().splitlines()[1]
    audio = np.load(out / "dev-other" / "104-204-0001_audio.npy")
    assert audio.dtype == np.int16
    np.testing.assert_array_equal(audio, soundfile.read(io.BytesIO(flac), dtype="int16")[0])
    tokens = np.load(out / "dev-other" / "104-204-0001_targets.npy")
    assert Tokenizer(out / "spm_model.vocab").detokenize(tokens) == transcript.split(" ", 1)[1]


def test_ogbg_arrays_are_the_ogb_molecules(prepared):
    from workloads.ogbg import workload as ogbg

    graphs, splits = ogbg.load_arrays(prepared.data / "ogbg")
    expected = ogbg.synthetic_graphs(40, seed=3)
    np.testing.assert_array_equal(graphs.nodes, expected.nodes)
    np.testing.assert_array_equal(graphs.edge_index, expected.edge_index)
    np.testing.assert_array_equal(np.isnan(graphs.labels), np.isnan(expected.labels))
    assert splits["train"].tolist() == list(range(32)) and splits["test"].tolist() == [36, 37, 38, 39]


def test_fastmri_volumes_are_extracted_under_the_references_names(prepared):
    out = prepared.data / "fastmri"
    assert len(list((out / "knee_singlecoil_train").glob("*.h5"))) == 2
    assert len(list((out / "knee_singlecoil_val").glob("*.h5"))) == 102
    with tarfile.open(prepared.licensed / fixtures.FASTMRI_TRAIN_ARCHIVE) as tar:
        member = tar.extractfile("singlecoil_train/file1000000.h5").read()
    assert (out / "knee_singlecoil_train" / "file1000000.h5").read_bytes() == member


@pytest.mark.parametrize(
    "workload",
    ["mnist", "cifar", "ogbg", "wmt", "criteo1tb", "librispeech_conformer", "imagenet_resnet", "fastmri"],
)
def test_the_prepared_tree_feeds_the_workload(prepared, workload):
    w = registry.load(workload, data="real", data_dir=str(prepared.data))
    batch = next(iter(w.train_batches(2, seed=0)))
    assert batch["targets"].shape[0] in (2, 3)  # OGBG adds its padding graph
    evaluated = sum(
        int(np.asarray(b["weights"]).reshape(len(b["weights"]), -1).max(1).sum())
        for b in w.eval_split_batches("validation", 10_000, 64)
    )
    assert evaluated > 0


# ---- each prepared fixture trains ------------------------------------------------------------------
BATCH = {"mnist": 16, "ogbg": 8, "cifar": 8, "wmt": 4, "criteo1tb": 16,
         "librispeech_conformer": 2, "imagenet_resnet": 2, "fastmri": 2}
RUNS = [
    pytest.param("mnist", "adamw", marks=pytest.mark.slow),
    pytest.param("ogbg", "adamw", marks=pytest.mark.heavy),
    pytest.param("cifar", "adamw", marks=pytest.mark.heavy),
    pytest.param("wmt", "adamw", marks=pytest.mark.heavy),
    pytest.param("fastmri", "adamw", marks=pytest.mark.heavy),
    pytest.param("imagenet_resnet", "adamw", marks=pytest.mark.heavy),
    pytest.param("librispeech_conformer", "adamw", marks=pytest.mark.heavy),
    # The full-size DLRM (539 M parameters): SGD keeps its optimizer state small.
    pytest.param("criteo1tb", "sgd", marks=pytest.mark.heavy),
]


@pytest.mark.parametrize("workload,submission", RUNS)
def test_algoperf_run_trains_20_steps_on_the_prepared_fixture(prepared, tmp_path, workload, submission):
    out = run_cli(
        "run", "-w", workload, "-s", submission, "--data", "real", "--data-dir", str(prepared.data),
        "--max-steps", "20", "--stop-at", "never", "--eval-every", "20", "--batch-size", str(BATCH[workload]),
        "--experiment-dir", str(tmp_path), "--name", "fixture", "--quiet",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = read_summary(trial_path(tmp_path, "fixture", workload=workload))
    assert summary["status"] == "max_steps" and summary["global_step"] == 20



def test_a_source_without_a_published_checksum_has_its_own_recorded(tmp_path):
    fixtures.write_fastmri(tmp_path / "given", val_volumes=1)  # no SHA256SUMS next to them
    prep.prepare(recipe("fastmri"), tmp_path / "data", source=tmp_path / "given", say=lambda line: None)
    sources = json.loads((tmp_path / "data" / "fastmri" / prep.MANIFEST_FILE).read_text())["sources"]
    for name in (fixtures.FASTMRI_TRAIN_ARCHIVE, fixtures.FASTMRI_VAL_ARCHIVE):
        digest = hashlib.sha256((tmp_path / "given" / name).read_bytes()).hexdigest()
        assert sources[name] == {"bytes": (tmp_path / "given" / name).stat().st_size, "sha256": digest,
                                 "checked_against": "recorded"}
