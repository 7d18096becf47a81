"""Random-init models are reproducible: `minivlm.load(..., random_init=True, seed=N)` draws the same weights for
the same seed, and parity re-creates a random-init build's reference from the seed its manifest records, proven by
the recorded sha256 of the state (a mismatch, e.g. under another torch version, is a one-line ParityError)."""

import pytest
import torch
from typer.testing import CliRunner

import minivlm
from minivlm.cli import convert_app
from minivlm.errors import ArtifactError, ConfigError, ParityError
from minivlm.loading import DEFAULT_SEED
from minivlm.parity import reference_for
from minivlm.python_ref.families import family_of, get_config
from minivlm.python_ref.weights import state_sha256

PRESETS = ["minivlm-tiny", "efficientvlm-tiny"]


def _seeded_model(preset: str, seed: int):
    """The preset's model built straight after torch.manual_seed(seed): what `load` must reproduce."""
    cfg = get_config(preset)
    torch.manual_seed(seed)
    return family_of(cfg).model(cfg)


def _same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)  # same code, same process


@pytest.mark.parametrize("preset", PRESETS)
def test_a_seed_draws_the_weights_torch_manual_seed_draws(preset):
    model = minivlm.load(preset, random_init=True, seed=7)
    assert model.seed == 7 and model.source == "random init (seed 7)"
    assert _same_state(model.pipeline.model, _seeded_model(preset, 7))
    assert _same_state(minivlm.load(preset, random_init=True).pipeline.model, _seeded_model(preset, DEFAULT_SEED))
    assert not _same_state(model.pipeline.model, _seeded_model(preset, 8))


def test_loading_leaves_the_callers_random_state_alone():
    torch.manual_seed(5)
    want = torch.rand(4)
    torch.manual_seed(5)
    minivlm.load("minivlm-tiny", random_init=True, seed=1)
    assert torch.equal(torch.rand(4), want)


def test_the_state_digest_sees_every_value_and_only_the_values():
    a, b = _seeded_model("minivlm-tiny", 0), _seeded_model("minivlm-tiny", 0)
    assert state_sha256(a) == state_sha256(b)
    name, tensor = next(iter(b.state_dict().items()))
    with torch.no_grad():
        tensor.view(-1)[tensor.numel() // 2] += 1e-6
    assert state_sha256(a) != state_sha256(b), f"an edit of one value of {name} kept the digest"


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_a_bad_seed_is_one_line(bad):
    with pytest.raises(ConfigError, match=r"seed is .*, expected an integer"):
        minivlm.load("minivlm-tiny", random_init=True, seed=bad)


def test_a_seed_without_random_init_is_one_line():
    with pytest.raises(ConfigError, match=r"seed is 3, but a seed applies only to a random init \(--random-init\)"):
        minivlm.load("minivlm-tiny", seed=3)
    result = CliRunner().invoke(convert_app, ["--target", "executorch", "--model", "minivlm-tiny", "--seed", "3"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: seed is 3, but a seed applies only")


def _manifest(preset: str, seed, digest) -> dict:
    return {"model": {"name": preset, "preset": preset, "source": f"random init (seed {seed})",
                      "random_init": {"seed": seed, "state_sha256": digest}},
            "tools": {"torch": "2.0.0+elsewhere"}}


@pytest.mark.parametrize("preset", PRESETS)
def test_parity_recreates_a_random_init_reference_from_its_seed(preset):
    """The recorded digest is computed here from an independently seeded model, not by the code under test's
    loader; the re-created reference must have exactly that model's weights."""
    expected = _seeded_model(preset, 11)
    reference = reference_for(_manifest(preset, 11, state_sha256(expected)))
    assert reference.config.name == preset and reference.seed == 11
    assert _same_state(reference.pipeline.model, expected)


def test_a_wrong_digest_is_one_line_naming_both_torch_versions_and_a_fix():
    with pytest.raises(ParityError) as err:
        reference_for(_manifest("minivlm-tiny", 0, "ab" * 32))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"minivlm-tiny re-created from seed 0 with torch {torch.__version__} has weights of sha256 ")
    assert "not the abababababab… the build recorded (built with torch 2.0.0+elsewhere)" in message
    assert "minivlm-convert --model minivlm-tiny --random-init --seed 0" in message


@pytest.mark.parametrize("entry", [None, [], {"seed": 0}, {"seed": -1, "state_sha256": "ab"},
                                   {"seed": "0", "state_sha256": "ab"}, {"seed": 0, "state_sha256": 5}])
def test_a_malformed_random_init_entry_is_one_line(entry):
    manifest = _manifest("minivlm-tiny", 0, "ab")
    manifest["model"]["random_init"] = entry
    with pytest.raises(ArtifactError, match=r"model\.random_init is .*; expected \{\"seed\": a non-negative integer"):
        reference_for(manifest)


def test_an_explicit_model_still_wins_over_the_recorded_seed():
    reference = reference_for(_manifest("minivlm-tiny", 0, "ab" * 32), model="minivlm-demo")
    assert reference.config.name == "minivlm-demo"


def test_a_random_init_build_of_a_preset_with_bundled_weights_gets_the_random_weights():
    """`minivlm-convert --model minivlm-demo --random-init` builds untrained weights: parity must not compare that
    build with the bundled trained ones."""
    expected = _seeded_model("minivlm-demo", 2)
    reference = reference_for(_manifest("minivlm-demo", 2, state_sha256(expected)))
    assert reference.source == "random init (seed 2)"
    assert _same_state(reference.pipeline.model, expected)
