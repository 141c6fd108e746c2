import numpy as np
import pytest
from gymnasium import spaces

from simulators import Categorical, Continuous, Integer, ParamError, ParamSpace, Proportions, UserError
from simulators.space import load_target_file


@pytest.fixture
def space() -> ParamSpace:
    return ParamSpace(
        speed=Continuous(0.0, 10.0),
        lanes=Integer(1, 4),
        town=Categorical(("Town01", "Town02")),
        weather=Proportions(("clear", "rain", "fog")),
    )


def test_validate_normalises(space):
    psi = space.validate({"speed": 3, "lanes": 2.0, "town": "Town02", "weather": {"clear": 0.5, "rain": 0.5}})
    assert psi == {"speed": 3.0, "lanes": 2, "town": "Town02", "weather": {"clear": 0.5, "rain": 0.5, "fog": 0.0}}
    assert space.validate({**psi, "weather": [0.2, 0.3, 0.5]})["weather"]["fog"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"speed": 12}, "parameter 'speed': expected a number in [0, 10], got 12"),
        ({"speed": "fast"}, "parameter 'speed': expected a number, got 'fast'"),
        ({"speed": float("nan")}, "parameter 'speed': expected a finite number"),
        ({"lanes": 1.5}, "parameter 'lanes': expected an integer, got 1.5"),
        ({"lanes": 9}, "parameter 'lanes': expected an integer in [1, 4], got 9"),
        ({"town": "Town03"}, "parameter 'town': expected one of ['Town01', 'Town02'], got 'Town03'"),
        (
            {"weather": {"clear": 0.5, "rain": 0.6}},
            "parameter 'weather': probabilities must sum to 1, got a sum of 1.1",
        ),
        ({"weather": {"clear": 1.5, "rain": -0.5}}, "parameter 'weather': probabilities must be >= 0, got rain=-0.5"),
        ({"weather": {"clear": 1.0, "snow": 0.0}}, "unknown choice 'snow'"),
        ({"weather": [0.5, 0.5]}, "expected 3 probabilities"),
        ({"wether": {"clear": 1.0}}, "unknown parameter 'wether'; this simulator has"),
    ],
)
def test_validation_messages_name_element_range_and_value(space, bad, message):
    full = {"speed": 1.0, "lanes": 1, "town": "Town01", "weather": {"clear": 1.0}}
    full.update(bad)
    with pytest.raises(ParamError) as e:
        space.validate(full)
    assert message in str(e.value)


def test_misspelt_names_get_a_suggestion(space):
    with pytest.raises(ParamError, match=r"did you mean 'weather'\?"):
        space.validate({"wether": {}})
    with pytest.raises(ParamError, match=r"did you mean 'Town02'\?"):
        space.validate({"speed": 1, "lanes": 1, "town": "town02", "weather": {"clear": 1}})


def test_missing_element_is_an_error_unless_defaults_are_asked_for(space):
    with pytest.raises(ParamError, match="parameter 'lanes' is missing"):
        space.validate({"speed": 1.0, "town": "Town01", "weather": {"clear": 1.0}})
    psi = space.validate({"speed": 1.0}, fill_defaults=True)
    assert psi["lanes"] == 2 and psi["town"] == "Town01"
    assert psi["weather"] == pytest.approx({"clear": 1 / 3, "rain": 1 / 3, "fog": 1 / 3})


def test_sample_is_valid_uniform_and_seeded(space):
    draws = [space.sample(seed=i) for i in range(2000)]
    for d in draws[:50]:
        assert space.validate(d) == d
    assert space.sample(seed=7) == space.sample(seed=7)
    speeds = np.array([d["speed"] for d in draws])
    assert speeds.mean() == pytest.approx(5.0, abs=0.25)
    assert speeds.var() == pytest.approx(100 / 12, rel=0.1)
    # Uniform on the simplex: each coordinate ~ Beta(1, 2), mean 1/3.
    fog = np.array([d["weather"]["fog"] for d in draws])
    assert fog.mean() == pytest.approx(1 / 3, abs=0.02)
    assert {d["lanes"] for d in draws} == {1, 2, 3, 4}


def test_gym_dict_round_trip(space):
    g = space.to_gym()
    assert isinstance(g, spaces.Dict)
    assert g["lanes"] == spaces.Discrete(4, start=1)
    assert g["weather"].shape == (3,)
    g.seed(0)
    for _ in range(20):
        psi = space.from_gym(g.sample())
        assert space.validate(psi) == psi
    psi = space.validate({"speed": 2.5, "lanes": 3, "town": "Town02", "weather": {"rain": 1.0}})
    value = space.to_gym_value(psi)
    assert g.contains(value)
    assert space.from_gym(value) == psi


def test_normalized_box_corners(space):
    g = space.normalized_gym()
    # speed 1, lanes 1, town 2 scores, weather 2 stick breaks
    assert g == spaces.Box(-1.0, 1.0, (6,), np.float32) and space.normalized_size == 6
    assert space.from_normalized(np.zeros(6)) == {
        "speed": 5.0,
        "lanes": 3,  # bins of width 0.5: 0 opens the third
        "town": "Town01",  # equal scores: the first choice
        "weather": pytest.approx({"clear": 1 / 3, "rain": 1 / 3, "fog": 1 / 3}),
    }
    low = space.from_normalized(-np.ones(6))
    assert low == {"speed": 0.0, "lanes": 1, "town": "Town01", "weather": {"clear": 0.0, "rain": 0.0, "fog": 1.0}}
    high = space.from_normalized(np.ones(6))
    assert high == {"speed": 10.0, "lanes": 4, "town": "Town01", "weather": {"clear": 1.0, "rain": 0.0, "fog": 0.0}}
    # 1 after -1s: that choice alone; town by the larger score; values outside [-1, 1] are clipped
    psi = space.from_normalized([3.0, -0.49, -1.0, 0.5, -1.0, 1.0])
    assert psi == {"speed": 10.0, "lanes": 2, "town": "Town02", "weather": {"clear": 0.0, "rain": 1.0, "fog": 0.0}}
    assert space.validate(psi) == psi


def test_normalized_round_trip(space):
    rng = np.random.default_rng(0)
    for _ in range(50):
        psi = space.sample(rng)
        a = space.to_normalized(psi)
        assert a.dtype == np.float32 and space.normalized_gym().contains(a)
        back = space.from_normalized(a)
        assert back["lanes"] == psi["lanes"] and back["town"] == psi["town"]
        assert back["speed"] == pytest.approx(psi["speed"], abs=1e-5)
        assert back["weather"] == pytest.approx(psi["weather"], abs=1e-5)
    # a vertex before the last choice leaves nothing to break: later entries take the uniform share
    a = space.to_normalized({"speed": 0.0, "lanes": 4, "town": "Town02", "weather": {"clear": 1.0}})
    assert a.tolist() == [-1.0, 0.75, -1.0, 1.0, 1.0, 0.0]


def test_normalized_errors(space):
    with pytest.raises(ParamError, match="expected 6 numbers, got 5"):
        space.from_normalized(np.zeros(5))
    with pytest.raises(ParamError, match=r"expected numbers in \[-1, 1\]"):
        space.from_normalized([0.0, float("nan"), 0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ParamError, match="'town'"):
        space.to_normalized({"speed": 0.0, "lanes": 4, "town": "Town03", "weather": {"clear": 1.0}})


def test_target_file_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_target_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("params: [1, 2\n")
    with pytest.raises(UserError, match="is not valid YAML"):
        load_target_file(bad)
    nop = tmp_path / "noparams.yaml"
    nop.write_text("simulator: gmm\n")
    with pytest.raises(UserError, match="expected a mapping with 'params'"):
        load_target_file(nop)
    ok = tmp_path / "ok.yaml"
    ok.write_text("simulator: gmm\nparams: {std: 1.0}\n")
    spec = load_target_file(ok)
    assert spec.simulator == "gmm" and spec.params == {"std": 1.0}
