"""The one guard around yrs: a panic (a BaseException) and a plain error both come out as
YrsError, while Ctrl-C and `sys.exit` pass through untouched. And the one way an update
from outside reaches a Doc (`apply_update`): observers see its origin, as through
pycrdt, and no failure leaves the Doc borrowed or the origin registered."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Doc, Map, TransactionEvent

from blackboard.persistence.yrs_guard import YrsError, apply_update, yrs_guard
from tests.support.regressions import REGRESSIONS, base_doc


def test_a_yrs_panic_becomes_a_plain_error() -> None:
    doc = base_doc()
    with pytest.raises(YrsError) as caught, yrs_guard:
        doc.apply_update(REGRESSIONS["panic-unwrap-on-missing-parent"])
    assert caught.value.kind == "PanicException"
    assert isinstance(caught.value, Exception)
    assert type(caught.value.__cause__).__name__ == "PanicException"


def test_bytes_that_do_not_decode_are_a_yrs_error() -> None:
    with pytest.raises(YrsError) as caught, yrs_guard:
        base_doc().apply_update(b"\x01\x02\x03")
    assert str(caught.value) == str(caught.value.__cause__)


@pytest.mark.parametrize("exit_signal", [KeyboardInterrupt, SystemExit])
def test_ctrl_c_and_exit_pass_through(exit_signal: type[BaseException]) -> None:
    with pytest.raises(exit_signal), yrs_guard:
        raise exit_signal()


def _an_update() -> bytes:
    writer = Doc()
    writer.get("spec", type=Map)["title"] = "rain"
    return writer.get_update()


def test_observers_see_the_origin_and_it_is_forgotten_after() -> None:
    doc = Doc()
    spec = doc.get("spec", type=Map)
    origin = object()
    seen: list[Any] = []
    doc.observe(lambda event: seen.append(doc._origins.get(event.transaction.origin())))
    spec.observe(lambda event: seen.append(event.transaction.origin))
    apply_update(doc, _an_update(), origin)
    assert seen == [origin, origin]
    assert doc._origins == {}
    assert spec.to_py() == {"title": "rain"}


def test_an_observer_failure_comes_out_and_leaves_the_doc_usable() -> None:
    doc = Doc()
    doc.get("spec", type=Map)

    def failing(event: TransactionEvent) -> None:
        raise RuntimeError("observer broke")

    subscription = doc.observe(failing)
    with pytest.raises(ExceptionGroup) as caught:
        apply_update(doc, _an_update(), "client")
    assert [str(e) for e in caught.value.exceptions] == ["observer broke"]
    doc.unobserve(subscription)
    assert doc._origins == {} and doc._exceptions == []
    with doc.transaction():  # not left borrowed by the failed commit
        doc.get("spec", type=Map)["more"] = 1


def test_a_refused_update_leaves_no_origin_and_no_transaction() -> None:
    doc = base_doc()
    with pytest.raises(YrsError), yrs_guard:
        apply_update(doc, REGRESSIONS["panic-unwrap-on-missing-parent"], "client")
    assert doc._origins == {}
    apply_update(doc, _an_update(), "client")  # the doc takes the next update
