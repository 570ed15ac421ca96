import threading

import pytest

from rds_csi.controller import paginate
from rds_csi.locks import OperationLocks
from rds_csi.status import CsiError


def test_second_holder_is_aborted_naming_the_first() -> None:
    locks = OperationLocks()
    with locks.hold("vol-a", operation="CreateVolume x"):
        with pytest.raises(CsiError) as err, locks.hold("vol-a", operation="DeleteVolume"):
            pass
        assert err.value.code.name == "ABORTED"
        assert "CreateVolume x" in err.value.message
        with locks.hold("vol-b", operation="other"):
            assert locks.busy("vol-b")
    assert not locks.busy("vol-a") and not locks.busy("vol-b")


def test_all_or_nothing() -> None:
    locks = OperationLocks()
    with locks.hold("b", operation="one"):
        with pytest.raises(CsiError), locks.hold("a", "b", operation="two"):
            pass
        assert not locks.busy("a")  # a was not left held


def test_released_on_exception() -> None:
    locks = OperationLocks()
    with pytest.raises(RuntimeError), locks.hold("k", operation="op"):
        raise RuntimeError
    assert not locks.busy("k")


def test_waits_for_a_background_holder_but_not_for_a_foreground_one() -> None:
    locks = OperationLocks()
    entered = threading.Event()
    release = threading.Event()

    def background() -> None:
        with locks.hold("v", operation="monitor", background=True):
            entered.set()
            release.wait(5)

    t = threading.Thread(target=background)
    t.start()
    entered.wait(5)
    with pytest.raises(CsiError), locks.hold("v", operation="rpc"):  # no wait: ABORTED
        pass
    with pytest.raises(CsiError), locks.hold("v", operation="rpc", wait=0.05):  # too short
        pass
    threading.Timer(0.1, release.set).start()
    with locks.hold("v", operation="rpc", wait=5):  # waits for the check to end
        assert locks.busy("v")
        with pytest.raises(CsiError) as exc, locks.hold("v", operation="other", wait=5):
            pass  # a foreground holder is never waited for
        assert "rpc" in str(exc.value)
    t.join()


def test_concurrent_holders_exactly_one_wins() -> None:
    locks = OperationLocks()
    barrier = threading.Barrier(16)
    wins: list[int] = []
    tried = threading.Semaphore(0)
    everyone_tried = threading.Event()

    def worker(i: int) -> None:
        barrier.wait()
        try:
            with locks.hold("same", operation=str(i)):
                wins.append(i)
                tried.release()
                everyone_tried.wait(10)  # hold until every other thread has tried
        except CsiError:
            tried.release()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for _ in range(16):
        assert tried.acquire(timeout=10)
    everyone_tried.set()
    for t in threads:
        t.join()
    assert len(wins) == 1


def _valid(key: str) -> bool:
    return key.startswith("k")


def test_pagination_walks_everything_once() -> None:
    items = [(f"k{i:03d}", i) for i in range(10)]
    seen, token = [], ""
    while True:
        page, token = paginate(items, 3, token, _valid)
        seen.extend(page)
        if not token:
            break
    assert seen == list(range(10))
    assert paginate(items, 0, "", _valid) == (list(range(10)), "")


def test_token_survives_deletion_of_its_item() -> None:
    items = [(f"k{i}", i) for i in range(6)]
    page, token = paginate(items, 2, "", _valid)
    assert page == [0, 1]
    remaining = [it for it in items if it[0] != "k2"]  # the next item was deleted
    page, _ = paginate(remaining, 2, token, _valid)
    assert page == [3, 4]


@pytest.mark.parametrize("token", ["garbage!", "eA", "%%%"])
def test_bad_token_is_aborted(token: str) -> None:
    with pytest.raises(CsiError) as err:
        paginate([("k1", 1)], 1, token, _valid)
    assert err.value.code.name == "ABORTED"


def test_negative_max_entries() -> None:
    with pytest.raises(CsiError) as err:
        paginate([], -1, "", _valid)
    assert err.value.code.name == "INVALID_ARGUMENT"
