"""Inclusion and consistency proofs over the store's Merkle tree, as RFC 9162 (Certificate
Transparency v2, sections 2.1.3 and 2.1.4) defines them.

A proof is a list of subtree hashes. Which subtrees is a matter of sizes alone
(:func:`inclusion_ranges`, :func:`consistency_ranges`); their hashes come from the store
(:func:`subtree_hash`: stored nodes, or at most 8 hashes of the level below a stored one). The
checks (:func:`verify_inclusion`, :func:`verify_consistency`) need nothing but the hashes, so an
auditor runs them without the database.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ErpozError
from ..store import NODE_STRIDE, MerkleLog, fold_right, node_hash

Range = tuple[int, int]
"""``[start, end)``: leaves of a subtree."""


class ProofError(ErpozError):
    """A proof cannot be made: the sizes do not fit, or the stored tree lacks a hash."""

    retryable = False


def _split(size: int) -> int:
    """The largest power of two smaller than ``size`` (> 1): where RFC 9162 splits a tree."""
    return 1 << ((size - 1).bit_length() - 1)


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The subtrees whose hashes prove leaf ``index`` is in the tree of ``size`` leaves
    (RFC 9162 ``PATH``), from the leaf's sibling up to the root's other child."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
    siblings: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            siblings.append((lo + k, hi))
            hi = lo + k
        else:
            siblings.append((lo, lo + k))
            lo += k
    return siblings[::-1]


def consistency_ranges(old: int, new: int) -> list[Range]:
    """The subtrees whose hashes prove the tree of ``old`` leaves is a prefix of the tree of
    ``new`` leaves (RFC 9162 ``PROOF``); empty when ``old`` is 0 or equals ``new``."""
    if not 0 <= old <= new:
        raise ProofError(f"a tree of {old} leaves cannot be a prefix of one of {new}")
    if old in (0, new):
        return []
    stack: list[Range] = []
    lo, hi, m, whole = 0, new, old, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            stack.append((lo + k, hi))
            hi = lo + k
        else:
            stack.append((lo, lo + k))
            m -= k
            lo += k
            whole = False
    if not whole:
        stack.append((lo, hi))
    return stack[::-1]


def perfect_parts(start: int, end: int) -> list[tuple[int, int]]:
    """``[start, end)`` as complete subtrees ``(first leaf, level)``, largest first: a range
    of a proof hashes to their :func:`fold_right`."""
    parts = []
    while start < end:
        level = (end - start).bit_length() - 1
        while start % (1 << level):
            level -= 1
        parts.append((start, level))
        start += 1 << level
    return parts


async def subtree_hash(store: MerkleLog, start: int, end: int) -> bytes:
    """``MTH`` of the leaves ``[start, end)`` from what the store keeps."""
    out = []
    for first, level in perfect_parts(start, end):
        base = level - level % NODE_STRIDE
        count = 1 << (level - base)
        index = first >> base
        hashes = await store.tree_hashes(base, index, index + count)
        if len(hashes) != count:
            raise ProofError(
                f"the store's Merkle tree lacks hashes of leaves {first}…"
                f"{first + (1 << level) - 1} (level {base}: {len(hashes)} of {count}); it was "
                "damaged, or the tree is smaller"
            )
        while len(hashes) > 1:
            hashes = [node_hash(a, b) for a, b in zip(hashes[0::2], hashes[1::2], strict=True)]
        out.append(hashes[0])
    return fold_right(out)


async def inclusion_proof(store: MerkleLog, index: int, size: int) -> list[bytes]:
    """The RFC 9162 inclusion proof of leaf ``index`` in the store's tree of ``size`` leaves
    (``size`` may be an older size of the tree: complete subtrees never change)."""
    return [await subtree_hash(store, a, b) for a, b in inclusion_ranges(index, size)]


async def consistency_proof(store: MerkleLog, old: int, new: int) -> list[bytes]:
    """The RFC 9162 consistency proof between the store's tree at ``old`` and at ``new``
    leaves."""
    return [await subtree_hash(store, a, b) for a, b in consistency_ranges(old, new)]


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """The root an inclusion proof leads to (RFC 9162 2.1.3.2), ``None`` when the proof does
    not have the shape a tree of ``size`` leaves gives it."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``path`` proves ``leaf`` is leaf ``index`` of the tree of ``size`` leaves whose
    root is ``root``."""
    return root_from_inclusion(index, size, leaf, path) == root


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]
) -> bool:
    """Whether ``path`` proves the tree of ``old`` leaves (root ``old_root``) is a prefix of
    the tree of ``new`` leaves (root ``new_root``): RFC 9162 2.1.4.2."""
    if not 0 <= old <= new:
        return False
    if old == new:
        return not path and old_root == new_root
    if old == 0:
        return not path
    if not path:
        return False
    proof = list(path)
    if old & (old - 1) == 0:  # a power of two: the old root is itself a node of the new tree
        proof.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
