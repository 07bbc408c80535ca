"""The public API is exactly what ``__all__`` says, and importing needs no optional extra."""

from __future__ import annotations

import subprocess
import sys

import callboard
import callboard.registry


def test_all_lists_exactly_the_public_names() -> None:
    for module in (callboard, callboard.registry):
        public = {n for n in vars(module) if not n.startswith("_")} - {"annotations"}
        imported_modules = {n for n in public if type(getattr(module, n)).__name__ == "module"}
        assert set(module.__all__) == (public - imported_modules) | {"__version__"} & set(module.__all__)


def test_import_without_redis_and_clear_error_on_use() -> None:
    code = (
        "import sys; sys.modules['redis'] = None; sys.modules['redis.asyncio'] = None\n"
        "import callboard\n"
        "try:\n"
        "    callboard.RedisSessionKVStore(url='redis://x')\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'callboard[redis]'" in out.stdout
