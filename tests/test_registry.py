import pytest
from confidently.errors import InvalidInput, UsageError
from confidently.missingness import list_units, make_features
from confidently.registry import Registry


def test_registering_and_looking_up_by_name():
    fills = Registry("fill")
    fills.register("black")(lambda: 0)
    fills.register("mean")(lambda: 1)
    assert fills.names() == ["black", "mean"] and "black" in fills and fills.get("mean")() == 1
    with pytest.raises(UsageError, match="unknown fill 'grey'; choose black, mean"):
        fills.get("grey")
    strict = Registry("trigger type", InvalidInput)
    with pytest.raises(InvalidInput):
        strict.get("hat")


def test_tools_share_it():
    assert list_units() == ["boxes", "patch", "superpixel"]
    with pytest.raises(UsageError, match="choose boxes, patch, superpixel"):
        make_features("hexagon", None)


def test_resolve_takes_a_name_a_dotted_module_path_or_a_python_class():
    policies = Registry("policy")
    policies.register("grid")("grid policy")
    assert policies.resolve("grid") == policies.resolve("threedb.policies.grid") == "grid policy"
    assert policies.resolve("threedb.policies.grid_search", alias=lambda n: n.replace("_search", "")) == "grid policy"
    assert policies.resolve("py:collections:OrderedDict") is __import__("collections").OrderedDict
    with pytest.raises(UsageError, match="policy py:nowhere:Thing: cannot import"):
        policies.resolve("py:nowhere:Thing")
    with pytest.raises(UsageError, match="unknown policy 'random'; choose grid"):
        policies.resolve("threedb.policies.random")
