"""The CSV reader reads each row once, whichever way it reads the file.

A UTF-8 export goes to Arrow as it is; when Arrow meets a malformed row that is not
UTF-8 (which it cannot hand over), the file is read again, with the bad bytes marked,
from the first row not yet handed on. These tests put such a row after several chunks
were already handed on and check that every good row comes out once, in order, with
every bad row counted once: as the same file in UTF-16, read the other way, gives.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from connectors.textfile import iter_csv, sniff_csv
from tests.conftest import ps_row, write_ps_export

COLUMNS = ["MessageId", "SenderAddress", "RecipientAddress"]


#: Stands for bytes that are not text in the file's encoding.
MARK = "\u00a7"
#: Such bytes: in UTF-8, a byte that starts no character; in UTF-16 LE, a lone surrogate.
BAD = {"utf-8": b"\xff\xfe", "utf-16-le": b"\x00\xd8"}


def _export(path: Path, encoding: str) -> None:
    """1000 rows, u0..u999 as senders, as Export-Csv writes them; then row 450 (past the
    64 KiB the encoding is guessed from) with bad bytes in its sender (a converted field),
    row 500 short, and row 700 short with bad bytes (the row Arrow cannot hand over when
    it reads UTF-8 itself). Rows 300 and 800 hold a genuine U+FFFD in their sender (valid
    text, as an upstream system's replacement writes it), read before and after row 700."""
    rows = [
        ps_row("11/2/2026 10:00:00 AM", f"u{i}@corp.example", "x@partner.example", index=i)
        for i in range(1000)
    ]
    for i in (300, 800):
        rows[i] = ps_row("11/2/2026 10:00:00 AM", f"u{i}\ufffd@corp.example", "x@p.example")
    rows[450] = ps_row("11/2/2026 10:00:00 AM", f"u450{MARK}@corp.example", "x@p.example")
    text = write_ps_export(path, rows).read_bytes().decode("utf-8").split("\r\n")
    header = 2  # the #TYPE line and the header
    text[header + 500] = '"short","row"'
    text[header + 700] = f'"short","row {MARK}"'
    encoded = [line.encode(encoding).replace(MARK.encode(encoding), BAD[encoding]) for line in text]
    bom = b"\xff\xfe" if encoding == "utf-16-le" else b""
    path.write_bytes(bom + "\r\n".encode(encoding).join(encoded))


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le"])
def test_every_good_row_once_when_a_bad_row_comes_late(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "trace.csv"
    _export(path, encoding)
    layout = sniff_csv(path)
    frames, dropped = [], Counter[str]()
    for frame, counts in iter_csv(path, layout, COLUMNS, block_bytes=4096, chunk_rows=64):
        frames.append(frame)
        dropped.update(counts)
    assert len(frames) > 8  # chunks were handed on before the bad row at 700
    got = pd.concat(frames, ignore_index=True)["SenderAddress"].tolist()
    genuine = {300: "u300\ufffd@corp.example", 800: "u800\ufffd@corp.example"}
    expected = [
        genuine.get(i, f"u{i}@corp.example") for i in range(1000) if i not in (450, 500, 700)
    ]
    assert got == expected
    assert dropped == {"bad_encoding": 2, "malformed_row": 1}
