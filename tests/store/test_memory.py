"""The in-memory store passes the store contract."""

import pytest

from erpoz import open_store
from erpoz.store import MemoryStore, Store
from store.contract import LedgerContract, MailboxContract, QueueContract, StoreContract
from store.schedule_contract import RateContract, ScheduleContract, SlotContract


class TestMemory(
    StoreContract,
    QueueContract,
    LedgerContract,
    MailboxContract,
    ScheduleContract,
    RateContract,
    SlotContract,
):
    @pytest.fixture
    def store(self) -> Store:
        return MemoryStore()


@pytest.mark.parametrize("url", ["memory", ":memory:", "memory://"])
def test_open_store_memory_urls(url: str) -> None:
    assert isinstance(open_store(url), MemoryStore)


def test_open_store_durability_memory_ignores_the_path(tmp_path) -> None:
    store = open_store(tmp_path / "x.db", durability="memory")
    assert isinstance(store, MemoryStore)
    assert not (tmp_path / "x.db").exists()
