"""`python -m bench.loadgen SPEC_JSON`: run one role (see roles.py) under the runner."""

from __future__ import annotations

import json
import sys

import uvloop

from bench.loadgen.control import Control
from bench.loadgen.roles import ROLES
from blackboard.web.open_files import raise_open_files


async def _main(spec: dict) -> None:
    control = Control()
    await ROLES[spec["role"]](spec, control)
    control.emit("finished")


def main() -> None:
    spec = json.loads(sys.argv[1])
    raise_open_files()
    uvloop.run(_main(spec))


if __name__ == "__main__":
    main()
