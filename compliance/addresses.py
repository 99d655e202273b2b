"""Mail addresses in one canonical form: trimmed, brackets and a trailing dot removed, the
local part lower-cased and the domain in its IDNA (punycode) form; anything invalid is None.

Every source and the directory go through these functions, so that the same person is
always the same address before pseudonymisation.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from compliance.domains import CACHE_SIZE, normalise_domain, split_address, with_exact


def normalise_address(value: object) -> str | None:
    """``' <Alice@Corp.EXAMPLE.> '`` becomes ``'alice@corp.example'``; invalid becomes None."""
    return _normalise_address(value) if isinstance(value, str) else None


# Addresses that are plain ASCII, with one "@", no white space or brackets, a valid
# label-wise domain and no IDNA label: their canonical form is simply their lower case.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_PLAIN_ADDRESS = rf"^[^\s@<>]+@{_LABEL}(?:\.{_LABEL})*$"


def normalise_addresses(values: pd.Series) -> pd.Series:
    """:func:`normalise_address` over a column, the same result, vectorised."""
    array = pa.array(values, type=pa.string(), from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    out = normalise_address_array(array).to_numpy(zero_copy_only=False)
    return pd.Series(out, index=values.index, dtype=object)


def normalise_address_array(values: pa.Array) -> pa.Array:
    """:func:`normalise_address` over an Arrow string array, the same result, vectorised.

    Plain addresses (nearly all of them) are lower-cased by Arrow in one pass; every
    other value (IDN, brackets, spaces, anything odd) goes through the exact scalar
    function once per distinct value. When the array's bytes are all ASCII and none
    spells an IDNA label (the usual chunk, found from its buffer at once), the checks
    per value that only such bytes could fail are skipped.
    """
    if _ascii_without_idna(values):
        lower = pc.ascii_lower(values)
        plain = pc.match_substring_regex(lower, _PLAIN_ADDRESS)
        if (pc.max(pc.binary_length(values)).as_py() or 0) > _MAX_PLAIN_LENGTH:
            plain = pc.and_(plain, _domain_fits(lower))
        plain = plain.fill_null(False)
    else:
        lower = pc.utf8_lower(values)
        plain = pc.and_(
            pc.and_(pc.string_is_ascii(values), pc.match_substring_regex(lower, _PLAIN_ADDRESS)),
            pc.and_(pc.invert(pc.match_substring(lower, "xn--")), _domain_fits(lower)),
        ).fill_null(False)
    out = pc.if_else(plain, lower, pa.scalar(None, pa.string()))
    return with_exact(values, out, plain, normalise_address)


#: An address this long or shorter cannot have a domain of more than 253 characters.
_MAX_PLAIN_LENGTH = 255


def _domain_fits(lower: pa.Array) -> pa.Array:
    """Whether the domain (after the first ``@``) of each address is at most 253 long."""
    at = pc.find_substring(lower, "@")
    return pc.less_equal(pc.subtract(pc.subtract(pc.utf8_length(lower), at), 1), 253)


def _ascii_without_idna(values: pa.Array) -> bool:
    """Whether every byte of a string array's values is ASCII and no ``xn--`` (in any case)
    occurs in them: read from its data buffer in one pass."""
    buffers = values.buffers()
    if len(values) == 0 or buffers[2] is None:
        return True
    data = np.frombuffer(buffers[2], dtype=np.uint8)
    if data.size and int(data.max()) >= 0x80:
        return False
    raw = data.tobytes()
    if b"--" not in raw:  # one fast search, and nearly always the answer
        return True
    return not any(idna in raw for idna in (b"xn--", b"Xn--", b"xN--", b"XN--"))


@lru_cache(maxsize=CACHE_SIZE)  # bounded: the same addresses recur chunk after chunk
def _normalise_address(value: str) -> str | None:
    parts = split_address(value)
    if parts is None:
        return None
    domain = normalise_domain(parts[1])
    if domain is None:
        return None
    return f"{parts[0].lower()}@{domain}"
