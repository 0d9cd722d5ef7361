"""The two functions every implementation under the conformance suite
hosts, with DataFusion's meaning: upper(VARCHAR) and chr(BIGINT), which
fails on a code that is no Unicode scalar value."""


def upper(s):
    return None if s is None else s.upper()


def chr_(code):
    if code is None:
        return None
    if code < 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        raise ValueError(f"invalid Unicode scalar value: {code}")
    if code == 0:
        raise ValueError("null character not permitted")
    return chr(code)


SIGNATURES = {"upper": (upper, ["VARCHAR"], "VARCHAR"), "chr": (chr_, ["BIGINT"], "VARCHAR")}
