"""`tf.train.Example` records without TensorFlow: TFDS's ArrayRecord files of ImageNet.

TFDS (`tfds build imagenet2012 --file_format=array_record`, and `imagenet_v2/matched-frequency`)
stores every example as a serialized `tf.train.Example` with the features `image` (the JPEG
bytes), `label` (int64) and `file_name` (bytes), in files named
`<name>-<split>.array_record-NNNNN-of-MMMMM` under `<data_dir>/<name>/<version>/`. The message
types are declared here from their `.proto` definition (tensorflow/core/example/feature.proto and
example.proto), so `protobuf` alone reads and writes them.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np


@cache
def _message_classes() -> dict[str, Any]:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="algoperf_tf_example.proto", package="tensorflow", syntax="proto3"
    )

    def message(name: str, fields: list[tuple[str, int, int, int, str]]) -> None:
        m = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            f = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = type_name
            if kind in (F.TYPE_FLOAT, F.TYPE_INT64) and label == F.LABEL_REPEATED:
                f.options.packed = True

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", [("value", 1, F.TYPE_BYTES, rep, "")])
    message("FloatList", [("value", 1, F.TYPE_FLOAT, rep, "")])
    message("Int64List", [("value", 1, F.TYPE_INT64, rep, "")])
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for field_name, number, type_name in (
        ("bytes_list", 1, ".tensorflow.BytesList"),
        ("float_list", 2, ".tensorflow.FloatList"),
        ("int64_list", 3, ".tensorflow.Int64List"),
    ):
        feature.field.add(
            name=field_name,
            number=number,
            type=F.TYPE_MESSAGE,
            label=opt,
            type_name=type_name,
            oneof_index=0,
        )
    features = proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=opt)
    entry.field.add(
        name="value", number=2, type=F.TYPE_MESSAGE, label=opt, type_name=".tensorflow.Feature"
    )
    features.field.add(
        name="feature",
        number=1,
        type=F.TYPE_MESSAGE,
        label=rep,
        type_name=".tensorflow.Features.FeatureEntry",
    )
    message("Example", [("features", 1, F.TYPE_MESSAGE, opt, ".tensorflow.Features")])

    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{name}"))
        for name in ("Example", "Feature")
    }


def encode_example(features: dict[str, bytes | int | float | list[Any]]) -> bytes:
    """A serialized `tf.train.Example` of bytes / int / float features (or lists of one kind)."""
    example = _message_classes()["Example"]()
    for key, value in features.items():
        values = value if isinstance(value, list) else [value]
        feature = example.features.feature[key]
        if all(isinstance(v, bytes) for v in values):
            feature.bytes_list.value.extend(values)
        elif all(isinstance(v, (int, np.integer)) for v in values):
            feature.int64_list.value.extend(int(v) for v in values)
        else:
            feature.float_list.value.extend(float(v) for v in values)
    return example.SerializeToString()


def decode_example(record: bytes) -> dict[str, list[Any]]:
    """A serialized `tf.train.Example` -> {feature name: list of its values}."""
    example = _message_classes()["Example"]()
    example.ParseFromString(record)
    out = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[key] = list(getattr(feature, kind).value) if kind else []
    return out


def array_record_files(root: Path, name: str, split: str) -> list[Path]:
    """The shards of a TFDS dataset split: `<root>/<name>/<version>/<name>-<split>.array_record-*`.

    `root` may also be the version folder itself. The newest version folder wins.
    """
    base = name.split("/")[0]
    pattern = f"{base}-{split}.array_record-*"
    candidates = [root] if any(root.glob(pattern)) else []
    if not candidates and (root / name).is_dir():
        candidates = sorted(
            (d for d in (root / name).iterdir() if d.is_dir()), key=lambda d: d.name
        )[::-1]
    for folder in candidates:
        files = sorted(folder.glob(pattern))
        if files:
            return files
    return []


class ArrayRecordImages:
    """Random access to (JPEG bytes, label) in TFDS ArrayRecord shards (a grain data source)."""

    def __init__(self, files: list[Path]) -> None:
        import grain

        self.files = files
        self._source = grain.sources.ArrayRecordDataSource([str(f) for f in files])

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> tuple[bytes, int]:
        features = decode_example(self._source[int(i)])
        return bytes(features["image"][0]), int(features["label"][0])
