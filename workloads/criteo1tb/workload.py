"""Criteo 1TB click logs with DLRM-small (WORKLOADS.md), and its three variants.

Data: the shards `algoperf datasets prepare criteo1tb` writes (every line parsed and hashed once,
as below, stored as memory-mappable `.npy` arrays: `<split>/day_<d>_<part>.{labels,dense,ids}.npy`,
5,000,000 rows each, the reference's file split), read by `ShardStream`: a training batch is a
few array slices, no parsing in the timed loop. Without them, the Criteo TSV day files, plain or
gzipped, are parsed while training (about 20,000-40,000 lines/s per core here, far too slow for
the real workload): the reference's layout `day_<d>_<part>` (each day split into files of
5,000,000 lines, parts 00, 01, ...) or whole days `day_<d>`. A line is a label, 13 integer
features and 26 hexadecimal categorical features, tab-separated.

Preprocessing, as the reference's (`tf.io.decode_csv` with `na_value='-1'`, then its parse fn):
- an empty or `-1` field is missing: a dense one becomes 0, a categorical one `00000000`;
- a dense value x becomes log(max(x, 0) + 1), in float32;
- a categorical value v of column i (0-based) becomes FarmHash Fingerprint64(v + str(i)) mod the
  column's raw vocabulary size (`tf.strings.to_hash_bucket_fast`), cast to float32 and stored
  after the 13 dense values (inputs of shape (N, 39)); the model reduces the ids mod 4,194,304.

Splits: days 0-22 train (eval-train: the first 83,279,872 lines of a seeded file order); day 23
in 36 parts: parts 00-18 are the test split (95,000,000 lines), parts 19-35 the validation split
(83,274,637). A single unsplit `day_23` file is cut at the same line (a smaller file in the same
proportion).

Training batches: each epoch the train files in a seeded order, their lines read in sequence,
batches crossing file boundaries, the incomplete batch at the epoch's end dropped (the
reference's `list_files(shuffle) -> flat_map(TextLineDataset) -> batch(drop_remainder)`). The
stream's position (epoch, file, byte offset) is its checkpoint: restoring it resumes exactly.
`grain` has no text-line source, and random access into multi-GB text files would need a line
index, so the stream reads sequentially and seeks to the saved offset.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from algoperf.spec import LossType
from workloads.input_pipeline import prepared_dir
from workloads.registry import WorkloadInfo

VOCAB_SIZE = 4_194_304
NUM_DENSE = 13
NUM_SPARSE = 26
EVAL_BATCH_SIZE = 8192
NUM_VALIDATION = 83_274_637
# Raw vocabulary sizes of the 26 categorical columns (the reference's, from the MLPerf DLRM setup).
RAW_VOCAB_SIZES = (
    39884406,
    39043,
    17289,
    7420,
    20263,
    3,
    7120,
    1543,
    63,
    38532951,
    2953546,
    403346,
    10,
    2208,
    11938,
    155,
    4,
    976,
    14,
    39979771,
    25641295,
    39664984,
    585935,
    12972,
    108,
    36,
)
DAY_23_PARTS = 36
NUM_TEST_PARTS = DAY_23_PARTS // 2 + 1  # parts 00-18 (the reference's split)
DAY_23_LINES = 178_274_637
NUM_TEST = 95_000_000
EVAL_TRAIN_SEED = 0
MISSING_CATEGORICAL = b"00000000"

BASE = WorkloadInfo(
    name="criteo1tb",
    dataset="Criteo 1TB click logs: days 0-22 / 2nd half of day 23 / 1st half of day 23",
    model="DLRM-small: embed 128 (vocab 4,194,304), bottom MLP 512-256-128, top 1024-1024-512-256-1, dot interaction",
    target_metric_name="loss",
    higher_is_better=False,
    validation_target=0.123735,
    test_target=0.126041,
    max_allowed_runtime_sec=7703,
    step_hint=10_666,
    eval_period_time_sec=120,
    eval_batch_size=EVAL_BATCH_SIZE,
    num_train_examples=4_195_197_692,
    # The reference rounds the validation size up to a multiple of the eval batch size.
    num_eval_train_examples=math.ceil(NUM_VALIDATION / EVAL_BATCH_SIZE) * EVAL_BATCH_SIZE,
    num_validation_examples=NUM_VALIDATION,
    num_test_examples=NUM_TEST,
    loss_type=LossType.SIGMOID_CROSS_ENTROPY,
    default_dropout=0.0,
    # (The reference's PyTorch workload evaluates in batches of 8,192; its JAX one in 524,288.)
    n_params={"pytorch": 539_267_457, "jax": 539_267_457},
    implementations={
        "pytorch": "workloads.criteo1tb.torch_workload:Criteo1TbWorkload",
        "jax": "workloads.criteo1tb.jax_workload:Criteo1TbWorkload",
    },
)

WORKLOADS = [
    BASE,
    BASE.variant(
        name="criteo1tb_layernorm",
        change="layer norm in the MLPs (after each ReLU) and on the embeddings",
        validation_target=0.123757,
        test_target=0.126152,
        model_options={"use_layer_norm": True},
        n_params={"pytorch": 539_275_137, "jax": 539_275_137},
    ),
    BASE.variant(
        name="criteo1tb_resnet",
        change="residual MLPs: bottom 256 x 3, top 256 x 4 then 1 (no dot interaction)",
        validation_target=0.12415,
        test_target=0.12648,
        model_options={"resnet": True},
        n_params={"pytorch": 538_121_473, "jax": 538_121_473},
    ),
    BASE.variant(
        name="criteo1tb_embed_init",
        change="embedding init multiplier 1.0",
        validation_target=0.129657,
        test_target=0.131967,
        model_options={"embedding_init_multiplier": 1.0},
        n_params={"pytorch": 539_267_457, "jax": 539_267_457},
    ),
]


# ---- hashing ------------------------------------------------------------------------------------
_MASK = (1 << 64) - 1
_K2 = np.uint64(0x9AE16A3B2F90404F)  # FarmHash's k2


def _rotate(v: np.ndarray, shift: int) -> np.ndarray:
    return (v >> np.uint64(shift)) | (v << np.uint64(64 - shift))


def _shift_xor(v: np.ndarray) -> np.ndarray:
    return v ^ (v >> np.uint64(47))


def fingerprint64(values: np.ndarray) -> np.ndarray:
    """FarmHash Fingerprint64 (farmhashna::Hash64, TensorFlow's `Fingerprint64`) of byte strings.

    `values` is a numpy bytes array ('S' dtype). Strings of 8 to 16 bytes (every Criteo value plus
    its column index) are hashed vectorised in uint64 arithmetic; any other length falls back to
    the `farmhash` package (pyfarmhash).
    """
    flat = np.ascontiguousarray(values.reshape(-1))
    out = np.empty(len(flat), dtype=np.uint64)
    if len(flat) == 0:
        return out.reshape(values.shape)
    width = max(flat.dtype.itemsize, 16)
    buf = np.zeros((len(flat), width), dtype=np.uint8)
    buf[:, : flat.dtype.itemsize] = flat.view(np.uint8).reshape(len(flat), flat.dtype.itemsize)
    lengths = np.char.str_len(flat)
    fast = (lengths >= 8) & (lengths <= 16)
    rows = np.flatnonzero(fast)
    if len(rows):
        n = lengths[rows].astype(np.uint64)
        first = np.ascontiguousarray(buf[rows, :8]).view("<u8")[:, 0]
        last_idx = (lengths[rows] - 8)[:, None] + np.arange(8)
        last = np.ascontiguousarray(buf[rows[:, None], last_idx]).view("<u8")[:, 0]
        with np.errstate(over="ignore"):
            mul = _K2 + n * np.uint64(2)
            a = first + _K2
            c = _rotate(last, 37) * mul + a
            d = (_rotate(a, 25) + last) * mul
            h = _shift_xor((c ^ d) * mul)
            h = _shift_xor((d ^ h) * mul) * mul
        out[rows] = h
    slow = np.flatnonzero(~fast)
    if len(slow):
        import farmhash

        for i in slow:
            out[i] = farmhash.fingerprint64(bytes(flat[i])) & _MASK
    return out.reshape(values.shape)


def hash_categorical(values: np.ndarray, column: int) -> np.ndarray:
    """`tf.strings.to_hash_bucket_fast(value + str(column), raw vocab size)`, as int64."""
    keyed = np.char.add(values.astype(np.bytes_), str(column).encode())
    return (fingerprint64(keyed) % np.uint64(RAW_VOCAB_SIZES[column])).astype(np.int64)


# ---- parsing ------------------------------------------------------------------------------------
NUM_FIELDS = 1 + NUM_DENSE + NUM_SPARSE


def _bad_line(lines: Sequence[bytes], source: str) -> ValueError:
    for i, line in enumerate(lines):
        count = len(line.rstrip(b"\r\n").split(b"\t"))
        if count != NUM_FIELDS:
            where = f" ({source}, line {i + 1} of the batch)" if source else f" (line {i + 1})"
            return ValueError(
                f"A Criteo line has {NUM_FIELDS} tab-separated fields (label, {NUM_DENSE} integer, "
                f"{NUM_SPARSE} categorical); got {count}{where}. Check that the file is a "
                "Criteo 1TB day file."
            )
    return ValueError(f"Criteo lines{f' of {source}' if source else ''} hold a stray tab or newline")


def parse_columns(
    lines: Sequence[bytes | str], source: str = ""
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TSV lines -> (labels (N,) float32, dense (N, 13) float32, ids (N, 26) int64), as the reference.

    One split of the joined lines makes the (N, 40) table: a C-level pass instead of one Python
    call per line, which is what makes the one-time conversion of 4.4 billion lines affordable.
    """
    raw = [line.encode() if isinstance(line, str) else bytes(line) for line in lines]
    n = len(raw)
    if n == 0:
        return (
            np.zeros(0, np.float32),
            np.zeros((0, NUM_DENSE), np.float32),
            np.zeros((0, NUM_SPARSE), np.int64),
        )
    fields = b"\t".join(line.rstrip(b"\r\n") for line in raw).split(b"\t")
    if len(fields) != n * NUM_FIELDS:
        raise _bad_line(raw, source)
    table = np.array(fields, dtype=np.bytes_).reshape(n, NUM_FIELDS)
    missing = (table == b"") | (table == b"-1")
    numeric = np.where(missing[:, : 1 + NUM_DENSE], b"0", table[:, : 1 + NUM_DENSE])
    try:
        numbers = numeric.astype(np.float32)
    except ValueError as e:
        raise ValueError(
            f"A Criteo label or integer feature is not a number{f' in {source}' if source else ''}: {e}"
        ) from e
    dense = np.log(np.maximum(numbers[:, 1:], np.float32(0)) + np.float32(1))
    cats = np.where(missing[:, 1 + NUM_DENSE :], MISSING_CATEGORICAL, table[:, 1 + NUM_DENSE :])
    ids = np.stack([hash_categorical(cats[:, j], j) for j in range(NUM_SPARSE)], axis=1)
    return numbers[:, 0], dense, ids


def model_inputs(dense: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(N, 39) float32: the 13 dense values, then the 26 ids cast to float32 (as the reference)."""
    return np.concatenate([dense, ids.astype(np.float32)], axis=1)


def parse_lines(lines: Sequence[bytes | str], source: str = "") -> dict[str, np.ndarray]:
    """TSV lines -> {'inputs': (N, 39) float32, 'targets': (N,) float32} as the reference parses them."""
    labels, dense, ids = parse_columns(lines, source)
    return {"inputs": model_inputs(dense, ids), "targets": labels}


# ---- files --------------------------------------------------------------------------------------
_DAY = re.compile(r"^day_(\d+)(?:_(\d+))?(?:\.gz)?$")


class Source:
    """A file of a split and which of its lines belong to the split: [start, stop) (stop None: to the end)."""

    def __init__(self, path: Path, start: int = 0, stop: int | None = None) -> None:
        self.path, self.start, self.stop = Path(path), start, stop

    def __repr__(self) -> str:
        return f"Source({self.path.name!r}, {self.start}, {self.stop})"

    def open(self) -> IO[bytes]:
        if self.path.suffix == ".gz":
            return gzip.open(self.path, "rb")  # type: ignore[return-value]
        return open(self.path, "rb", buffering=1 << 20)


def _day_files(data_dir: Path) -> list[tuple[Path, int, int | None]]:
    found = []
    for p in sorted(Path(data_dir).iterdir(), key=lambda p: p.name):
        m = _DAY.match(p.name)
        if m:
            found.append((p, int(m.group(1)), None if m.group(2) is None else int(m.group(2))))
    return found


def count_lines(path: Path) -> int:
    """The number of lines of a (plain or gzipped) file; counted once per file version."""
    stat = Path(path).stat()
    return _count_lines(str(path), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _count_lines(path: str, size: int, mtime_ns: int) -> int:
    with Source(Path(path)).open() as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))


def split_sources(data_dir: Path, split: str) -> list[Source]:
    """The files (and line ranges) of a split, in their natural order."""
    days = _day_files(data_dir)
    if split in ("train", "eval_train"):
        chosen = [Source(p) for p, d, _ in days if d < 23]
    elif split in ("validation", "test"):
        parts = [(p, part) for p, d, part in days if d == 23 and part is not None]
        whole = [p for p, d, part in days if d == 23 and part is None]
        if parts:
            chosen = [
                Source(p) for p, part in parts if (part < NUM_TEST_PARTS) == (split == "test")
            ]
        elif whole:
            # One unsplit day 23: the test split is its first 95,000,000 of 178,274,637 lines (the
            # reference's 19 parts of 5,000,000); a smaller file is cut in the same proportion.
            n = count_lines(whole[0])
            cut = NUM_TEST if n >= DAY_23_LINES else round(n * NUM_TEST / DAY_23_LINES)
            chosen = [Source(whole[0], 0, cut) if split == "test" else Source(whole[0], cut)]
        else:
            chosen = []
    else:
        raise ValueError(f"unknown split {split!r}: expected train, eval_train, validation or test")
    if not chosen:
        raise FileNotFoundError(
            f"No Criteo {split} files in {data_dir}: expected day_0 ... day_22 (train) and day_23 "
            "or day_23_00 ... day_23_35 (validation and test), plain or .gz, or days split as "
            "day_<d>_<part> (the reference's layout)."
        )
    return chosen


class LineReader:
    """Reads a sequence of sources line by line; its position is (source index, byte offset, line)."""

    def __init__(self, sources: list[Source]) -> None:
        self.sources = sources
        self.index = 0  # which source
        self.offset = 0  # bytes of the source's file consumed
        self.line = 0  # lines of the source's file consumed
        self._file: IO[bytes] | None = None

    def _open(self) -> IO[bytes]:
        if self._file is None:
            source = self.sources[self.index]
            self._file = source.open()
            if self.offset:
                self._file.seek(self.offset)  # plain: instant; gzip: decompresses up to it
            while self.line < source.start:  # skip to the first line of the range
                self.offset += len(self._file.readline())
                self.line += 1
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self, count: int) -> list[bytes]:
        """Up to `count` non-empty lines, crossing into the next sources; fewer at the end."""
        out: list[bytes] = []
        while len(out) < count and self.index < len(self.sources):
            f = self._open()
            stop = self.sources[self.index].stop
            want = count - len(out)
            if stop is not None:
                want = min(want, stop - self.line)
            got = list(itertools.islice(f, want)) if want > 0 else []
            self.line += len(got)
            self.offset += sum(len(line) for line in got)
            out += [line for line in got if line.strip()]
            if len(got) < want or (stop is not None and self.line >= stop):
                self.close()
                self.index, self.offset, self.line = self.index + 1, 0, 0
        return out

    def state_dict(self) -> dict[str, int]:
        return {"index": self.index, "offset": self.offset, "line": self.line}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.close()
        self.index, self.offset, self.line = (
            int(state["index"]),
            int(state["offset"]),
            int(state["line"]),
        )


class CriteoStream:
    """Endless training batches: each epoch the files in a seeded order, lines in sequence.

    As the reference: batches cross file boundaries, and an epoch's last incomplete batch is
    dropped. The position (epoch and the reader's file, byte offset and line) restores exactly.
    """

    def __init__(self, sources: list[Source], batch_size: int, seed: int) -> None:
        self.sources, self.batch_size, self.seed = sources, batch_size, seed
        self.epoch = 0
        self.reader = LineReader(self._ordered())

    def _ordered(self) -> list[Source]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.sources))
        return [self.sources[i] for i in order]

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        for _ in range(2):
            lines = self.reader.read(self.batch_size)
            if len(lines) == self.batch_size:
                return parse_lines(lines, source=str(self.sources[0].path.parent))
            # The epoch's remainder (fewer lines than a batch) is dropped; the next epoch starts.
            self.epoch += 1
            self.reader = LineReader(self._ordered())
        raise ValueError(
            f"The Criteo training files hold fewer than one batch ({self.batch_size} lines) of data."
        )

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, **self.reader.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.reader = LineReader(self._ordered())
        self.reader.load_state_dict(state)


def eval_sources(data_dir: Path, split: str) -> list[Source]:
    """An eval split's files in reading order: eval-train reads the train files in a fixed seeded order."""
    sources = split_sources(data_dir, split)
    if split == "eval_train":
        order = np.random.default_rng(EVAL_TRAIN_SEED).permutation(len(sources))
        sources = [sources[i] for i in order]
    return sources


def padded(batch: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """A batch padded with zeros to batch_size, with `weights` 1 for real examples and 0 for padding."""
    n = len(batch["targets"])
    out = {
        k: np.concatenate([v, np.zeros((batch_size - n, *v.shape[1:]), v.dtype)])
        for k, v in batch.items()
    }
    out["weights"] = (np.arange(batch_size) < n).astype(np.float32)
    return out


# ---- prepared shards (`algoperf datasets prepare criteo1tb`) -----------------------------------
# The reference splits every day into files of 5,000,000 lines and shuffles that file list each
# epoch; a prepared shard is one such file, parsed and hashed once.
SHARD_ROWS = 5_000_000
SHARD_FIELDS = {"labels": np.uint8, "dense": np.float32, "ids": np.int32}
PREPARED_SPLITS = ("train", "validation", "test")
READ_CHUNK = 1 << 16  # lines parsed at a time while converting


def shard_files(prefix: Path) -> dict[str, Path]:
    """The three arrays of a shard: labels (N,) uint8, dense (N, 13) float32, ids (N, 26) int32."""
    return {field: prefix.with_name(f"{prefix.name}.{field}.npy") for field in SHARD_FIELDS}


def write_shard(prefix: Path, labels: np.ndarray, dense: np.ndarray, ids: np.ndarray) -> list[Path]:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    files = shard_files(prefix)
    for field, values in (("labels", labels), ("dense", dense), ("ids", ids)):
        np.save(files[field], np.ascontiguousarray(values, dtype=SHARD_FIELDS[field]))
    return list(files.values())


def prepared_shards(folder: Path, split: str) -> list[Path]:
    """Shard prefixes of a prepared split (`<folder>/<split>/day_<d>_<part>`), in name order."""
    return sorted(p.with_name(p.name[: -len(".labels.npy")]) for p in (folder / split).glob("*.labels.npy"))


def is_prepared(folder: Path) -> bool:
    return all(prepared_shards(folder, split) for split in PREPARED_SPLITS)


def _day_23_test_lines(total: int) -> int:
    """Lines of day 23 that are the test split: the first 95,000,000 (the reference's parts
    00-18); a smaller file (a fixture) is cut in the same proportion."""
    return NUM_TEST if total >= DAY_23_LINES else round(total * NUM_TEST / DAY_23_LINES)


def convert_day(path: Path, day: int, out: Path, shard_rows: int = SHARD_ROWS) -> list[Path]:
    """A day file (plain or .gz) -> prepared shards of `shard_rows` rows; returns the files written.

    Days 0-22 go to `train/`; day 23 to `test/` (its first lines) and `validation/` (the rest).
    """
    cut = _day_23_test_lines(count_lines(path)) if day == 23 else None
    written: list[Path] = []
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    state = {"rows": 0, "part": 0, "split": "train" if cut is None else "test"}

    def flush() -> None:
        if not pending:
            return
        columns = [np.concatenate([p[i] for p in pending]) for i in range(3)]
        prefix = out / state["split"] / f"day_{day}_{state['part']:02d}"
        written.extend(write_shard(prefix, *columns))
        pending.clear()
        state["rows"], state["part"] = 0, int(state["part"]) + 1

    line_no = 0
    with Source(path).open() as f:
        while True:
            want = READ_CHUNK
            if cut is not None and state["split"] == "test":
                want = min(want, cut - line_no)
            lines = list(itertools.islice(f, want)) if want > 0 else []
            if not lines and want > 0:
                break
            line_no += len(lines)
            lines = [line for line in lines if line.strip()]
            while lines:
                room = shard_rows - int(state["rows"])
                take, lines = lines[:room], lines[room:]
                pending.append(parse_columns(take, source=str(path)))
                state["rows"] = int(state["rows"]) + len(take)
                if int(state["rows"]) == shard_rows:
                    flush()
            if cut is not None and state["split"] == "test" and line_no >= cut:
                flush()
                state["split"], state["part"] = "validation", 0
    flush()
    return written


class ShardReader:
    """Reads prepared shards in sequence; its position is (shard index, row)."""

    def __init__(self, shards: list[Path]) -> None:
        self.shards = shards
        self.index = 0
        self.row = 0
        self._open: tuple[int, dict[str, np.ndarray]] | None = None

    def _arrays(self) -> dict[str, np.ndarray]:
        if self._open is None or self._open[0] != self.index:
            files = shard_files(self.shards[self.index])
            self._open = (self.index, {k: np.load(f, mmap_mode="r") for k, f in files.items()})
        return self._open[1]

    def read(self, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to `count` rows (labels, dense, ids), crossing into the next shards; fewer at the end."""
        parts: list[tuple[np.ndarray, ...]] = []
        got = 0
        while got < count and self.index < len(self.shards):
            arrays = self._arrays()
            take = min(count - got, len(arrays["labels"]) - self.row)
            stop = self.row + take
            parts.append(tuple(arrays[k][self.row : stop] for k in ("labels", "dense", "ids")))
            got += take
            self.row = stop
            if self.row >= len(arrays["labels"]):
                self.index, self.row = self.index + 1, 0
        if not parts:
            return (
                np.zeros(0, np.uint8),
                np.zeros((0, NUM_DENSE), np.float32),
                np.zeros((0, NUM_SPARSE), np.int32),
            )
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]

    def state_dict(self) -> dict[str, int]:
        return {"index": self.index, "row": self.row}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.index, self.row = int(state["index"]), int(state["row"])


def shard_batch(labels: np.ndarray, dense: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
    return {"inputs": model_inputs(dense, ids), "targets": labels.astype(np.float32)}


class ShardStream:
    """Endless training batches from prepared shards: each epoch the shards in a seeded order.

    The reference's order (a shuffled file list, lines in sequence, batches across files, the
    epoch's incomplete last batch dropped) on memory-mapped arrays: a batch is a few slices and
    one concatenation, no parsing. The position is (epoch, shard index, row).
    """

    def __init__(self, shards: list[Path], batch_size: int, seed: int) -> None:
        self.shards, self.batch_size, self.seed = shards, batch_size, seed
        self.epoch = 0
        self.reader = ShardReader(self._ordered())

    def _ordered(self) -> list[Path]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.shards))
        return [self.shards[i] for i in order]

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        for _ in range(2):
            columns = self.reader.read(self.batch_size)
            if len(columns[0]) == self.batch_size:
                return shard_batch(*columns)
            self.epoch += 1
            self.reader = ShardReader(self._ordered())
        raise ValueError(
            f"The prepared Criteo training shards hold fewer than one batch ({self.batch_size} rows)."
        )

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, **self.reader.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.reader = ShardReader(self._ordered())
        self.reader.load_state_dict(state)


def eval_shards(folder: Path, split: str) -> list[Path]:
    """An eval split's shards in reading order: eval-train reads the train shards in a fixed seeded order."""
    if split == "eval_train":
        shards = prepared_shards(folder, "train")
        order = np.random.default_rng(EVAL_TRAIN_SEED).permutation(len(shards))
        return [shards[i] for i in order]
    return prepared_shards(folder, split)


class CriteoData:
    data: str
    data_dir: str | None
    synthetic_sizes: dict[str, int] = {"train": 256, "eval_train": 64, "validation": 64, "test": 64}

    def _dir(self) -> Path:
        if not self.data_dir:
            raise FileNotFoundError(
                "criteo1tb reads the shards of `algoperf datasets prepare criteo1tb` (or the TSV "
                "day files) from --data-dir; or use --data synthetic."
            )
        return prepared_dir(self.data_dir, "criteo1tb")

    def _prepared(self) -> bool:
        return is_prepared(self._dir())

    def train_batches(self, global_batch_size: int, seed: int) -> Any:
        if self.data == "synthetic":
            return super().train_batches(global_batch_size, seed)  # type: ignore[misc]
        if self._prepared():
            return ShardStream(prepared_shards(self._dir(), "train"), global_batch_size, seed)
        return CriteoStream(split_sources(self._dir(), "train"), global_batch_size, seed)

    def eval_split_batches(
        self, split: str, num_examples: int, batch_size: int
    ) -> Iterator[dict[str, np.ndarray]]:
        """The first num_examples lines of an eval split in padded batches (streamed, not in memory)."""
        if self.data == "synthetic":
            yield from super().eval_split_batches(split, num_examples, batch_size)  # type: ignore[misc]
            return
        if self._prepared():
            shards = ShardReader(eval_shards(self._dir(), split))
            available = sum(len(np.load(shard_files(s)["labels"], mmap_mode="r")) for s in shards.shards)
            # A split smaller than the eval batch (a fixture) is one batch of its own size.
            batch_size = min(batch_size, max(min(num_examples, available), 1))
            remaining = num_examples
            while remaining > 0:
                columns = shards.read(min(batch_size, remaining))
                if not len(columns[0]):
                    break
                remaining -= len(columns[0])
                yield padded(shard_batch(*columns), batch_size)
            return
        reader = LineReader(eval_sources(self._dir(), split))
        remaining = num_examples
        try:
            while remaining > 0:
                lines = reader.read(min(batch_size, remaining))
                if not lines:
                    break
                remaining -= len(lines)
                yield padded(parse_lines(lines, source=f"the {split} split"), batch_size)
        finally:
            reader.close()

    def real_split(self, split: str) -> dict[str, np.ndarray]:
        """A whole eval split in memory (for small files only: evals stream with eval_split_batches)."""
        if self._prepared():
            return shard_batch(*ShardReader(eval_shards(self._dir(), split)).read(1 << 62))
        reader = LineReader(eval_sources(self._dir(), split))
        try:
            return parse_lines(reader.read(1 << 62))
        finally:
            reader.close()

    def synthetic_split(self, split: str) -> dict[str, np.ndarray]:
        """Criteo-shaped examples with click labels from a fixed random teacher."""
        n = self.synthetic_sizes[split]
        rng = np.random.default_rng(
            {"train": 0, "eval_train": 0, "validation": 1, "test": 2}[split] + 300
        )
        dense = np.log1p(rng.exponential(5.0, (n, NUM_DENSE))).astype(np.float32)
        ids = rng.integers(0, np.minimum(RAW_VOCAB_SIZES, 1000), (n, NUM_SPARSE))
        # The teacher: a fixed random linear function of the dense features plus a random weight
        # per (column, id % 64); the top quarter of its scores are clicks.
        teacher = np.random.default_rng(7)
        w = teacher.standard_normal(NUM_DENSE)
        table = teacher.standard_normal((NUM_SPARSE, 64)) / np.sqrt(NUM_SPARSE)
        score = (dense - 1.8) @ w + table[np.arange(NUM_SPARSE), ids % 64].sum(1)
        targets = (score > np.quantile(score, 0.75)).astype(np.float32)
        return {"inputs": np.concatenate([dense, ids.astype(np.float32)], 1), "targets": targets}
