"""`lsq import-trades`: public-data CSVs written here (header / no header / zip / malformed) into a real trade store."""

from __future__ import annotations

import zipfile
from decimal import Decimal as D
from pathlib import Path

import polars as pl
import pytest

from collectors import bulk
from collectors.bulk import BulkFileError, parse_file_name, read_agg_trades_file, verify_checksum
from collectors.history import import_file
from lsq.cli import main
from lsq.paths import DataPaths
from lsq.timelabels import DAY_MS, HOUR_MS, parse_day
from lsq.tradestore import TradeStore

DAY = parse_day("2024-08-08")
HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n"
ROWS = [
    (2001, "61234.50", "0.003", 9001, 9003, DAY + 5, "true"),
    (2002, "61234.60000001", "12.5", 9004, 9004, DAY + HOUR_MS + 1, "False"),
    (2003, "0.00000001", "99999999.12345678", 9005, 9006, DAY + 23 * HOUR_MS + 59 * 60_000, "True"),
    (2004, "61230", "1", 9007, 9007, DAY + DAY_MS - 1, "false"),
]


def csv_text(rows: list[tuple], header: bool) -> str:
    return (HEADER if header else "") + "".join(",".join(str(v) for v in r) + "\n" for r in rows)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    monkeypatch.setenv("LSQ_DATA_DIR", str(root))
    return root


def stored(root: Path, symbol: str) -> pl.DataFrame:
    return TradeStore(DataPaths(root)).scan(symbol, DAY - DAY_MS, DAY + 40 * DAY_MS).collect()


def test_header_csv_is_stored_exactly(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "BTCUSDT-aggTrades-2024-08-08.csv"
    path.write_text(csv_text(ROWS, header=True))
    assert main(["import-trades", str(path)]) == 0
    out = capsys.readouterr()
    assert "BTCUSDT 4 trades, 4 new" in out.out
    assert "\r" not in out.err and "\x1b[" not in out.err  # no progress bar when stderr is not a terminal
    got = stored(data_dir, "BTCUSDT")
    assert got["agg_trade_id"].to_list() == [2001, 2002, 2003, 2004]
    assert got["price"].to_list() == [D("61234.5"), D("61234.60000001"), D("0.00000001"), D("61230")]
    assert got["quantity"].to_list()[2] == D("99999999.12345678")
    assert got["is_buyer_maker"].to_list() == [True, False, True, False]
    assert got["first_trade_id"].to_list() == [9001, 9004, 9005, 9007]
    assert got["transact_time"].to_list() == [r[5] for r in ROWS]
    # closed past hours are compacted into hour files
    assert DataPaths(data_dir).trade_hour_file("BTCUSDT", DAY).exists()


def test_zip_without_header_monthly_name_and_reimport_is_idempotent(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ETHUSDT-aggTrades-2024-08.zip"
    later = (2005, "3000.1", "2", 9008, 9008, parse_day("2024-08-31") + 7, "true")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ETHUSDT-aggTrades-2024-08.csv", csv_text([*ROWS, later], header=False))
    assert main(["import-trades", str(path)]) == 0
    assert main(["import-trades", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ETHUSDT 5 trades, 5 new" in out and "ETHUSDT 5 trades, 0 new" in out
    got = stored(data_dir, "ETHUSDT")
    assert got.height == 5 and got["agg_trade_id"].is_unique().all()
    assert got["price"][-1] == D("3000.1")


def test_a_deflated_zip_imports_and_a_corrupt_one_is_named(data_dir: Path, tmp_path: Path) -> None:
    """Public-data zips are deflated: inflated whole, checked by size and CRC-32; a damaged one stores nothing."""
    good = tmp_path / "BTCUSDT-aggTrades-2024-08-08.zip"
    with zipfile.ZipFile(good, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("BTCUSDT-aggTrades-2024-08-08.csv", csv_text(ROWS, header=True))
    assert read_agg_trades_file(good).height == len(ROWS)
    data = bytearray(good.read_bytes())
    member = zipfile.ZipFile(good).infolist()[0]
    middle = member.header_offset + 30 + len(member.filename) + member.compress_size // 2
    data[middle] ^= 0xFF
    bad = tmp_path / "ETHUSDT-aggTrades-2024-08-08.zip"
    bad.write_bytes(bytes(data))
    assert main(["import-trades", str(bad)]) == 1
    with pytest.raises(BulkFileError, match=r"corrupt zip member BTCUSDT-aggTrades-2024-08-08\.csv"):
        read_agg_trades_file(bad)
    assert not DataPaths(data_dir).symbol_trades("ETHUSDT").exists()


def test_symbol_option_for_other_file_names(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    path.write_text(csv_text(ROWS[:2], header=True))
    assert main(["import-trades", str(path)]) == 1  # no symbol in the name
    assert main(["import-trades", "--symbol", "sol-usdt", str(path)]) == 0
    assert stored(data_dir, "SOLUSDT").height == 2


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("2003,61234.5,0.1,9005,9005,1723075200009,maybe", "line 4: is_buyer_maker must be true or false"),
        ("2003,61234.123456789,0.1,9005,9005,1723075200009,true", "line 4: price must be a decimal with at most 8"),
        ("2003,61234.5,0.1,9005", "line 4: expected 7 comma-separated fields"),
        ("2003,61234.5,0.1,9005,9005,1723075200009,true,1", "line 4: expected 7 comma-separated fields"),
        ("2003,61234.5,0.1,9005,9005,1723161600000,true", "line 4: transact_time outside the file's period"),
        ("2003,61234.5,0.1,9006,9005,1723075200009,true", "line 4: last_trade_id must be >= first_trade_id"),
        # Polars would read these as integers: the text checks still refuse them
        ("+2003,61234.5,0.1,9005,9005,1723075200009,true", "line 4: agg_trade_id must be a non-negative integer"),
        ("2003,61234.5,0.1, 9005,9005,1723075200009,true", "line 4: first_trade_id must be a non-negative integer"),
        ("-2003,61234.5,0.1,9005,9005,1723075200009,true", "line 4: agg_trade_id must be a non-negative integer"),
    ],
)
def test_malformed_line_names_file_and_line_and_writes_nothing(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], bad_row: str, message: str
) -> None:
    path = tmp_path / "XRPUSDT-aggTrades-2024-08-08.csv"
    path.write_text(HEADER + csv_text(ROWS[:2], header=False) + bad_row + "\n" + csv_text(ROWS[3:], header=False))
    assert main(["import-trades", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and message in err
    assert stored(data_dir, "XRPUSDT").height == 0
    assert not (data_dir / "trades" / "XRPUSDT").exists()


def test_reader_details(tmp_path: Path) -> None:
    name = parse_file_name("BTCUSDT-aggTrades-2024-02.zip")
    assert name is not None and (name.start_ms, name.end_ms) == (parse_day("2024-02-01"), parse_day("2024-03-01"))
    assert parse_file_name("BTCUSDT-trades-2024-02.zip") is None
    crlf = tmp_path / "a.csv"
    crlf.write_text(csv_text(ROWS, header=True).replace("\n", "\r\n"))
    assert read_agg_trades_file(crlf).height == 4
    blank = tmp_path / "b.csv"
    blank.write_text(csv_text(ROWS[:1], header=True) + "\n" + csv_text(ROWS[1:], header=False))
    with pytest.raises(BulkFileError, match="line 3: expected 7 comma-separated fields"):
        read_agg_trades_file(blank)
    two = tmp_path / "c.zip"
    with zipfile.ZipFile(two, "w") as archive:
        archive.writestr("x.csv", "")
        archive.writestr("y.csv", "")
    with pytest.raises(BulkFileError, match=r"exactly one \.csv"):
        read_agg_trades_file(two)
    with pytest.raises(BulkFileError, match="does not match"):
        verify_checksum(b"abc", "0" * 64 + "  f.zip\n", "f.zip")


def test_import_file_reports_instead_of_raising(tmp_path: Path) -> None:
    store = TradeStore(DataPaths(tmp_path / "d"))
    path = tmp_path / "BTCUSDT-aggTrades-2024-08-08.csv"
    path.write_text("agg,price\n1,2\n")
    result = import_file(store, path)
    assert result.error is not None and "line 1: unexpected header" in result.error and result.written == 0


def test_large_files_are_parsed_in_chunks_with_true_line_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [(3000 + i, f"{100 + i}.5", "0.1", 10 + i, 10 + i, DAY + 1000 * i, "true") for i in range(200)]
    path = tmp_path / "BTCUSDT-aggTrades-2024-08-08.csv"
    path.write_text(csv_text(rows, header=True))
    whole = read_agg_trades_file(path)
    monkeypatch.setattr(bulk, "CHUNK_BYTES", 300)  # ~6 lines per chunk
    assert read_agg_trades_file(path).equals(whole) and whole.height == 200
    rows[150] = (3150, "1.5", "x", 160, 160, DAY + 150_000, "true")
    path.write_text(csv_text(rows, header=True))
    with pytest.raises(BulkFileError, match="line 152: quantity must be a decimal"):
        read_agg_trades_file(path)
    path.write_text(csv_text(rows[:100], header=False) + "1,2,3\n" + csv_text(rows[101:], header=False))
    with pytest.raises(BulkFileError, match="line 101: expected 7 comma-separated fields"):
        read_agg_trades_file(path)
