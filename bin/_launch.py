"""Start a tool from this checkout: the library from lib/ and the tools folder under the name the wheel
installs it as (``confidently_tools``), whatever is installed in the environment."""

import importlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def launch(module: str) -> None:
    sys.path.insert(0, str(ROOT / "lib"))
    spec = importlib.util.spec_from_file_location("confidently_tools", ROOT / "tools" / "__init__.py",
                                                  submodule_search_locations=[str(ROOT / "tools")])
    package = importlib.util.module_from_spec(spec)
    sys.modules["confidently_tools"] = package
    spec.loader.exec_module(package)
    importlib.import_module(f"confidently_tools.{module}").main()
