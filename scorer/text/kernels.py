"""Compiled text kernels (numba): clean, tokenize and look up in one pass over Arrow buffers.

A row's text is one or more Arrow string columns joined by one space (nulls as ""), read
straight from the columns' byte buffers: no joined copy, no cleaned copy, no token strings.
The pass applies the reference cleaning byte by byte (a run of non-ASCII bytes becomes one
space, ASCII is lowercased, punctuation, digits and ``\\r\\t\\n`` become spaces, but for the
kept marks of ``tables``) and spaCy's rules on the cleaned stream (see ``scorer.text.encode``).
Invalid UTF-8 only ever sits inside a non-ASCII run, which becomes one space either way, so
raw bytes give exactly the tokens of the lossily decoded text, and the run is where the row
is flagged as invalid.

``mode`` picks what a row's tokens become:

* ``IDS``: table values written into a ``[rows, max_len]`` matrix; scanning stops at
  ``limit`` tokens (only UTF-8 validity is still checked past it), and no token is kept
  beyond the table's longest key, so a 1 GB cell costs no memory beyond the cell itself;
* ``COUNT`` then ``STRINGS``: token counts and byte sizes per row, then the tokens' bytes,
  from which ``scorer.text.encode`` builds an Arrow string array.

The kernels release the GIL, so callers run row ranges on plain threads.
"""

from __future__ import annotations

import functools
import string

import numba as nb
import numpy as np

IDS, COUNT, STRINGS = 0, 1, 2
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)

# Cleaned value of each ASCII byte, and its class on the cleaned stream: 0 part of a word,
# 1 the space " " (which a word absorbs once), 2 other whitespace (a token of its own), 3 a
# kept mark (a token of its own, one byte long, absorbing one " " like a word).
_STRIPPED = string.punctuation + string.digits + "\r\t\n"
WORD, SPACE, WHITESPACE, MARK = 0, 1, 2, 3


@functools.cache
def tables(marks: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(cleaned value, class) of each ASCII byte; ``marks``: punctuation kept, each character
    a token of its own (``TokenizerConfig.marks``)."""
    clean = np.arange(128, dtype=np.uint8)
    for ch in string.ascii_uppercase:
        clean[ord(ch)] = ord(ch.lower())
    for ch in _STRIPPED:
        if ch not in marks:
            clean[ord(ch)] = ord(" ")
    kind = np.full(128, WORD, dtype=np.uint8)
    for code in range(128):
        c = chr(code)
        if c.isspace() and c not in "\r\t\n":
            kind[code] = SPACE if c == " " else WHITESPACE
    for ch in marks:
        kind[ord(ch)] = MARK
    clean.flags.writeable = False
    kind.flags.writeable = False
    return clean, kind


@nb.njit(inline="always")
def fnv1a(data, start, stop, h):
    for i in range(start, stop):
        h = (h ^ np.uint64(data[i])) * _FNV_PRIME
    return h


@nb.njit(inline="always")
def _non_ascii_run(data, i, end):
    """(index after the run of bytes >= 0x80 starting at i, whether it is invalid UTF-8)."""
    bad = False
    while i < end and data[i] >= 0x80:
        lead = data[i]
        if 0xC2 <= lead <= 0xDF:
            need, low, high = 1, 0x80, 0xBF
        elif 0xE0 <= lead <= 0xEF:
            need = 2
            low = 0xA0 if lead == 0xE0 else 0x80
            high = 0x9F if lead == 0xED else 0xBF
        elif 0xF0 <= lead <= 0xF4:
            need = 3
            low = 0x90 if lead == 0xF0 else 0x80
            high = 0x8F if lead == 0xF4 else 0xBF
        else:
            bad = True
            i += 1
            continue
        i += 1
        for k in range(need):
            if i >= end:
                bad = True
                break
            b = data[i]
            ok = low <= b <= high if k == 0 else 0x80 <= b <= 0xBF
            if not ok:
                bad = True
                break
            i += 1
    return i, bad


@nb.njit(inline="always")
def _validate(data, i, end, bad):
    """Whether invalid UTF-8 was seen so far or occurs in data[i:end]."""
    while i < end:
        if data[i] < 0x80:
            i += 1
        else:
            i, run_bad = _non_ascii_run(data, i, end)
            bad = bad or run_bad
    return bad


@nb.njit(inline="always")
def _lookup(h, scratch, size, keys, key_off, key_len, slot_val, default, max_key):
    """The table value of the token scratch[:size] (whose hash is h), or ``default``."""
    if size > max_key:
        return default
    mask = len(slot_val) - 1
    slot = np.int64(h & np.uint64(mask))
    while True:
        length = key_len[slot]
        if length < 0:
            return default
        if length == size:
            start = key_off[slot]
            same = True
            for k in range(size):
                if keys[start + k] != scratch[k]:
                    same = False
                    break
            if same:
                return slot_val[slot]
        slot = (slot + 1) & mask


@nb.njit(inline="always")
def _put(ids, ring, row, k, value, head, tail):
    """Token ``k``'s id: one of the first ``head`` goes in place; later ones go round a ring
    of the last ``tail`` (placed after the head when the row ends)."""
    if k < head:
        ids[row, k] = value
    elif tail > 0:
        ring[(k - head) % tail] = value


@nb.njit(inline="always")
def _place_tail(ids, ring, row, n_tok, head, tail):
    """Move the ring's tokens in order after the head; returns the row's length."""
    if tail == 0 or n_tok <= head:
        return min(n_tok, head)
    kept = min(n_tok - head, tail)
    first = (n_tok - head - kept) % tail
    for j in range(kept):
        ids[row, head + j] = ring[(first + j) % tail]
    return head + kept


@nb.njit(inline="always")
def _finish(
    mode, is_ws, keep_ws, limit, row, n_tok, tok, tok_pos, h, size, scratch,
    keys, key_off, key_len, slot_val, default, max_key,
    piece_off, piece_len, piece_val, ids, token_byte, ring, head, tail,
):  # fmt: skip
    """Account for one finished token; a special case expands into its pieces. Returns
    (tokens so far, token index, whether the token was dropped)."""
    if is_ws and not keep_ws:
        return n_tok, tok, True
    value = _lookup(h, scratch, size, keys, key_off, key_len, slot_val, default, max_key)
    if value >= 0:
        if mode == IDS:
            _put(ids, ring, row, n_tok, value, head, tail)
        elif mode == STRINGS:
            token_byte[tok] = tok_pos
            tok += 1
        return n_tok + 1, tok, False
    start = tok_pos
    j = -value - 1
    for p in range(piece_off[j], piece_off[j + 1]):
        if n_tok >= limit:
            break
        if mode == IDS:
            _put(ids, ring, row, n_tok, piece_val[p], head, tail)
        elif mode == STRINGS:
            token_byte[tok] = start
            tok += 1
        start += piece_len[p]
        n_tok += 1
    return n_tok, tok, False


def _make_tokenizer(mode: int):
    """The row kernel for one ``mode``, compiled with the mode as a constant."""

    @nb.njit(nogil=True, cache=True)
    def kernel(
        datas, offsets, valids, lo, hi, keep_ws, max_tokens, tail, clean, kind,
        keys, key_off, key_len, slot_val, default, max_key, piece_off, piece_len, piece_val,
        ids, counts, nbytes, invalid, out_bytes, byte_start, row_token, token_byte,
    ):  # fmt: skip
        """Tokens of rows [lo, hi) (see the module docstring). ``slot_val`` is a token's
        value, or ``-(j + 1)`` for special case ``j`` (pieces ``piece_*[piece_off[j]:]``).
        IDS keeps the first ``max_tokens - tail`` and the last ``tail`` tokens of a row: with
        no tail, scanning stops at ``max_tokens``; with one, the whole row is read, its last
        tokens kept in a ring (memory stays that of the row's ids)."""
        scratch = np.empty(max_key + 1, dtype=np.uint8)
        head = max_tokens - tail
        ring = np.empty(max(tail, 1), dtype=np.int64)
        limit = max_tokens if tail == 0 else np.iinfo(np.int64).max
        for row in range(lo, hi):
            n_tok = 0
            pos = byte_start[row] if mode == STRINGS else 0
            tok = row_token[row] if mode == STRINGS else 0
            state = 0  # 0 nothing pending, 1 a word, 2 a whitespace run, 3 a mark
            size = 0  # true length of the pending token
            h = _FNV_OFFSET
            tok_pos = pos  # where the pending token's bytes start in out_bytes
            bad = False
            done = False
            for col in range(len(datas)):
                data = datas[col]
                i, end = 0, 0
                if valids[col][row]:
                    i, end = offsets[col][row], offsets[col][row + 1]
                if done:
                    bad = _validate(data, i, end, bad)
                    continue
                sep = col > 0  # the space that joins two columns
                while sep or i < end:
                    if sep:
                        sep = False
                        ch = np.uint8(32)
                    elif data[i] >= 0x80:
                        i, run_bad = _non_ascii_run(data, i, end)
                        bad = bad or run_bad
                        ch = np.uint8(32)
                    else:
                        ch = clean[data[i]]
                        i += 1
                        if kind[ch] == WORD or kind[ch] == MARK:
                            # A pending token ends here, unless this byte continues a word.
                            if state == 2 or state == 3 or (state == 1 and kind[ch] == MARK):
                                n_tok, tok, dropped = _finish(
                                    mode, state == 2, keep_ws, limit, row, n_tok, tok, tok_pos,
                                    h, size, scratch, keys, key_off, key_len, slot_val, default,
                                    max_key, piece_off, piece_len, piece_val, ids, token_byte,
                                    ring, head, tail,
                                )  # fmt: skip
                                if dropped:
                                    pos = tok_pos
                                state = 0
                                if n_tok >= limit:
                                    done = True
                                    break
                            if kind[ch] == MARK:
                                state, size, h, tok_pos = 3, 1, _FNV_OFFSET, pos
                                scratch[0] = ch
                                if mode == STRINGS:
                                    out_bytes[pos] = ch
                                if mode != IDS:
                                    pos += 1
                                h = (h ^ np.uint64(ch)) * _FNV_PRIME
                                continue
                            if state == 0:
                                state, size, h, tok_pos = 1, 0, _FNV_OFFSET, pos
                            # This byte and the rest of the word, in a tight loop.
                            while True:
                                if size <= max_key:
                                    scratch[size] = ch
                                if mode == STRINGS:
                                    out_bytes[pos] = ch
                                if mode != IDS:
                                    pos += 1
                                size += 1
                                h = (h ^ np.uint64(ch)) * _FNV_PRIME
                                if i >= end or data[i] >= 0x80:
                                    break
                                ch = clean[data[i]]
                                if kind[ch] != WORD:
                                    break
                                i += 1
                            continue
                    # A whitespace byte: it ends a word or mark, which absorbs one " ".
                    if state == 1 or state == 3:
                        n_tok, tok, _ = _finish(
                            mode, False, keep_ws, limit, row, n_tok, tok, tok_pos, h, size,
                            scratch, keys, key_off, key_len, slot_val, default, max_key,
                            piece_off, piece_len, piece_val, ids, token_byte, ring, head, tail,
                        )  # fmt: skip
                        state = 0
                        if n_tok >= limit:
                            done = True
                            break
                        if ch == 32:
                            continue
                    if state == 0:
                        state, size, h, tok_pos = 2, 0, _FNV_OFFSET, pos
                    if size <= max_key:
                        scratch[size] = ch
                    # A whitespace run that will be dropped never reaches out_bytes: its
                    # row's share of out_bytes (counted without it) has no room for it.
                    if mode == STRINGS and keep_ws:
                        out_bytes[pos] = ch
                    if mode != IDS and keep_ws:
                        pos += 1
                    size += 1
                    h = (h ^ np.uint64(ch)) * _FNV_PRIME
                if done:
                    bad = _validate(data, i, end, bad)
            if state != 0 and not done:
                n_tok, tok, dropped = _finish(
                    mode, state == 2, keep_ws, limit, row, n_tok, tok, tok_pos, h, size,
                    scratch, keys, key_off, key_len, slot_val, default, max_key,
                    piece_off, piece_len, piece_val, ids, token_byte, ring, head, tail,
                )  # fmt: skip
                if dropped:
                    pos = tok_pos
            if mode == IDS:
                n_tok = _place_tail(ids, ring, row, n_tok, head, tail)
            counts[row] = n_tok
            invalid[row] = bad
            if mode == COUNT:
                nbytes[row] = pos
        return 0

    return kernel


tokenize_ids = _make_tokenizer(IDS)
count_tokens = _make_tokenizer(COUNT)
write_tokens = _make_tokenizer(STRINGS)


@nb.njit(nogil=True, cache=True)
def invalid_rows(data, offsets, valid, out):
    """Which values of one string column hold invalid UTF-8."""
    for row in range(len(out)):
        if valid[row]:
            out[row] = _validate(data, offsets[row], offsets[row + 1], False)
    return 0


@nb.njit(nogil=True, cache=True)
def hash_rows(datas, offsets, valids, lo, hi, out):
    """FNV-1a 64 of each row's joined raw text (the fingerprint of a training row)."""
    ncols = len(datas)
    for row in range(lo, hi):
        h = _FNV_OFFSET
        for col in range(ncols):
            if col > 0:
                h = (h ^ np.uint64(32)) * _FNV_PRIME
            if valids[col][row]:
                h = fnv1a(datas[col], offsets[col][row], offsets[col][row + 1], h)
        out[row] = h
    return 0


def fnv1a_bytes(data: bytes) -> int:
    """The kernels' hash of one byte string (to build lookup tables in Python)."""
    h = int(_FNV_OFFSET)
    for byte in data:
        h = ((h ^ byte) * int(_FNV_PRIME)) & 0xFFFFFFFFFFFFFFFF
    return h
