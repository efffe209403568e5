"""PruneConfig (tokprune.json): round-trip and validation messages."""

from __future__ import annotations

import json

import pytest

from onnx_tokprune.config import CONFIG_NAME, ConfigError, LayerRule, PruneConfig


def _data(rule="threshold", layers=None, **top):
    if layers is None:
        layers = {
            "threshold": [{"layer": 1, "threshold": 0.0041}, {"layer": 3, "threshold": 0.0105}],
            "rank_bins": [{"layer": 0, "bin_mask": [1, 1, 0, 1, 0]}, {"layer": 2, "bin_mask": [1, 0, 0, 0, 1]}],
            "top_k": [{"layer": 1, "keep_ratio": 0.5}, {"layer": 2, "keep_ratio": 1}],
        }[rule]
    data = {"version": 1, "method": "calibrated", "rule": rule, "score_normalizer": "fixed", "normalizer_length": 128,
            "layers": layers, "provenance": {"tool": "test"}}
    data.update(top)
    return data


def _write(tmp_path, payload) -> object:
    path = tmp_path / CONFIG_NAME
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


# ---------------------------------------------------------------------------------------------- valid


@pytest.mark.parametrize("rule", ["threshold", "rank_bins", "top_k"])
def test_round_trip_through_save_and_load(tmp_path, rule):
    cfg = PruneConfig.from_json(_data(rule, score_normalizer="length", normalizer_length=64, method="ltp"))
    written = cfg.save(tmp_path)
    assert written == tmp_path / CONFIG_NAME
    assert written.is_file()
    # no temp file left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_NAME]
    again = PruneConfig.load(tmp_path)  # a directory holding tokprune.json
    assert again == cfg
    assert PruneConfig.load(written, num_hidden_layers=4) == cfg  # the file itself
    assert again.to_json() == cfg.to_json()
    assert json.loads(written.read_text()) == cfg.to_json()
    assert again.score_normalizer == "length" and again.normalizer_length == 64 and again.method == "ltp"
    assert again.provenance == {"tool": "test"}


def test_parsed_values():
    cfg = PruneConfig.from_json(_data("rank_bins"))
    assert cfg.pruning_layers == (0, 2)
    assert cfg.rule_for(2) == LayerRule(layer=2, bin_mask=(1, 0, 0, 0, 1))
    assert cfg.rule_for(1) is None
    assert cfg.normalizer_constant() == 128.0
    assert cfg.rule_for(0).op_params() == (0.0, (1, 1, 0, 1, 0), 1.0)
    top = PruneConfig.from_json(_data("top_k", score_normalizer="length"))
    assert top.normalizer_constant() is None
    assert top.rule_for(1).op_params() == (0.0, (1,), 0.5)
    thr = PruneConfig.from_json(_data("threshold"))
    assert thr.rule_for(3).op_params() == (0.0105, (1,), 1.0)


def test_keep_ratio_one_and_threshold_zero_are_valid():
    PruneConfig.from_json(_data("top_k", layers=[{"layer": 0, "keep_ratio": 1.0}]))
    PruneConfig.from_json(_data("threshold", layers=[{"layer": 0, "threshold": 0}]))


# ---------------------------------------------------------------------------------------------- invalid


BAD_CASES = {
    "unknown top-level key": (_data(thresholds=[0.1]), ["unknown key", "thresholds"]),
    "unknown per-layer key": (_data(layers=[{"layer": 1, "threshold": 0.1, "gate": 1}]), ["layers[0]", "unknown key", "gate"]),
    "threshold for top_k": (_data("top_k", layers=[{"layer": 1, "threshold": 0.1}]), ["'top_k'", "keep_ratio", "threshold"]),
    "keep_ratio for threshold": (_data("threshold", layers=[{"layer": 1, "keep_ratio": 0.5}]), ["'threshold'", "keep_ratio"]),
    "two parameters": (
        _data("threshold", layers=[{"layer": 1, "threshold": 0.1, "keep_ratio": 0.5}]),
        ["needs exactly", "'threshold'"],
    ),
    "no parameter": (_data("rank_bins", layers=[{"layer": 1}]), ["needs exactly", "bin_mask"]),
    "bin_mask lengths differ": (
        _data("rank_bins", layers=[{"layer": 0, "bin_mask": [1, 0, 1]}, {"layer": 2, "bin_mask": [1, 0, 1, 1]}]),
        ["same length", "[3, 4]"],
    ),
    "bin_mask value 2": (_data("rank_bins", layers=[{"layer": 0, "bin_mask": [1, 2, 0]}]), ["bin_mask", "0/1", "2"]),
    "bin_mask empty": (_data("rank_bins", layers=[{"layer": 0, "bin_mask": []}]), ["bin_mask", "non-empty"]),
    "bin_mask not a list": (_data("rank_bins", layers=[{"layer": 0, "bin_mask": "1010"}]), ["bin_mask", "list"]),
    "keep_ratio 0": (_data("top_k", layers=[{"layer": 0, "keep_ratio": 0}]), ["keep_ratio", "(0, 1]", "0.0"]),
    "keep_ratio 1.5": (_data("top_k", layers=[{"layer": 0, "keep_ratio": 1.5}]), ["keep_ratio", "(0, 1]", "1.5"]),
    "keep_ratio negative": (_data("top_k", layers=[{"layer": 0, "keep_ratio": -0.5}]), ["keep_ratio", "(0, 1]"]),
    "negative threshold": (_data("threshold", layers=[{"layer": 0, "threshold": -0.01}]), ["threshold", ">= 0", "-0.01"]),
    "threshold not a number": (_data("threshold", layers=[{"layer": 0, "threshold": "0.1"}]), ["threshold", "must be a number"]),
    "layers decreasing": (
        _data("threshold", layers=[{"layer": 3, "threshold": 0.1}, {"layer": 1, "threshold": 0.2}]),
        ["increasing order", "[3, 1]"],
    ),
    "layers duplicated": (
        _data("threshold", layers=[{"layer": 1, "threshold": 0.1}, {"layer": 1, "threshold": 0.2}]),
        ["once each", "[1, 1]"],
    ),
    "layers empty": (_data(layers=[]), ["layers is empty"]),
    "layers not a list": (_data(layers={"layer": 1, "threshold": 0.1}), ["layers must be a list"]),
    "layer entry without layer": (_data(layers=[{"threshold": 0.1}]), ["layers[0]", "'layer'"]),
    "layer not an integer": (_data(layers=[{"layer": "1", "threshold": 0.1}]), ["layers[0]", "layer must be an integer"]),
    "layer bool": (_data(layers=[{"layer": True, "threshold": 0.1}]), ["layer must be an integer"]),
    "negative layer": (_data(layers=[{"layer": -1, "threshold": 0.1}]), ["layer=-1", "non-negative"]),
    "unknown rule": ({**_data("threshold"), "rule": "ltp_threshold"}, ["rule 'ltp_threshold' is unknown"]),
    "unknown normalizer": (_data(score_normalizer="mean"), ["score_normalizer 'mean' is unknown", "'fixed'", "'length'"]),
    "unknown method": (_data(method="magic"), ["method 'magic' is unknown"]),
    "bad normalizer_length": (_data(normalizer_length=0), ["normalizer_length", "positive integer"]),
    "unsupported version": (_data(version=2), ["version 2", "not supported"]),
    "missing rule": ({"layers": [{"layer": 0, "threshold": 0.1}]}, ["missing key 'rule'"]),
    "missing layers": ({"rule": "threshold"}, ["missing key 'layers'"]),
    "not an object": ([1, 2, 3], ["JSON object"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_config_from_json(case):
    data, needles = BAD_CASES[case]
    with pytest.raises(ConfigError) as info:
        PruneConfig.from_json(data)
    for needle in needles:
        assert needle in str(info.value), (case, str(info.value))


@pytest.mark.parametrize("case", ["unknown top-level key", "bin_mask value 2", "layers duplicated", "unknown rule"])
def test_bad_config_from_file_names_the_file(tmp_path, case):
    data, needles = BAD_CASES[case]
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        PruneConfig.load(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_direct_construction_is_validated():
    with pytest.raises(ConfigError, match="keep_ratio must be in"):
        PruneConfig(rule="top_k", layers=(LayerRule(0, keep_ratio=0.0),))
    with pytest.raises(ConfigError, match="threshold must be a finite number"):
        PruneConfig(rule="threshold", layers=(LayerRule(0, threshold=float("nan")),))
    with pytest.raises(ConfigError, match="threshold must be a finite number"):
        PruneConfig(rule="threshold", layers=(LayerRule(0, threshold=float("inf")),))


def test_layer_out_of_range(tmp_path):
    data = _data("threshold", layers=[{"layer": 1, "threshold": 0.1}, {"layer": 4, "threshold": 0.2}])
    path = _write(tmp_path, data)
    # without a model depth the file is fine
    assert PruneConfig.load(path).pruning_layers == (1, 4)
    with pytest.raises(ConfigError) as info:
        PruneConfig.load(path, num_hidden_layers=4)
    message = str(info.value)
    assert "out of range" in message and "[4]" in message and "4 layers" in message and str(path) in message
    # the last existing layer is accepted
    path = _write(tmp_path, _data("threshold", layers=[{"layer": 3, "threshold": 0.1}]))
    assert PruneConfig.load(path, num_hidden_layers=4).pruning_layers == (3,)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        PruneConfig.load(tmp_path / "nope.json")
    assert "not found" in str(info.value) and "nope.json" in str(info.value)
    # a directory without tokprune.json
    with pytest.raises(ConfigError) as info:
        PruneConfig.load(tmp_path)
    assert "not found" in str(info.value) and CONFIG_NAME in str(info.value)


def test_invalid_json(tmp_path):
    path = _write(tmp_path, '{"rule": "threshold", "layers": [')
    with pytest.raises(ConfigError) as info:
        PruneConfig.load(path)
    assert "not valid JSON" in str(info.value) and str(path) in str(info.value)


# JSON booleans are ints in Python: they must not pass as a normaliser length or a bin flag.
def test_normalizer_length_bool_is_rejected():
    try:
        cfg = PruneConfig.from_json(_data(normalizer_length=True))
    except ConfigError as e:
        assert "normalizer_length" in str(e)
        return
    raise AssertionError(f"accepted normalizer_length={cfg.normalizer_length!r} (N = {cfg.normalizer_constant()})")


def test_bin_mask_bool_or_float_is_rejected():
    try:
        cfg = PruneConfig.from_json(_data("rank_bins", layers=[{"layer": 0, "bin_mask": [True, 0.0, 1]}]))
    except ConfigError as e:
        assert "bin_mask" in str(e)
        return
    raise AssertionError(f"accepted bin_mask={cfg.layers[0].bin_mask!r}")
