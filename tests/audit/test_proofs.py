"""RFC 9162 hashing, inclusion and consistency proofs: known answers from Certificate
Transparency, every proof of small trees against the RFC's own recursive definitions, and
proofs that must fail."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from erpoz.audit._proofs import (
    ProofError,
    consistency_proof,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from erpoz.store import EMPTY_ROOT, MemoryStore, NewRun, node_hash
from erpoz.store._merkle import CompactRange

# RFC 6962 / 9162 test vectors used by Certificate Transparency implementations: the leaf
# inputs and the root of the tree of the first n of them.
CT_INPUTS = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768"
             "696a6b6c6d6e6f"]  # fmt: skip
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_the_compact_range_gives_certificate_transparencys_roots() -> None:
    tree = CompactRange()
    assert tree.root == EMPTY_ROOT == hashlib.sha256(b"").digest()
    for data, root in zip(CT_INPUTS, CT_ROOTS, strict=True):
        tree.append([hashlib.sha256(b"\x00" + bytes.fromhex(data)).digest()])
        assert tree.root.hex() == root


# --- RFC 9162's definitions, written as the RFC writes them (recursively) --------------------
def mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*subproof(m, leaves[:k], whole), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


@pytest.fixture(scope="module")
def tree() -> tuple[MemoryStore, list[bytes]]:
    """A memory store of 300 events (stored nodes at levels 4 and 8) and its leaves."""

    async def build() -> tuple[MemoryStore, list[bytes]]:
        store = MemoryStore()
        writers = [await store.create_run(NewRun(f"r{i}", "f", "fp", "{}"), "me") for i in "ab"]
        for i in range(149):
            for w in writers:
                w.append("note", data={"i": i})
        leaves = sorted(await store.tree_leaves(), key=lambda leaf: leaf[2])
        return store, [leaf[3] for leaf in leaves]

    return asyncio.run(build())


def test_every_inclusion_proof_of_small_trees_is_the_rfcs(
    tree: tuple[MemoryStore, list[bytes]],
) -> None:
    store, leaves = tree

    async def main() -> None:
        for size in [*range(1, 40), 255, 256, 257, 300]:
            root = mth(leaves[:size])
            for index in {*range(min(size, 40)), size - 1}:
                proof = await inclusion_proof(store, index, size)
                assert proof == path(index, leaves[:size]), (index, size)
                assert verify_inclusion(index, size, leaves[index], proof, root)

    asyncio.run(main())


def test_every_consistency_proof_of_small_trees_is_the_rfcs(
    tree: tuple[MemoryStore, list[bytes]],
) -> None:
    store, leaves = tree

    async def main() -> None:
        pairs = [(m, n) for n in range(1, 34) for m in range(n + 1)]
        pairs += [(m, 300) for m in (1, 15, 16, 17, 128, 255, 256, 257, 299, 300)]
        for m, n in pairs:
            proof = await consistency_proof(store, m, n)
            assert proof == (subproof(m, leaves[:n], True) if m else []), (m, n)
            assert verify_consistency(m, n, mth(leaves[:m]), mth(leaves[:n]), proof), (m, n)

    asyncio.run(main())


def test_proofs_that_do_not_fit_fail(tree: tuple[MemoryStore, list[bytes]]) -> None:
    store, leaves = tree

    async def main() -> None:
        n = 300
        root = mth(leaves)
        proof = await inclusion_proof(store, 77, n)
        assert not verify_inclusion(78, n, leaves[77], proof, root)  # another position
        assert not verify_inclusion(77, 100, leaves[77], proof, root)  # another size
        assert not verify_inclusion(77, n, leaves[78], proof, root)  # another leaf
        flipped = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
        assert not verify_inclusion(77, n, leaves[77], flipped, root)
        assert not verify_inclusion(77, n, leaves[77], proof[:-1], root)  # too short
        assert not verify_inclusion(77, n, leaves[77], [*proof, root], root)  # too long

        cons = await consistency_proof(store, 100, n)
        old = mth(leaves[:100])
        assert verify_consistency(100, n, old, root, cons)
        assert not verify_consistency(100, n, mth(leaves[:99]), root, cons)  # another old tree
        rewritten = [*leaves[:50], leaves[51], leaves[50], *leaves[52:]]  # two leaves swapped
        assert not verify_consistency(100, n, old, mth(rewritten), cons)
        assert not verify_consistency(101, n, old, root, cons)
        assert not verify_consistency(100, n, old, root, cons[1:])
        assert not verify_consistency(n, 100, root, old, cons)  # a tree cannot shrink
        with pytest.raises(ProofError):
            await inclusion_proof(store, n, n)
        with pytest.raises(ProofError, match="lacks hashes"):
            await inclusion_proof(store, 5, n + 100)  # leaves the store does not have

    asyncio.run(main())
