"""The contract every alpha factor implements.

A calculator turns the trailing market data of one sealed 5-minute window into target weights per symbol. It is
an object (not a function) so it can carry parameters and be discovered, named and weighted from configuration.
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import sys
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from factors.data_view import AlphaDataView

Weights = dict[str, float] | pl.DataFrame


class AlphaCalculatorBase(ABC):
    """Base class of alpha factors.

    - `name`: unique across all calculators (lowercase, digits, _); it names the Dagster asset `factor_<name>` and
      the configuration keys. A class attribute usually; an instance may set its own (parameterised factors).
    - `mutates_inputs`: set True if `run` changes the frames or view it is given; the engine then hands it a private
      deep copy so it cannot disturb other calculators running at the same time.
    - `run(view)`: weights per strategy symbol (`btc-usdt`), as a dict or a Polars frame [symbol, weight]. Scale does
      not matter: the engine normalises each calculator's vector to Σ|w| = 1 before applying configured weights.
    """

    name: str = ""
    mutates_inputs: bool = False

    @abstractmethod
    def run(self, view: AlphaDataView) -> Weights:
        """Weights for the window that `view` ends at."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle by module name and file, so calculators loaded from any folder can run in worker processes."""
        cls = type(self)
        if "<locals>" in cls.__qualname__:
            raise pickle.PicklingError(
                f"{cls.__qualname__} is defined inside a function; other processes can only load module-level classes"
            )
        module = sys.modules.get(cls.__module__)
        source = getattr(module, "__file__", None)
        return (_rebuild, (cls.__module__, source, cls.__qualname__, self.__dict__.copy()))


def _rebuild(module_name: str, source: str | None, qualname: str, state: dict[str, Any]) -> AlphaCalculatorBase:
    """Recreate a calculator in another process: import its module by name, else load it from its file."""
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            if source is None:
                raise
            spec = importlib.util.spec_from_file_location(module_name, source)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load calculator module {module_name!r} from {source}") from None
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
    obj: object = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, AlphaCalculatorBase)):
        raise pickle.UnpicklingError(f"{module_name}.{qualname} is no longer a calculator class")
    instance = obj.__new__(obj)
    instance.__dict__.update(state)
    return instance
