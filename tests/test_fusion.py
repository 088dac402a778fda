"""LatentFusion: the maths of the merge and loading the official ``vae/merge_model.pth`` format."""

from __future__ import annotations

import pickle

import pytest
import torch

from lediff_backend.errors import MissingWeights
from lediff_backend.models.fusion import FusionStateError, LatentFusion
from lediff_backend.weights import load_fusion


def _bracket(n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 4, 5, 7, generator=generator) * (i + 1) for i in range(n)]


def _random_fusion(seed: int = 1) -> LatentFusion:
    fusion = LatentFusion()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        fusion.weight_conv.weight.copy_(torch.randn(4, 1, 1, 1, generator=generator))
        fusion.weight_conv.bias.copy_(torch.randn(4, generator=generator))
    return fusion


class TestMaths:
    @pytest.mark.parametrize("count", [2, 3, 5])
    def test_weights_sum_to_one_per_pixel_and_channel(self, count):
        weights = _random_fusion().weights(*_bracket(count))
        assert weights.shape == (2, 4, count, 5, 7)
        assert (weights > 0).all()
        torch.testing.assert_close(weights.sum(dim=2), torch.ones(2, 4, 5, 7), atol=1e-6, rtol=0)

    def test_official_initialisation_gives_the_bracket_mean(self):
        bracket = _bracket()
        fusion = LatentFusion()
        assert fusion.weight_conv.weight.abs().max() == 0
        torch.testing.assert_close(fusion.weight_conv.bias, torch.full((4,), 1 / 3))
        torch.testing.assert_close(fusion(*bracket), sum(bracket) / 3, atol=1e-6, rtol=0)

    def test_merge_is_the_softmax_weighted_sum_of_a_per_channel_affine_logit(self):
        fusion = _random_fusion()
        bracket = _bracket()
        w = fusion.weight_conv.weight.view(1, 4, 1, 1)
        b = fusion.weight_conv.bias.view(1, 4, 1, 1)
        logits = torch.stack([x * w + b for x in bracket])
        expected = (torch.softmax(logits, dim=0) * torch.stack(bracket)).sum(dim=0)
        torch.testing.assert_close(fusion(*bracket), expected, atol=1e-5, rtol=1e-5)

    def test_equal_latents_merge_to_themselves(self):
        x = _bracket(1)[0]
        torch.testing.assert_close(_random_fusion()(x, x, x), x, atol=1e-5, rtol=1e-5)

    def test_one_latent_is_not_a_bracket(self):
        with pytest.raises(ValueError, match="at least two"):
            LatentFusion()(_bracket(1)[0])


def _official_state(weight_shape=(4, 1, 1, 1)) -> dict[str, torch.Tensor]:
    return {"weight_conv.weight": torch.full(weight_shape, 0.25), "weight_conv.bias": torch.arange(4.0)}


class TestOfficialFormat:
    def test_strict_load_of_the_official_keys(self):
        fusion = LatentFusion()
        fusion.load_official_state_dict(_official_state())
        torch.testing.assert_close(fusion.weight_conv.bias, torch.arange(4.0))

    @pytest.mark.parametrize(
        "state, key",
        [
            ({"weight_conv.weight": torch.zeros(4, 1, 1, 1)}, "weight_conv.bias"),
            ({**_official_state(), "module.extra": torch.zeros(1)}, "module.extra"),
            (_official_state(weight_shape=(4, 4, 1, 1)), "weight_conv.weight"),
        ],
        ids=["missing", "unexpected", "wrong-shape"],
    )
    def test_mismatch_names_the_key(self, state, key):
        with pytest.raises(FusionStateError, match=key.replace(".", r"\.")):
            LatentFusion().load_official_state_dict(state)

    def test_load_fusion_reads_vae_merge_model_pth(self, tmp_path):
        (tmp_path / "vae").mkdir()
        torch.save(_official_state(), tmp_path / "vae" / "merge_model.pth")
        torch.testing.assert_close(load_fusion(tmp_path).weight_conv.weight, torch.full((4, 1, 1, 1), 0.25))

    def test_official_fallback_location(self, tmp_path):
        (tmp_path / "merge_model").mkdir()
        torch.save(_official_state(), tmp_path / "merge_model" / "merge_model.pth")
        assert load_fusion(tmp_path).weight_conv.bias[3] == 3

    def test_safetensors_first(self, tmp_path):
        from safetensors.torch import save_file

        (tmp_path / "vae").mkdir()
        torch.save(_official_state(), tmp_path / "vae" / "merge_model.pth")
        state = _official_state()
        state["weight_conv.bias"] = torch.full((4,), 7.0)
        save_file(state, tmp_path / "vae" / "merge_model.safetensors")
        assert load_fusion(tmp_path).weight_conv.bias[0] == 7

    def test_wrong_checkpoint_is_missing_weights_naming_file_and_key(self, tmp_path):
        (tmp_path / "vae").mkdir()
        torch.save({"conv.weight": torch.zeros(4, 1, 1, 1)}, tmp_path / "vae" / "merge_model.pth")
        with pytest.raises(MissingWeights, match=r"merge_model\.pth.*conv\.weight"):
            load_fusion(tmp_path)

    def test_pickled_objects_are_refused_not_executed(self, tmp_path):
        (tmp_path / "vae").mkdir()
        (tmp_path / "vae" / "merge_model.pth").write_bytes(pickle.dumps({"weight_conv.weight": print}, protocol=2))
        with pytest.raises(MissingWeights, match="cannot be read as a checkpoint"):
            load_fusion(tmp_path)

    def test_missing_file(self, tmp_path):
        with pytest.raises(MissingWeights, match=r"vae/merge_model\.pth: missing"):
            load_fusion(tmp_path)
