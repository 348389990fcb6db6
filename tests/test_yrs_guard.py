"""The one guard around yrs: a panic (a BaseException) and a plain error both come out as
YrsError, while Ctrl-C and `sys.exit` pass through untouched."""

from __future__ import annotations

import pytest

from blackboard.persistence.yrs_guard import YrsError, yrs_guard
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
