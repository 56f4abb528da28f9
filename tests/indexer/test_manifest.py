"""Catalog manifests: formats, column detection, types, schemas, ids and bad rows."""

from __future__ import annotations

import datetime as dt
import gzip
import http.server
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xmodal.indexer.manifest import (
    ManifestOptions,
    ManifestProblem,
    ManifestRow,
    parse_schema,
    read_manifest,
)
from xmodal.indexer.metadata_file import read_metadata_file
from xmodal.indexer.tabular import MAX_JSON_LINE_BYTES
from xmodal.search.errors import SourceError


def rows_of(location, **options) -> list[ManifestRow]:
    out = list(read_manifest(location, ManifestOptions(**options)))
    assert all(isinstance(r, ManifestRow) for r in out), out
    return out  # type: ignore[return-value]


def problems_of(location, **options) -> list[tuple[int, str]]:
    return [
        (r.line, r.reason)
        for r in read_manifest(location, ManifestOptions(**options))
        if isinstance(r, ManifestProblem)
    ]


CATALOG_CSV = (
    "url,sku,title,price,stock,on_sale\n"
    "img/a.jpg,00123,Red shoe,49.5,3,true\n"
    "https://cdn.example.com/b.jpg,123,Blue boot,60,,false\n"
)


def test_csv_rows_keep_codes_as_text_and_type_numbers_by_column(tmp_path):
    (tmp_path / "catalog.csv").write_text(CATALOG_CSV)
    a, b = rows_of(tmp_path / "catalog.csv")
    assert (a.line, a.external_id, b.external_id) == (2, "00123", "123")
    # A relative path of a local manifest is made absolute; a URL stays as written.
    assert a.source == str(tmp_path / "img" / "a.jpg")
    assert b.source == "https://cdn.example.com/b.jpg"
    assert a.metadata == {"title": "Red shoe", "price": 49.5, "stock": 3, "on_sale": "true"}
    # One type per column; an empty cell is left out.
    assert b.metadata == {"title": "Blue boot", "price": 60.0, "on_sale": "false"}
    assert isinstance(b.metadata["price"], float)


def test_tsv_and_gzip_csv(tmp_path):
    (tmp_path / "c.tsv").write_text("url\tid\tcaption\na.jpg\tX1\ta caption, with a comma\n")
    (row,) = rows_of(tmp_path / "c.tsv")
    assert (row.external_id, row.metadata) == ("X1", {"caption": "a caption, with a comma"})
    (tmp_path / "c.csv.gz").write_bytes(gzip.compress(CATALOG_CSV.encode()))
    assert [r.metadata["price"] for r in rows_of(tmp_path / "c.csv.gz")] == [49.5, 60.0]
    # The format may be named when the extension says nothing.
    (tmp_path / "c.txt").write_text(CATALOG_CSV)
    assert len(rows_of(tmp_path / "c.txt", format="csv")) == 2


def test_img2dataset_laion_columns(tmp_path):
    (tmp_path / "laion.csv").write_text(
        "URL,TEXT,WIDTH,HEIGHT,similarity\nhttps://x/1.jpg,a dog,640,480,0.31\n"
    )
    (row,) = rows_of(tmp_path / "laion.csv")
    assert row.source == "https://x/1.jpg" and row.external_id is None
    assert row.metadata == {"TEXT": "a dog", "WIDTH": 640, "HEIGHT": 480, "similarity": 0.31}


def test_explicit_url_and_id_columns(tmp_path):
    (tmp_path / "c.csv").write_text("id,picture,code\n1,a.jpg,SKU-1\n2,b.jpg,SKU-2\n")
    rows = rows_of(tmp_path / "c.csv", url_column="picture", id_column="code")
    assert [(r.external_id, r.metadata) for r in rows] == [
        ("SKU-1", {"id": 1}),
        ("SKU-2", {"id": 2}),
    ]
    with pytest.raises(SourceError, match=r"no url column 'image'.*'picture'"):
        rows_of(tmp_path / "c.csv", url_column="image")
    with pytest.raises(SourceError, match="no id column 'ean'"):
        rows_of(tmp_path / "c.csv", url_column="picture", id_column="ean")


def test_no_url_column_is_an_error_listing_the_columns(tmp_path):
    (tmp_path / "c.csv").write_text("name,caption\na,b\n")
    with pytest.raises(SourceError, match=r"no url column.*'name', 'caption'"):
        list(read_manifest(tmp_path / "c.csv"))


def test_jsonl_keeps_json_types_and_bad_lines_are_problems_of_their_own(tmp_path):
    lines = [
        json.dumps({"url": "a.jpg", "sku": "00123", "price": 5, "tags": ["x"], "dims": {"w": 2}}),
        "",
        "{not json",
        "[1, 2]",
        '{"url": "b.jpg", "sku": 77, "ratio": NaN, "note": null}',
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    out = list(read_manifest(tmp_path / "c.jsonl"))
    assert [type(r).__name__ for r in out] == [
        "ManifestRow",
        "ManifestProblem",
        "ManifestProblem",
        "ManifestRow",
    ]
    a, bad, array, b = out
    assert isinstance(a, ManifestRow) and isinstance(b, ManifestRow)
    assert a.metadata == {"price": 5, "tags": ["x"], "dims": {"w": 2}}
    assert (a.external_id, b.external_id) == ("00123", "77")  # an int id: its digits
    assert b.metadata == {}  # NaN and null left out
    assert (bad.line, array.line, b.line) == (3, 4, 5)
    assert isinstance(bad, ManifestProblem) and bad.reason.startswith("not JSON")


def test_a_huge_jsonl_line_is_a_problem_and_not_read_whole(tmp_path):
    path = tmp_path / "c.ndjson"
    with open(path, "w") as f:
        f.write('{"url": "a.jpg"}\n')
        f.write('{"url": "b.jpg", "caption": "' + "x" * (3 * MAX_JSON_LINE_BYTES) + '"}\n')
        f.write('{"url": "c.jpg"}\n')
    out = list(read_manifest(path))
    assert [r.line for r in out] == [1, 2, 3]
    assert isinstance(out[1], ManifestProblem) and "longer than" in out[1].reason
    assert isinstance(out[2], ManifestRow) and out[2].source.endswith("c.jpg")


def write_parquet(path: Path, rows: int = 3, row_group_size: int | None = None) -> None:
    stamps = [dt.datetime(2024, 5, 1, 12, 30) + dt.timedelta(hours=i) for i in range(rows)]
    table = pa.table(
        {
            "url": [f"https://x/{i}.jpg" for i in range(rows)],
            "sku": [f"{i:05d}" for i in range(rows)],
            "price": pa.array([1.5 + i for i in range(rows)], pa.float64()),
            "stock": pa.array(list(range(rows)), pa.int32()),
            "dims": [{"w": 10 * i, "h": 5} for i in range(rows)],
            "tags": [["a", "b"][: i % 3] for i in range(rows)],
            "added": pa.array(stamps, pa.timestamp("us")),
            "cost": pa.array([Decimal("2.25")] * rows, pa.decimal128(6, 2)),
            "score": [float("nan") if i == 1 else 0.5 for i in range(rows)],
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)


def test_parquet_keeps_its_types(tmp_path):
    write_parquet(tmp_path / "c.parquet")
    a, b, _ = rows_of(tmp_path / "c.parquet")
    assert (a.line, a.source, a.external_id) == (1, "https://x/0.jpg", "00000")
    assert a.metadata == {
        "price": 1.5,
        "stock": 0,
        "dims": {"w": 0, "h": 5},
        "tags": [],
        "added": "2024-05-01T12:30:00",
        "cost": 2.25,
        "score": 0.5,
    }
    assert b.external_id == "00001" and b.metadata["tags"] == ["a"]
    assert "score" not in b.metadata  # NaN is left out


def test_parquet_binary_column_is_refused_by_name(tmp_path):
    pq.write_table(pa.table({"url": ["a.jpg"], "jpeg": [b"\xff\xd8"]}), tmp_path / "c.parquet")
    with pytest.raises(SourceError, match="column 'jpeg' holds binary"):
        list(read_manifest(tmp_path / "c.parquet"))


def test_a_large_parquet_manifest_is_read_lazily_batch_by_batch(tmp_path, monkeypatch):
    path = tmp_path / "big.parquet"
    write_parquet(path, rows=50_000, row_group_size=10_000)
    batches: list[int] = []
    real_iter_batches = pq.ParquetFile.iter_batches

    def counted(self, *args, **kwargs):
        for batch in real_iter_batches(self, *args, **kwargs):
            batches.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counted)
    rows = read_manifest(path, ManifestOptions(batch_rows=1_000))
    first = next(rows)
    # The first row came when one batch of 1,000 rows had been read, not 50,000.
    assert isinstance(first, ManifestRow) and first.line == 1 and batches == [1_000]
    rest = list(rows)
    assert len(rest) == 49_999 and len(batches) == 50
    assert max(batches) == 1_000
    last = rest[-1]
    assert isinstance(last, ManifestRow) and last.external_id == "49999" and last.line == 50_000


def test_memory_fsspec_location():
    fs = fsspec.filesystem("memory")
    with fs.open("/catalog/c.csv", "wb") as f:
        f.write(CATALOG_CSV.encode())
    rows = rows_of("memory://catalog/c.csv")
    # A remote manifest's relative paths stay as written.
    assert [r.source for r in rows] == ["img/a.jpg", "https://cdn.example.com/b.jpg"]
    assert rows[0].external_id == "00123"
    fs.rm("/catalog", recursive=True)


@pytest.fixture
def http_folder(tmp_path) -> Iterator[tuple[str, Path]]:
    """A folder served over HTTP on 127.0.0.1: (its base URL, its path)."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    http.server.SimpleHTTPRequestHandler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_manifests_over_http(http_folder):
    base, folder = http_folder
    (folder / "c.jsonl").write_text('{"url": "a.jpg", "sku": "A1", "price": 3}\n')
    (row,) = rows_of(f"{base}/c.jsonl")
    assert (row.source, row.external_id, row.metadata) == ("a.jpg", "A1", {"price": 3})
    (folder / "c.csv").write_text(CATALOG_CSV)
    assert [r.external_id for r in rows_of(f"{base}/c.csv?token=abc")] == ["00123", "123"]
    write_parquet(folder / "c.parquet")
    assert len(rows_of(f"{base}/c.parquet")) == 3
    with pytest.raises(SourceError, match="no such manifest"):
        list(read_manifest(f"{base}/absent.csv"))


def test_schema_overrides_inferred_and_declared_types(tmp_path):
    (tmp_path / "c.csv").write_text(
        "url,id,zip,count,flag,extra,ratio\n"
        'a.jpg,1,01234,+7,yes,"{""k"": [1]}",3\n'
        "b.jpg,2,99999,8,0,[],4\n"
    )
    schema = parse_schema("zip=text, count=int,flag=bool,extra=json,ratio=float")
    a, b = rows_of(tmp_path / "c.csv", schema=schema)
    assert a.metadata == {
        "zip": "01234",
        "count": 7,
        "flag": True,
        "extra": {"k": [1]},
        "ratio": 3.0,
    }
    assert b.metadata == {"zip": "99999", "count": 8, "flag": False, "extra": [], "ratio": 4.0}
    assert isinstance(a.metadata["ratio"], float)
    write_parquet(tmp_path / "c.parquet")
    first = rows_of(tmp_path / "c.parquet", schema={"stock": "text", "price": "text"})[0]
    assert (first.metadata["stock"], first.metadata["price"]) == ("0", "1.5")
    assert problems_of(tmp_path / "c.parquet", schema={"price": "int"})[0] == (
        1,
        "column 'price': 1.5 is not an int",
    )


def test_values_the_schema_cannot_convert_are_problems_naming_column_and_value(tmp_path):
    (tmp_path / "c.csv").write_text("url,count\na.jpg,3\nb.jpg,three\nc.jpg,\n")
    out = list(read_manifest(tmp_path / "c.csv", ManifestOptions(schema={"count": "int"})))
    assert [type(r).__name__ for r in out] == ["ManifestRow", "ManifestProblem", "ManifestRow"]
    assert out[1] == ManifestProblem(3, "column 'count': 'three' is not an int")
    assert isinstance(out[2], ManifestRow) and out[2].metadata == {}
    (tmp_path / "c.jsonl").write_text(
        '{"url": "a.jpg", "on": "maybe"}\n{"url": "b.jpg", "on": 1}\n'
    )
    out = list(read_manifest(tmp_path / "c.jsonl", ManifestOptions(schema={"on": "bool"})))
    assert out[0] == ManifestProblem(1, "column 'on': 'maybe' is not a bool")
    assert isinstance(out[1], ManifestRow) and out[1].metadata == {"on": True}
    with pytest.raises(SourceError, match="'colour', not a column"):
        list(read_manifest(tmp_path / "c.csv", ManifestOptions(schema={"colour": "text"})))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sku=string", "unknown type 'string' for column 'sku'"),
        ("sku", "bad schema entry 'sku'"),
        ("a=int,a=float", "given twice"),
        ("", "empty schema"),
    ],
)
def test_bad_schemas_are_refused(text, message):
    with pytest.raises(SourceError, match=message):
        parse_schema(text)


def test_schema_is_parsed():
    assert parse_schema("sku=text, price=FLOAT,") == {"sku": "text", "price": "float"}


def test_ids_are_checked_and_duplicates_name_the_first_line(tmp_path):
    long_id = "x" * 513
    (tmp_path / "c.csv").write_text(
        "url,sku\n"
        "a.jpg, A1 \n"  # line 2
        "b.jpg,A2\n"
        "c.jpg,A1\n"  # line 4: a repeat of line 2
        f"d.jpg,{long_id}\n"
        "e.jpg,\n"
        ",A9\n"
    )
    out = list(read_manifest(tmp_path / "c.csv"))
    assert [r.external_id for r in out if isinstance(r, ManifestRow)] == ["A1", "A2"]
    assert problems_of(tmp_path / "c.csv") == [
        (4, "duplicate id 'A1' (first on line 2)"),
        (5, "id longer than 512 characters"),
        (6, "no id"),
        (7, "no url"),
    ]
    (tmp_path / "c.jsonl").write_text('{"url": "a.jpg", "id": "A\\u0000B"}\n')
    assert problems_of(tmp_path / "c.jsonl")[0][1].startswith("id with a control character")


def test_hostile_csv_rows_and_empty_files(tmp_path):
    (tmp_path / "c.csv").write_text("url,caption\na.jpg,one\nb.jpg,two,three\nc.jpg,four\n")
    out = list(read_manifest(tmp_path / "c.csv"))
    assert [(r.line, type(r).__name__) for r in out] == [
        (2, "ManifestRow"),
        (3, "ManifestProblem"),
        (4, "ManifestRow"),
    ]
    assert isinstance(out[1], ManifestProblem) and "3 cells for 2 columns" in out[1].reason
    (tmp_path / "header.csv").write_text("url,caption\n")
    assert list(read_manifest(tmp_path / "header.csv")) == []
    (tmp_path / "empty.csv").write_text("")
    assert list(read_manifest(tmp_path / "empty.csv")) == []
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert list(read_manifest(tmp_path / "empty.jsonl")) == []
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(SourceError, match="Parquet"):
        list(read_manifest(tmp_path / "empty.parquet"))


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "c.xlsx").write_bytes(b"PK")
    with pytest.raises(SourceError, match=r"c.xlsx.*csv, tsv, jsonl, parquet"):
        list(read_manifest(tmp_path / "c.xlsx"))
    with pytest.raises(SourceError, match="unknown manifest format 'xml'"):
        list(read_manifest(tmp_path / "c.xlsx", ManifestOptions(format="xml")))
    with pytest.raises(SourceError, match="no such manifest"):
        list(read_manifest(tmp_path / "absent.csv"))


def test_metadata_file_takes_a_schema_and_other_formats(tmp_path):
    (tmp_path / "meta.csv").write_text("file,zip,size\na.jpg,1234,42\nb.jpg,01234,40\n")
    rows = read_metadata_file(tmp_path / "meta.csv", schema={"zip": "int", "size": "text"})
    assert rows[str(tmp_path / "a.jpg")] == {"zip": 1234, "size": "42"}
    assert rows[str(tmp_path / "b.jpg")] == {"zip": 1234, "size": "40"}
    with pytest.raises(SourceError, match=r"meta.csv:2: column 'size': 'L' is not an int"):
        (tmp_path / "meta.csv").write_text("file,size\na.jpg,L\n")
        read_metadata_file(tmp_path / "meta.csv", schema={"size": "int"})
    pq.write_table(pa.table({"file": ["a.jpg"], "n": [3]}), tmp_path / "meta.parquet")
    assert read_metadata_file(tmp_path / "meta.parquet") == {str(tmp_path / "a.jpg"): {"n": 3}}
