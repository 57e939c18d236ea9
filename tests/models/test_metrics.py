"""Metrics cross-checked against torchmetrics and fast_bss_eval with like-for-like definitions."""
from __future__ import annotations

import fast_bss_eval
import numpy as np
import pytest
import torch
from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio, signal_noise_ratio

from models import metrics as M


def _signals(rng: np.random.Generator, b: int = 6, t: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    ref = torch.from_numpy(rng.standard_normal((b, t)))
    est = ref + torch.from_numpy(rng.standard_normal((b, t))) * torch.linspace(0.05, 2.0, b)[:, None].double()
    return est, ref


def _adversarial(rng: np.random.Generator, t: int = 4000) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    ref = torch.from_numpy(rng.standard_normal((3, t)))
    noise = torch.from_numpy(rng.standard_normal((3, t)))
    return {
        "dc_offset": (ref + 0.1 * noise + 0.7, ref + 0.3),
        "near_silence": (1e-4 * ref + 1e-5 * noise, 1e-4 * ref),
        "scaled_copy": (0.25 * ref, ref),
        "perfect": (ref.clone(), ref),
    }


def test_sdr_matches_torchmetrics_snr(rng: np.random.Generator) -> None:
    est, ref = _signals(rng)
    cases = {"random": (est, ref), **_adversarial(rng)}
    for name, (e, r) in cases.items():
        ours = M.sdr(e, r, eps=torch.finfo(torch.float64).eps)
        theirs = signal_noise_ratio(e, r, zero_mean=False)
        assert torch.allclose(ours, theirs, atol=1e-6), name


@pytest.mark.parametrize("zero_mean", [True, False])
def test_si_sdr_matches_torchmetrics(rng: np.random.Generator, zero_mean: bool) -> None:
    est, ref = _signals(rng)
    cases = {"random": (est, ref), **_adversarial(rng)}
    for name, (e, r) in cases.items():
        if name == "perfect":
            continue  # both are eps-limited there; checked separately below
        ours = M.si_sdr(e, r, zero_mean=zero_mean, eps=torch.finfo(torch.float64).eps)
        theirs = scale_invariant_signal_distortion_ratio(e, r, zero_mean=zero_mean)
        assert torch.allclose(ours, theirs, atol=1e-6), name


def test_si_sdr_matches_fast_bss_eval_without_mean_removal(rng: np.random.Generator) -> None:
    est, ref = _signals(rng)
    cases = {"random": (est, ref), **_adversarial(rng)}
    for name, (e, r) in cases.items():
        if name in ("perfect", "scaled_copy"):
            continue  # fast_bss_eval returns +inf there (no clamp); ours is finite by design
        ours = M.si_sdr(e, r, zero_mean=False, eps=0.0)
        theirs = fast_bss_eval.si_sdr(r[:, None, :], e[:, None, :], zero_mean=False)[:, 0]
        assert torch.allclose(ours, theirs.double(), atol=1e-3), name
        # fast_bss_eval's SDR with a 1-tap filter is the optimally-scaled (scale-invariant) SDR.
        one_tap = fast_bss_eval.sdr(r[:, None, :], e[:, None, :], filter_length=1)[:, 0]
        assert torch.allclose(ours, one_tap.double(), atol=1e-3), name


def test_dc_offset_makes_zero_mean_matter(rng: np.random.Generator) -> None:
    e, r = _adversarial(rng)["dc_offset"]
    gap = (M.si_sdr(e, r, zero_mean=False) - M.si_sdr(e, r, zero_mean=True)).abs()
    assert (gap > 1.0).all()


def test_scaled_copy_and_perfect_estimates() -> None:
    ref = torch.sin(torch.linspace(0, 100, 8000, dtype=torch.float64))[None]
    assert M.si_sdr(0.25 * ref, ref, zero_mean=True).item() > 100  # scale-invariant: a scaled copy is perfect
    assert abs(M.sdr(0.5 * ref, ref).item() - 20 * np.log10(2)) < 1e-6  # |x|^2 / |0.5 x|^2 = 4 -> 6.02 dB
    perfect = M.sdr(ref, ref)
    assert torch.isfinite(perfect).all() and perfect.item() > 100


def test_silent_reference_is_finite_and_documented() -> None:
    zero = torch.zeros(2, 1000, dtype=torch.float64)
    noise = torch.randn(2, 1000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for value in (M.sdr(noise, zero), M.si_sdr(noise, zero, zero_mean=True), M.si_sdr(noise, zero, zero_mean=False)):
        assert torch.isfinite(value).all() and (value < -50).all()
    assert torch.allclose(M.sdr(zero, zero), torch.zeros(2, dtype=torch.float64))


def test_improvements_and_remix(rng: np.random.Generator) -> None:
    s1 = torch.from_numpy(rng.standard_normal((4, 2000)))
    s2 = torch.from_numpy(rng.standard_normal((4, 2000)))
    mix = s1 + s2
    # the mixture as estimate improves nothing; the true source improves a lot
    assert torch.allclose(M.sdri(mix, s1, mix), torch.zeros(4, dtype=torch.float64))
    assert (M.si_sdri(s1, s1, mix, zero_mean=True) > 80).all()
    # tracks that sum to the mixture remix perfectly, both as [B, K, T] and as a list
    assert (M.re_sdr(torch.stack([s1, s2], 1), mix) > 100).all()
    assert (M.re_sisdr([s1, s2], mix) > 100).all()
    assert (M.re_sdr([s1, 0.5 * s2], mix) < 10).all()


def test_silence_metrics(rng: np.random.Generator) -> None:
    mix = torch.from_numpy(rng.standard_normal((3, 2000)))
    leak = mix * torch.tensor([[1e-1], [1e-2], [0.0]], dtype=torch.float64)
    s = M.silence_sdr(leak, mix)
    assert abs(s[0].item() - 20) < 1e-6 and abs(s[1].item() - 40) < 1e-6 and s[2].item() > 100
    # silence-SISDR with a leak that is uncorrelated noise: projection removes nothing of it
    noise_leak = 0.01 * torch.from_numpy(rng.standard_normal((3, 2000)))
    ss = M.silence_sisdr(noise_leak, mix)
    assert torch.allclose(ss, M.silence_sdr(noise_leak, mix), atol=0.5)
    assert torch.isfinite(M.silence_sdr(torch.zeros(1, 10), torch.zeros(1, 10))).all()


def test_f1_decision() -> None:
    sr = 1000
    ref = np.zeros((1, 2000))
    ref[0, 500:1500] = 0.5
    assert M.f1_decision(ref, ref, sr).item() == pytest.approx(1.0)
    est = np.zeros_like(ref)
    est[0, 1000:1500] = 0.5  # half of the active frames found, no false alarms -> F1 = 2/3
    assert M.f1_decision(est, ref, sr).item() == pytest.approx(2 / 3, abs=0.03)
    assert M.f1_decision(np.zeros_like(ref), np.zeros_like(ref), sr).item() == 1.0
    assert M.f1_decision(np.zeros_like(ref), ref, sr).item() == 0.0


def test_span_iou_and_vad() -> None:
    assert M.span_iou([(0, 2)], [(1, 3)]) == pytest.approx(1 / 3)
    assert M.span_iou([], []) == 1.0
    assert M.span_iou([(0, 1), (0.5, 2)], [(0, 2)]) == pytest.approx(1.0)
    sr = 1600
    x = np.zeros(sr * 3)
    x[sr : 2 * sr] = 0.3 * np.sin(np.arange(sr) * 0.3)
    x[int(2.5 * sr) : int(2.6 * sr)] = 0.3  # 100 ms blip: shorter than the 250 ms minimum, dropped
    spans = M.vad_spans(x, sr)
    assert len(spans) == 1 and spans[0][0] == pytest.approx(1.0, abs=0.011) and spans[0][1] == pytest.approx(2.0, abs=0.011)
    assert M.span_iou_audio(x, [(1.0, 2.0)], sr) > 0.97


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        M.sdr(torch.zeros(2, 10), torch.zeros(2, 11))
