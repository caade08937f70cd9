import io
import json

import pytest
from confidently.errors import InvalidInput, UsageError
from confidently.io.records import RecordReader, RecordWriter, dumps_record, rebase_refs, validate_image_record
from confidently.schema import schema_errors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


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


# --- malformed input of every kind: InvalidInput naming the line, never another exception -----------------------

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(("line", "field", "words"), [
    (DEEP, None, "nested deeper"),
    ('{"id":"b","x":' + "[" * 70 + "]" * 70 + "}", None, "nested deeper"),
    ('{"id":"b","n":' + "1" * 5000 + "}", None, "unreadable number"),
    ('{"id":"\\ud800"}', "id", "surrogate"),
    ('{"id":"b","note":["\\udfff"]}', "note", "surrogate"),
    ('{"id":"b"}\x00', None, "NUL"),
])
def test_what_fuzzing_found_is_invalid_input_on_its_line(line, field, words):
    items = read('{"id":"a"}\n' + line + "\n", yield_errors=True)
    assert [type(i).__name__ for i in items] == ["Record", "InvalidInput"]  # the record before it is kept
    assert items[1].line == 2 and items[1].field == field and words in items[1].message
    assert items[1].record_id is None  # nothing unencodable travels on into error records


def test_a_surrogate_pair_is_one_valid_character():
    assert read('{"id":"\\ud83d\\ude00"}\n')[0].id == "\U0001F600"


def test_bytes_that_are_not_utf8_name_their_line(tmp_path):
    (tmp_path / "r.jsonl").write_bytes(b'{"id":"a"}\n{"id":"\xff\xfe"}\n{"id":"c"}\n')
    items = list(RecordReader(tmp_path / "r.jsonl", yield_errors=True))
    assert [type(i).__name__ for i in items] == ["Record", "InvalidInput", "Record"]
    assert items[1].line == 2 and "not UTF-8" in items[1].message and "column 8" in items[1].message


def test_a_text_stream_with_undecodable_bytes_is_refused_too():
    """sys.stdin in the C locale keeps bad bytes as surrogates; they must not come out as text."""
    with pytest.raises(InvalidInput, match="not UTF-8"):
        read('{"id":"a\udcff"}\n')


@pytest.mark.parametrize(("name", "content", "kind"), [
    ("x.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a PNG image"),
    ("x.safetensors", (10).to_bytes(8, "little") + b'{"a":1}   ', "a safetensors file"),
])
def test_a_binary_file_given_as_records_says_what_it_is(tmp_path, name, content, kind):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InvalidInput) as info:
        list(RecordReader(tmp_path / name))
    assert info.value.line == 1 and kind in str(info.value) and name in str(info.value)


def test_a_missing_or_directory_records_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        RecordReader(tmp_path / "nope.jsonl")
    with pytest.raises(UsageError, match="is a directory"):
        RecordReader(tmp_path)


def test_dumps_record_is_always_utf8_json():
    text = dumps_record({"id": "a\udcff", "s": "é", "n": float("inf")})
    assert json.loads(text.encode("utf-8")) == {"id": "a\udcff", "s": "é", "n": None}
    assert dumps_record({"s": "é"}) == '{"s":"é"}'  # valid text stays unescaped


JSONISH = st.text(alphabet='{}[]":,0123456789-.eE \\ud\x00\udcffaé', max_size=40)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(JSONISH, st.binary(max_size=40), st.just(DEEP[:3000])), max_size=6))
def test_any_lines_give_records_or_located_invalid_input(lines):
    """Whatever the bytes, the reader yields records and InvalidInput naming a line, and writes valid UTF-8."""
    raw = b"\n".join(line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass") for line in lines)
    try:
        items = list(RecordReader(io.BufferedReader(io.BytesIO(raw)), validate=False, yield_errors=True))
    except InvalidInput as exc:  # only a binary file's magic number refuses the whole input
        assert exc.line == 1
        return
    for item in items:
        if isinstance(item, InvalidInput):
            assert item.line is not None and item.source and str(item)
        else:
            dumps_record({"v": item.data}).encode("utf-8")
