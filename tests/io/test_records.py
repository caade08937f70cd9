import io
import json

import pytest
from confidently.errors import InvalidInput
from confidently.io.records import RecordReader, RecordWriter, dumps_record, rebase_refs, validate_image_record
from confidently.schema import schema_errors


def read(text: str, **kwargs):
    return list(RecordReader(io.StringIO(text), **kwargs))


def test_order_line_numbers_and_unknown_fields_kept():
    text = '{"id":"b","x":{"deep":[1,2]}}\n\n{"id":"a","label":3,"other":"kept"}\n'
    records = read(text)
    assert [r.id for r in records] == ["b", "a"]
    assert [r.line for r in records] == [1, 3]
    assert records[0].data["x"] == {"deep": [1, 2]}
    assert records[1].data["other"] == "kept"


@pytest.mark.parametrize(("text", "line", "field", "words"), [
    ('{"id":"a"}\n{"id": "b",\n', 2, None, "malformed JSON"),
    ('{"id":"a"}\n{"label": 1}\n', 2, "id", "missing"),
    ('{"id":"a"}\n{"id":"a"}\n', 2, "id", "duplicate"),
    ('{"id":7}\n', 1, "id", "string"),
    ('{"id":"a","label":-1}\n', 1, "label", "integer"),
    ('{"id":"a","label":true}\n', 1, "label", "integer"),
    ('{"id":"a","image":{"tensors":"x.safetensors"}}\n', 1, "image", "key"),
    ('{"id":"a","image":{"tensors":"x.safetensors","key":"k","index":-2}}\n', 1, "image", "index"),
    ('[1,2]\n', 1, None, "object"),
])
def test_bad_records_name_line_and_field(text, line, field, words):
    with pytest.raises(InvalidInput) as info:
        read(text)
    assert info.value.line == line
    assert info.value.field == field
    assert words in str(info.value)


def test_yield_errors_keeps_going():
    items = read('{"id":"a"}\nnot json\n{"id":"b"}\n', yield_errors=True)
    assert [type(i).__name__ for i in items] == ["Record", "InvalidInput", "Record"]


def test_require_image():
    with pytest.raises(InvalidInput, match="image"):
        read('{"id":"a"}\n', require_image=True)


def test_writer_one_flushed_compact_line_per_record():
    class Counting(io.StringIO):
        flushes = 0

        def flush(self):
            Counting.flushes += 1
            super().flush()

    stream = Counting()
    writer = RecordWriter(stream)
    writer.write({"id": "a", "v": 1.5, "s": "é"})
    writer.write({"id": "b", "nan": float("nan")})
    lines = stream.getvalue().splitlines()
    assert lines[0] == '{"id":"a","v":1.5,"s":"é"}'
    assert json.loads(lines[1]) == {"id": "b", "nan": None}
    assert Counting.flushes >= 2


def test_rebase_refs_resolve_to_the_same_file(tmp_path):
    (tmp_path / "data" / "img").mkdir(parents=True)
    record = {"id": "a", "image": "img/a.png", "mask": {"tensors": "m.safetensors", "key": "k"}}
    moved = rebase_refs(record, tmp_path / "data", tmp_path / "other")
    assert (tmp_path / "other" / moved["image"]).resolve() == (tmp_path / "data" / "img" / "a.png").resolve()
    assert moved["mask"]["tensors"] == "../data/m.safetensors"


@pytest.mark.parametrize("record", [
    {"id": "a"}, {"id": ""}, {"id": 3}, {"label": 1}, {"id": "a", "label": -1}, {"id": "a", "label": 2.5},
    {"id": "a", "image": ""}, {"id": "a", "image": "x.png"}, {"id": "a", "image": {"tensors": "t", "key": "k"}},
    {"id": "a", "image": {"tensors": "t"}}, {"id": "a", "image": {"tensors": "t", "key": "k", "index": -1}},
    {"id": "a", "mask": 5}, {"id": "a", "split": ""}, {"id": "a", "split": "train"},
])
def test_hand_validator_agrees_with_schema(record):
    assert (validate_image_record(record) is None) == (schema_errors(record, "image-record") == [])


def test_dumps_is_strict_json():
    assert dumps_record({"id": "x", "inf": float("inf")}) == '{"id":"x","inf":null}'
